"""POST /upload with the shipped ClamAV rule against a real clamd (tests/clamd.py): the
whole file is streamed to the validator while it is stored, and the verdict comes
before anything is committed. Local disk and S3 (moto's server)."""
from __future__ import annotations

import hashlib
import io
import logging
import os
import time

import pytest

from tests.clamd import EICAR, EICAR_NAME, MARKER, MARKER_NAME
from tests.conftest import free_port
from validator_service.server import create_plugins

MiB = 1024 * 1024
LINE = b"plain words, nothing to see here\n"


def text(size: int) -> bytes:
    return (LINE * (size // len(LINE) + 1))[:size]


def stored_files(app) -> list[str]:
    root = os.path.join(app.config["DATA_DIR"], "files")
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def post(client, name: str, data: bytes):
    return client.post("/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def wait_for(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"not {what} within {timeout:.0f} s"
        time.sleep(0.1)
    return value


def scanning_validator(start_validator, address: str, **env):
    return start_validator(pm=create_plugins(env={"CLAMD_ADDRESS": address, **env}))


@pytest.fixture
def scanned(make_app, start_validator, clamd):
    """An app whose validator runs the ClamAV rule on the session's clamd."""
    return make_app(VALIDATOR_ADDR=scanning_validator(start_validator, clamd.unix).address)


def assert_nothing_kept(app, client):
    assert stored_files(app) == []
    assert client.get("/files").get_json()["files"] == []


def test_a_hit_after_the_first_mib_is_422_malware_and_nothing_is_stored(scanned):
    client = scanned.test_client()
    response = post(client, "notes.txt", text(3 * MiB // 2) + MARKER + text(MiB))
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "malware"
    assert MARKER_NAME in body["error"]
    assert body["filename"] == "notes.txt"
    assert_nothing_kept(scanned, client)


def test_a_small_file_in_one_piece_is_scanned_whole(scanned):
    client = scanned.test_client()
    response = post(client, "eicar.txt", EICAR)
    assert response.status_code == 422 and response.get_json()["code"] == "malware"
    assert EICAR_NAME in response.get_json()["error"]
    assert_nothing_kept(scanned, client)


def test_a_clean_file_is_stored_with_its_sha256_after_every_byte_was_scanned(scanned):
    client = scanned.test_client()
    data = text(3 * MiB + 12345)
    response = post(client, "notes.txt", data)
    assert response.status_code == 201, response.get_json()
    record = response.get_json()
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
    assert client.get(record["download_url"]).data == data
    audit = client.get(f"/files/{record['id']}/audit").get_json()
    assert audit["bytes_read"] == len(data)
    assert {"rule": "clamav", "outcome": "pass", "code": ""} in audit["decisions"]


def test_without_a_whole_file_rule_only_the_head_goes_to_the_validator(app):
    """Today's behaviour is kept: no whole-file rule, no whole file on the wire."""
    client = app.test_client()
    data = text(3 * MiB)
    record = post(client, "notes.txt", data).get_json()
    assert client.get("/policy").get_json()["whole_file"] is False
    assert client.get(f"/files/{record['id']}/audit").get_json()["bytes_read"] <= MiB


def test_the_policy_says_when_a_rule_reads_every_byte(scanned):
    assert scanned.test_client().get("/policy").get_json()["whole_file"] is True


class KillsClamd(io.RawIOBase):
    """A request body that kills clamd once `after` bytes of it have been read."""

    def __init__(self, body: bytes, after: int, clamd):
        self.body, self.after, self.clamd, self.at = body, after, clamd, 0

    def readable(self):
        return True

    def seekable(self):
        return True  # werkzeug's test client measures the body by seeking

    def seek(self, offset, whence=io.SEEK_SET):
        self.at = {io.SEEK_SET: 0, io.SEEK_CUR: self.at, io.SEEK_END: len(self.body)}[whence] + offset
        return self.at

    def tell(self):
        return self.at

    def readinto(self, buffer):
        if self.at >= self.after and self.clamd.proc.poll() is None:
            self.clamd.kill()
        piece = self.body[self.at:self.at + min(len(buffer), 256 * 1024)]
        buffer[:len(piece)] = piece
        self.at += len(piece)
        return len(piece)


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "clamd-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: text/plain\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_clamd_killed_mid_upload_is_503_and_nothing_is_stored(make_app, start_validator, own_clamd):
    clamd = own_clamd()
    app = make_app(VALIDATOR_ADDR=scanning_validator(start_validator, clamd.tcp).address)
    client = app.test_client()
    body, content_type = multipart("notes.txt", text(8 * MiB))
    response = client.post("/upload", input_stream=KillsClamd(body, 2 * MiB, clamd),
                           content_type=content_type, content_length=len(body))
    assert clamd.proc.poll() is not None, "clamd was not killed mid-upload"
    assert response.status_code == 503, response.get_json()
    assert "nothing was stored" in response.get_json()["error"]
    assert_nothing_kept(app, client)


def test_clamd_unreachable_is_503_and_nothing_is_stored(make_app, start_validator):
    app = make_app(VALIDATOR_ADDR=scanning_validator(start_validator, f"tcp://127.0.0.1:{free_port()}").address)
    client = app.test_client()
    for data in (b"small and whole\n", text(2 * MiB)):
        response = post(client, "notes.txt", data)
        assert response.status_code == 503
    assert_nothing_kept(app, client)


def test_readyz_is_503_naming_the_validator_and_clamd_while_clamd_is_down(make_app, start_validator, own_clamd):
    """The validator stays up (its server's "" SERVING) but reports its service NOT_SERVING
    while clamd does not answer: every upload would get 503, so the gateway is not ready,
    and /readyz says which part is down."""
    clamd = own_clamd()
    client = make_app(VALIDATOR_ADDR=scanning_validator(start_validator, clamd.unix).address).test_client()
    wait_for(lambda: client.get("/readyz").status_code == 200, "ready with clamd up")
    assert client.get("/readyz").get_json()["reasons"] == {}

    clamd.kill()
    ready = wait_for(lambda: (r := client.get("/readyz")).status_code == 503 and r, "503 with clamd down")
    body = ready.get_json()
    assert body["ready"] is False
    assert body["services"] == {"validator": "NOT_SERVING", "thumbnail": "SERVING"}
    assert set(body["reasons"]) == {"validator"}
    assert "upload.v1.Validator NOT_SERVING" in body["reasons"]["validator"]
    assert "clamd does not answer" in body["reasons"]["validator"]
    assert 'upload_service_up{service="validator"} 0.0' in client.get("/metrics").get_data(as_text=True)

    clamd.start()
    wait_for(lambda: client.get("/readyz").status_code == 200, "ready again once clamd answers")


def test_readyz_stays_200_with_clamd_down_when_failing_open(make_app, start_validator, own_clamd):
    clamd = own_clamd()
    running = scanning_validator(start_validator, clamd.unix, CLAMAV_FAIL_OPEN="on")
    client = make_app(VALIDATOR_ADDR=running.address).test_client()
    clamd.kill()
    wait_for(lambda: running.server.clamd_watch.up is False, "clamd seen down")
    assert client.get("/readyz").status_code == 200


def test_fail_open_stores_the_file_and_logs_it(make_app, start_validator, caplog):
    running = scanning_validator(start_validator, f"tcp://127.0.0.1:{free_port()}", CLAMAV_FAIL_OPEN="1")
    client = make_app(VALIDATOR_ADDR=running.address).test_client()
    data = text(2 * MiB)
    with caplog.at_level(logging.WARNING, logger="upload.validator.clamav"):
        response = post(client, "notes.txt", data)
    assert response.status_code == 201
    assert response.get_json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert any("let through unscanned" in r.getMessage() for r in caplog.records)


def test_on_s3_a_hit_leaves_nothing_in_the_bucket_and_a_clean_file_is_stored(make_app, start_validator, clamd,
                                                                            s3_bucket):
    app = make_app(VALIDATOR_ADDR=scanning_validator(start_validator, clamd.tcp).address, **s3_bucket.settings())
    client = app.test_client()
    # 9 MiB: one part sent to S3 before the hit near the end.
    response = post(client, "notes.txt", text(9 * MiB) + MARKER)
    assert response.status_code == 422 and response.get_json()["code"] == "malware"
    assert s3_bucket.keys() == [] and s3_bucket.uploads() == []
    assert client.get("/files").get_json()["files"] == []
    data = text(9 * MiB)
    record = post(client, "notes.txt", data).get_json()
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert s3_bucket.keys() == [f"files/{record['filename']}"]


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, MiB, MiB + 5, 3 * 2**21])
def test_chunks_framed_by_hand_are_what_protobuf_sends(size):
    from gateway.ingest.validation_stream import chunk_message
    from protos.upload.v1 import validator_pb2

    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    assert chunk_message(memoryview(data)) == validator_pb2.ValidateRequest(chunk=data).SerializeToString()

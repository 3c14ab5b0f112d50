"""tus uploads with a whole-file rule (the shipped ClamAV rule on a real clamd, tests/clamd.py):
each PATCH's bytes are fed to the upload's Validate stream as they arrive, the PATCH that
brings the last byte gets the verdict before anything is committed, and nothing refused is
ever stored, listed or served. tuspy (the real client) against real gateway processes;
S3 (moto's server) and the fallbacks through the app itself."""
from __future__ import annotations

import base64
import io
import time

import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusUploadFailed

from tests.clamd import EICAR, EICAR_NAME, MARKER, MARKER_NAME
from tests.plugin_modules.counts_every_byte import CountingRule, CountsEveryByte
from tests.samples import MZ_HEADER
from tests.tus.conftest import MiB, Tus, leftover_files, sha256, stop_gateway, text_bytes
from validator_service import metrics as validator_metrics
from validator_service.server import create_plugins

TXT = {"filename": "notes.txt", "filetype": "text/plain"}
TUS = {"Tus-Resumable": "1.0.0"}


def validator_calls(method: str) -> float:
    """Calls of ``method`` the in-process validators have answered OK (with a verdict) so far;
    a stream given up is counted CANCELLED, whenever the server notices."""
    total = 0.0
    for family in validator_metrics.REGISTRY.collect():
        for sample in family.samples:
            if (sample.name == "upload_grpc_server_calls_total" and sample.labels["method"].endswith("/" + method)
                    and sample.labels["code"] == "OK"):
                total += sample.value
    return total


@pytest.fixture
def scanning(start_validator, clamd):
    """A validator running the ClamAV rule on the session's clamd."""
    return start_validator(pm=create_plugins(env={"CLAMD_ADDRESS": clamd.unix}))


@pytest.fixture
def scanned_gateway(gateways, scanning, tmp_path):
    return gateways(tmp_path / "data", validator_addr=scanning.address)


def test_tuspy_upload_with_a_hit_after_the_first_mib_is_422_and_leaves_nothing(scanned_gateway):
    data = text_bytes(3 * MiB, seed=1) + MARKER + text_bytes(2 * MiB, seed=2)
    uploader = tus_client.TusClient(scanned_gateway.url + "/tus/").uploader(
        file_stream=io.BytesIO(data), chunk_size=MiB, metadata=TXT)
    with pytest.raises(TusUploadFailed) as failure:
        uploader.upload()
    assert failure.value.status_code == 422
    assert b'"code":"malware"' in failure.value.response_content.replace(b" ", b"")
    assert MARKER_NAME.encode() in failure.value.response_content
    tus = Tus(scanned_gateway.url)
    try:
        assert tus.head(uploader.url).status_code == 410
        assert tus.files() == []
    finally:
        tus.close()
    assert leftover_files(scanned_gateway.data_dir) == []


def test_tuspy_clean_upload_is_stored_from_one_stream_fed_by_every_patch(scanned_gateway):
    data = text_bytes(6 * MiB + 777, seed=3)
    validates, checks = validator_calls("Validate"), validator_calls("Check")
    uploader = tus_client.TusClient(scanned_gateway.url + "/tus/").uploader(
        file_stream=io.BytesIO(data), chunk_size=MiB, metadata=TXT)
    uploader.upload()
    file_id = uploader.request.response_headers["upload-file-id"]
    tus = Tus(scanned_gateway.url)
    try:
        record = tus.record(file_id).json()
        assert record["sha256"] == sha256(data) and record["size"] == len(data)
        audit = tus.http.get(f"{scanned_gateway.url}/files/{file_id}/audit", timeout=10).json()
        assert audit["bytes_read"] == len(data)
        assert {"rule": "clamav", "outcome": "pass", "code": ""} in audit["decisions"]
    finally:
        tus.close()
    # Seven PATCHes, one Validate stream: nothing was read back at the end (the head alone
    # was also checked at once, at most twice, for an early refusal).
    assert validator_calls("Validate") - validates == 1
    assert validator_calls("Check") - checks <= 2


def test_a_stream_lost_with_a_restart_is_judged_whole_when_the_upload_is_finished(gateways, scanning, tmp_path):
    data_dir = tmp_path / "data"
    data = MARKER + text_bytes(4 * MiB, seed=4)
    first = gateways(data_dir, validator_addr=scanning.address)
    tus = Tus(first.url)
    url = tus.new(len(data), TXT)
    path = url[len(tus.base):]
    tus.send(url, data[:2 * MiB])
    tus.close()
    stop_gateway(first)  # its stream, fed the marker, goes with it

    second = gateways(data_dir, validator_addr=scanning.address)
    tus = Tus(second.url)
    try:
        url = tus.base + path
        tus.send(url, data[:3 * MiB], start=2 * MiB)  # no stream now: nothing is scanned yet
        last = tus.patch(url, 3 * MiB, data[3 * MiB:])  # finished: the file is sent whole, once
        assert last.status_code == 422, last.text
        assert last.json()["code"] == "malware" and MARKER_NAME in last.json()["error"]
        assert tus.head(url).status_code == 410
        assert tus.files() == []
    finally:
        tus.close()
    assert leftover_files(data_dir) == []


# --- through the app itself (local and S3) ---

def meta(name: str) -> str:
    return "filename " + base64.b64encode(name.encode()).decode()


def create(client, length: int, name: str = "notes.txt") -> str:
    response = client.post("/tus/", headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": meta(name)})
    assert response.status_code == 201, response.get_json()
    return response.headers["Location"]


def patch(client, url: str, offset: int, data: bytes):
    return client.patch(url, data=data, headers={**TUS, "Upload-Offset": str(offset),
                                                 "Content-Type": "application/offset+octet-stream"})


def send(client, url: str, data: bytes, start: int, end: int, chunk: int = 2 * MiB):
    response = None
    for offset in range(start, end, chunk):
        response = patch(client, url, offset, data[offset:min(offset + chunk, end)])
        assert response.status_code == 204, response.get_json()
    return response


def test_a_head_refusal_still_ends_the_upload_at_its_first_patch(make_app, scanning):
    client = make_app(VALIDATOR_ADDR=scanning.address).test_client()
    data = MZ_HEADER + bytes(3 * MiB)
    url = create(client, len(data), "photo.jpg")
    response = patch(client, url, 0, data[:2 * MiB])
    assert response.status_code == 415 and response.get_json()["code"] == "executable_content"
    assert client.head(url, headers=TUS).status_code == 410


def test_eicar_created_with_its_bytes_is_refused(make_app, scanning):
    client = make_app(VALIDATOR_ADDR=scanning.address).test_client()
    response = client.post("/tus/", data=EICAR, headers={
        **TUS, "Upload-Length": str(len(EICAR)), "Upload-Metadata": meta("eicar.txt"),
        "Content-Type": "application/offset+octet-stream"})
    assert response.status_code == 422 and EICAR_NAME in response.get_json()["error"]
    assert client.get("/files").get_json()["files"] == []


@pytest.fixture
def s3_scanned(make_app, scanning, s3_bucket):
    return make_app(VALIDATOR_ADDR=scanning.address, **s3_bucket.settings())


def test_on_s3_a_hit_in_a_stream_kept_across_patches_leaves_nothing_in_the_bucket(s3_scanned, s3_bucket):
    client = s3_scanned.test_client()
    data = text_bytes(MiB, seed=5) + MARKER + text_bytes(10 * MiB, seed=6)  # more than one 8 MiB part
    url = create(client, len(data))
    send(client, url, data, 0, 10 * MiB)
    last = patch(client, url, 10 * MiB, data[10 * MiB:])
    assert last.status_code == 422 and last.get_json()["code"] == "malware"
    # The multipart upload was never completed: no object ever appeared.
    assert s3_bucket.keys() == [] and s3_bucket.uploads() == []
    assert client.get("/files").get_json()["files"] == []


@pytest.mark.parametrize("infected", [True, False])
@pytest.mark.parametrize("lost_at", [2 * MiB, 10 * MiB], ids=["within the first part", "past it"])
def test_on_s3_a_stream_lost_is_judged_whole_at_the_end(s3_scanned, s3_bucket, infected, lost_at):
    client = s3_scanned.test_client()
    data = text_bytes(MiB, seed=7) + (MARKER if infected else b"") + text_bytes(11 * MiB, seed=8)
    url = create(client, len(data))
    send(client, url, data, 0, lost_at)
    s3_scanned.extensions["tus_streams"].close()  # as if the next PATCH went to another replica
    validates = validator_calls("Validate")
    send(client, url, data, lost_at, 10 * MiB)
    last = patch(client, url, 10 * MiB, data[10 * MiB:])
    # The finished object is sent whole (the parts cannot be read back from S3 mid-upload).
    assert validator_calls("Validate") - validates == 1
    if infected:
        assert last.status_code == 422 and last.get_json()["code"] == "malware"
        assert s3_bucket.keys() == [] and s3_bucket.uploads() == []
        assert client.get("/files").get_json()["files"] == []
    else:
        assert last.status_code == 204, last.get_json()
        record = client.get(f"/files/{last.headers['Upload-File-Id']}").get_json()
        assert record["sha256"] == sha256(data)
        assert s3_bucket.keys() == [f"files/{record['filename']}"]


def test_each_patch_feeds_the_kept_stream_and_the_file_is_never_read_back(make_app, scanning, monkeypatch):
    app = make_app(VALIDATOR_ADDR=scanning.address)
    client = app.test_client()

    def read_back(*args, **kwargs):
        raise AssertionError("the finished upload was sent to the validator again")

    monkeypatch.setattr(app.extensions["services"], "validate_stored", read_back)
    kept = app.extensions["tus_streams"]
    for infected in (False, True):
        data = text_bytes(3 * MiB, seed=10) + (MARKER if infected else b"") + text_bytes(MiB + 1000, seed=11)
        url = create(client, len(data))
        upload_id = url.rsplit("/", 1)[1]
        for offset in range(0, 4 * MiB, MiB):
            assert patch(client, url, offset, data[offset:offset + MiB]).status_code == 204
            assert kept._streams[upload_id][0] == offset + MiB  # one stream, fed this far
        last = patch(client, url, 4 * MiB, data[4 * MiB:])
        assert upload_id not in kept._streams
        if infected:
            assert last.status_code == 422 and MARKER_NAME in last.get_json()["error"]
        else:
            assert last.status_code == 204
            assert client.get(f"/files/{last.headers['Upload-File-Id']}").get_json()["sha256"] == sha256(data)


def test_a_stream_left_idle_between_patches_is_given_up_and_the_file_judged_whole_at_the_end(
        make_app, scanning, monkeypatch):
    """A paused upload does not hold a validator slot (and a clamd connection) for long: its
    stream is given up, the later PATCHes feed none, and the finished file is sent whole."""
    from gateway.ingest import validation_stream
    monkeypatch.setattr(validation_stream, "KEEPALIVE", 0.1)
    app = make_app(VALIDATOR_ADDR=scanning.address)
    app.extensions["tus_streams"]._keep_idle = 0.3
    client = app.test_client()
    data = MARKER + text_bytes(3 * MiB, seed=12)
    url = create(client, len(data))
    upload_id = url.rsplit("/", 1)[1]
    assert patch(client, url, 0, data[:MiB]).status_code == 204
    stream = app.extensions["tus_streams"]._streams[upload_id][1]
    deadline = time.monotonic() + 10
    while stream.usable and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stream.usable, "the idle stream was not given up"
    assert patch(client, url, MiB, data[MiB:2 * MiB]).status_code == 204
    assert upload_id not in app.extensions["tus_streams"]._streams
    validates = validator_calls("Validate")
    last = patch(client, url, 2 * MiB, data[2 * MiB:])
    assert last.status_code == 422 and MARKER_NAME in last.get_json()["error"]
    assert validator_calls("Validate") - validates == 1


def test_tiny_patches_with_a_wrong_checksum_do_not_make_the_stored_bytes_scanned_again(make_app, start_validator):
    """A PATCH with a wrong checksum loses the upload's stream (it was fed bytes that are not
    kept). Feeding a new stream what is stored, at each PATCH, let a client make the gateway
    read and scan the stored bytes again per 1-byte request: here 20 x 4 MiB for 20 bytes."""
    running = start_validator(pm=create_plugins(env={}, extra_plugins=[CountingRule()]))
    client = make_app(VALIDATOR_ADDR=running.address).test_client()
    data = text_bytes(6 * MiB, seed=14)
    url = create(client, len(data))
    send(client, url, data, 0, 4 * MiB)
    before = CountsEveryByte.seen
    wrong = "sha1 " + base64.b64encode(bytes(20)).decode()
    for _ in range(20):
        response = client.patch(url, data=data[4 * MiB:4 * MiB + 1], headers={
            **TUS, "Upload-Offset": str(4 * MiB), "Upload-Checksum": wrong,
            "Content-Type": "application/offset+octet-stream"})
        assert response.status_code == 460
    assert CountsEveryByte.seen - before <= 1  # the first bad byte reached the kept stream
    last = patch(client, url, 4 * MiB, data[4 * MiB:])
    assert last.status_code == 204, last.get_json()
    # Judged whole, once, when finished.
    assert CountsEveryByte.seen - before <= 1 + len(data)
    record = client.get(f"/files/{last.headers['Upload-File-Id']}").get_json()
    assert record["sha256"] == sha256(data)


def test_clamd_killed_mid_upload_the_last_patch_is_503_and_a_head_finishes_it_later(make_app, start_validator,
                                                                                    own_clamd):
    clamd = own_clamd()
    running = start_validator(pm=create_plugins(env={"CLAMD_ADDRESS": clamd.unix}))
    app = make_app(VALIDATOR_ADDR=running.address)
    client = app.test_client()
    data = text_bytes(4 * MiB, seed=13)
    url = create(client, len(data))
    send(client, url, data, 0, 2 * MiB)
    clamd.kill()
    # The PATCHes go on storing (the stream is lost); the last one cannot get a verdict.
    assert patch(client, url, 2 * MiB, data[2 * MiB:3 * MiB]).status_code == 204
    last = patch(client, url, 3 * MiB, data[3 * MiB:])
    assert last.status_code == 503, last.get_json()
    assert "nothing was stored" in last.get_json()["error"]
    assert client.get("/files").get_json()["files"] == []
    head = client.head(url, headers=TUS)
    assert head.status_code == 503  # still no clamd: still nothing stored
    clamd.start()  # back, on the same socket
    head = client.head(url, headers=TUS)
    assert head.status_code == 200 and head.headers.get("Upload-File-Id"), head.get_json()
    record = client.get(f"/files/{head.headers['Upload-File-Id']}").get_json()
    assert record["sha256"] == sha256(data)


def test_a_refusal_met_by_the_head_that_finishes_an_upload_is_recorded(make_app, start_validator, own_clamd):
    clamd = own_clamd()
    running = start_validator(pm=create_plugins(env={"CLAMD_ADDRESS": clamd.unix}))
    app = make_app(VALIDATOR_ADDR=running.address)
    client = app.test_client()
    data = text_bytes(2 * MiB, seed=15) + MARKER
    url = create(client, len(data), "late.txt")
    send(client, url, data, 0, MiB)
    clamd.kill()
    assert patch(client, url, MiB, data[MiB:]).status_code == 503  # no verdict: the bytes stay
    clamd.start()
    assert client.head(url, headers=TUS).status_code == 410  # finished by the HEAD: refused
    [refusal] = client.get("/refusals").get_json()["refusals"]
    assert (refusal["original_name"], refusal["code"], refusal["rule"], refusal["via"]) == \
        ("late.txt", "malware", "clamav", "tus")

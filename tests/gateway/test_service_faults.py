"""The gRPC services die and come back while the gateway keeps serving.

The gateway is a real `python -m gateway` process; the validator or the
thumbnail service is a real process too, killed with SIGKILL and started again
on the same port. Then the gateway's own side: every call has a deadline, calls
that are safe to repeat are retried on UNAVAILABLE, and a Validate stream never is.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from concurrent import futures

import grpc
import pytest
import requests
from PIL import Image

from gateway.ingest import calls as calls_module
from gateway.ingest.calls import call_with_retry
from protos.errors import InvalidInput, Unavailable
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc, validator_pb2, validator_pb2_grpc
from tests.conftest import free_port, start_gateway_process
from tests.images import encode
from tests.processes import service_process

JPEG = encode(Image.effect_noise((320, 240), 40).convert("RGB"), "JPEG")


def post(url: str, name: str, data: bytes) -> requests.Response:
    return requests.post(f"{url}/upload", files={"file": (name, data)}, timeout=30)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not met within {timeout}s")


def stored_files(data_dir) -> list[str]:
    return sorted(f for _, _, names in os.walk(data_dir / "files") for f in names)


def stop(gateway) -> None:
    gateway.proc.terminate()
    gateway.proc.wait(timeout=15)


class Uploader(threading.Thread):
    """Sends one small text file after another and keeps every answer."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.results: list[tuple[float, bytes, int, dict]] = []
        self.halt = threading.Event()

    def run(self):
        n = 0
        while not self.halt.is_set():
            n += 1
            data = f"upload {n} {os.urandom(8).hex()}\n".encode() * 50
            response = post(self.url, f"note{n}.txt", data)
            assert response.headers["Content-Type"].startswith("application/json"), response.text
            self.results.append((time.monotonic(), data, response.status_code, response.json()))
            time.sleep(0.05)

    def count(self, status: int, since: float = 0.0) -> int:
        return sum(1 for at, _, code, _ in list(self.results) if code == status and at >= since)


def test_validator_killed_and_restarted_during_a_stream_of_uploads(tmp_path, thumbnailer):
    port = free_port()
    address = f"127.0.0.1:{port}"
    with service_process("validator_service", "VALIDATOR_ADDR", port) as validator:
        gateway = start_gateway_process(tmp_path / "data", address, thumbnailer.address)
        uploader = Uploader(gateway.url)
        try:
            uploader.start()
            wait_for(lambda: uploader.count(201) >= 3, what="uploads before the kill")
            validator.kill()  # SIGKILL: no goodbye to the gateway's channel
            validator.wait()
            killed_at = time.monotonic()
            wait_for(lambda: uploader.count(503, killed_at) >= 5, what="503s while the validator is down")
            # Down for good: a 503 every time, and the gateway says why.
            down_at = time.monotonic()
            wait_for(lambda: uploader.count(503, down_at) >= 3, what="more 503s")
            assert uploader.count(201, down_at) == 0
            ready = requests.get(f"{gateway.url}/readyz", timeout=10)
            assert ready.status_code == 503 and ready.json()["services"]["validator"] == "UNREACHABLE"

            with service_process("validator_service", "VALIDATOR_ADDR", port):
                back_at = time.monotonic()
                wait_for(lambda: uploader.count(201, back_at) >= 3, timeout=15, what="uploads after the restart")
                recovered_in = min(at for at, _, code, _ in uploader.results if code == 201 and at >= back_at) - back_at
                uploader.halt.set()
                uploader.join(timeout=30)
                assert requests.get(f"{gateway.url}/readyz", timeout=10).status_code == 200
        finally:
            uploader.halt.set()
            uploader.join(timeout=30)
            try:
                results = list(uploader.results)
                assert {code for _, _, code, _ in results} <= {201, 503}, [r[2:] for r in results]
                for _, _, code, body in results:
                    if code == 503:
                        assert "validation service" in body["error"] and "try again" in body["error"]
                accepted = [(data, body) for _, data, code, body in results if code == 201]
                listed = requests.get(f"{gateway.url}/files?limit=200", timeout=10).json()["files"]
                # Exactly the accepted uploads are kept: no record, byte or temp file of a refused one.
                assert sorted(r["id"] for r in listed) == sorted(body["id"] for _, body in accepted)
                assert stored_files(gateway.data_dir) == sorted(body["filename"] for _, body in accepted)
                for data, body in accepted:
                    download = requests.get(gateway.url + body["download_url"], timeout=10)
                    assert download.status_code == 200
                    assert hashlib.sha256(download.content).hexdigest() == hashlib.sha256(data).hexdigest()
            finally:
                stop(gateway)
    assert recovered_in < 5, f"the first upload after the restart succeeded {recovered_in:.1f}s later"


def test_thumbnail_service_killed_and_restarted_thumbnails_are_filled_in(tmp_path, validator):
    port = free_port()
    with service_process("thumbnail_service", "THUMBNAIL_ADDR", port) as thumbnail:
        # IMAGE_METADATA at its default: these JPEGs carry no metadata, so they are stored while
        # the service is down (one that does fails closed: tests/gateway/test_image_metadata.py).
        gateway = start_gateway_process(tmp_path / "data", validator.address, f"127.0.0.1:{port}")
        try:
            first = post(gateway.url, "before.jpg", JPEG)
            assert first.status_code == 201 and first.json()["thumbnail_url"]
            thumbnail.kill()
            thumbnail.wait()
            down = [post(gateway.url, f"while-down-{n}.jpg", JPEG) for n in range(3)]
            assert [r.status_code for r in down] == [201, 201, 201]
            assert all(r.json()["thumbnail_url"] is None for r in down)
            ids = [r.json()["id"] for r in down]
            for r in down:
                assert requests.get(gateway.url + r.json()["download_url"], timeout=10).content == JPEG
            metrics = requests.get(f"{gateway.url}/metrics", timeout=10).text
            assert "upload_thumbnails_pending 3.0" in metrics

            with service_process("thumbnail_service", "THUMBNAIL_ADDR", port):
                def filled():
                    records = [requests.get(f"{gateway.url}/files/{i}", timeout=10).json() for i in ids]
                    return records if all(r["thumbnail_url"] for r in records) else None

                records = wait_for(filled, timeout=20, what="thumbnails filled in")
                for rec in records:
                    thumb = requests.get(gateway.url + rec["thumbnail_url"], timeout=10)
                    assert thumb.status_code == 200
                    assert Image.open(io.BytesIO(thumb.content)).size == (200, 150)
                after = post(gateway.url, "after.jpg", JPEG)
                assert after.status_code == 201 and after.json()["thumbnail_url"]
        finally:
            stop(gateway)


# --- deadlines ---


class DeadlineRecorder(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    def __init__(self):
        self.calls: list[tuple[str, float | None]] = []

    def intercept_unary_unary(self, continuation, details, request):
        self.calls.append((details.method, details.timeout))
        return continuation(details, request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        self.calls.append((details.method, details.timeout))
        return continuation(details, request_iterator)


def test_every_grpc_call_the_gateway_makes_has_a_deadline(make_app):
    app = make_app()
    services = app.extensions["services"]
    recorder = DeadlineRecorder()
    services.channels = {name: grpc.intercept_channel(channel, recorder)
                         for name, channel in services.channels.items()}
    services.validator = validator_pb2_grpc.ValidatorStub(services.channels["validator"])
    services.thumbnailer = thumbnail_pb2_grpc.ThumbnailStub(services.channels["thumbnail"])
    client = app.test_client()

    assert client.get("/policy").status_code == 200
    assert client.post("/upload", data={"file": (io.BytesIO(JPEG), "a.jpg")}).status_code == 201
    assert client.post("/upload", data={"file": (io.BytesIO(b"words\n" * 100), "a.txt")}).status_code == 201
    # A file that arrives in several pieces is judged by a stream (one piece: a single Check call).
    big = b"words\n" * (512 * 1024)
    assert client.post("/upload", data={"file": (io.BytesIO(big), "b.txt")}).status_code == 201
    assert client.get("/readyz").status_code == 200
    # tus: the head judged early (64 KiB), then the whole file once it is complete.
    data = b"line of text\n" * 10000
    created = client.post("/tus/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
                                            "Upload-Metadata": "filename dC50eHQ="})
    assert created.status_code == 201
    patched = client.patch(created.headers["Location"], data=data, headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert patched.status_code == 204 and patched.headers["Upload-File-Id"]

    methods = {method.rsplit("/", 1)[-1] for method, _ in recorder.calls}
    assert {"GetPolicy", "Validate", "Render", "GetRenderers", "Check"} <= methods
    without = [method for method, timeout in recorder.calls if not timeout or timeout <= 0]
    assert without == [], f"gRPC calls without a deadline: {without}"


# --- retries ---


def rpc_error(code: grpc.StatusCode) -> grpc.RpcError:
    class Error(grpc.RpcError):
        def code(self):
            return code

        def details(self):
            return "test"

    return Error()


def test_unavailable_is_retried_with_short_pauses_within_the_deadline(monkeypatch):
    pauses = []
    monkeypatch.setattr(calls_module.time, "sleep", pauses.append)
    attempts = []

    def flaky(left):
        attempts.append(left)
        if len(attempts) < 3:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE)
        return "answer"

    assert call_with_retry(flaky, timeout=5.0) == "answer"
    assert pauses == [0.05, 0.2]
    assert all(0 < left <= 5.0 for left in attempts)

    # Three attempts at most, then the error.
    attempts.clear()

    def down(left):
        attempts.append(left)
        raise rpc_error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(Unavailable):
        call_with_retry(down, timeout=5.0)
    assert len(attempts) == 3


def test_a_retry_never_outlives_the_deadline_and_other_errors_are_not_retried(monkeypatch):
    monkeypatch.setattr(calls_module.time, "sleep", lambda s: None)
    attempts = []

    def down(left):
        attempts.append(left)
        raise rpc_error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(Unavailable):
        call_with_retry(down, timeout=0.2)  # room for the 50 ms pause, not for the 200 ms one
    assert len(attempts) == 2

    attempts.clear()

    def refused(left):
        attempts.append(left)
        raise rpc_error(grpc.StatusCode.INVALID_ARGUMENT)

    with pytest.raises(InvalidInput):
        call_with_retry(refused, timeout=5.0)
    assert len(attempts) == 1


class FlakyValidator(validator_pb2_grpc.ValidatorServicer):
    """Answers UNAVAILABLE to its first GetPolicy (a service still starting or
    restarting), then the real validator's policy; every Validate stream is
    cut off with UNAVAILABLE after its first chunk (a validator that dies mid-call)."""

    def __init__(self, policy):
        self.policy = policy
        self.policy_calls = 0
        self.validate_calls = 0
        self.lock = threading.Lock()

    def GetPolicy(self, request, context):
        with self.lock:
            self.policy_calls += 1
            first = self.policy_calls == 1
        if first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "starting")
        return self.policy

    def Validate(self, request_iterator, context):
        with self.lock:
            self.validate_calls += 1
        next(request_iterator)  # the file info
        next(request_iterator)  # the first chunk of the body
        context.abort(grpc.StatusCode.UNAVAILABLE, "going away")


class FlakyThumbnailer(thumbnail_pb2_grpc.ThumbnailServicer):
    """Reads the whole stream, answers UNAVAILABLE the first time, then a
    'thumbnail' whose bytes are the sha256 of everything it received."""

    def __init__(self):
        self.received: list[int] = []

    def Render(self, request_iterator, context):
        digest, size = hashlib.sha256(), 0
        for message in request_iterator:
            if message.HasField("chunk"):
                digest.update(message.chunk)
                size += len(message.chunk)
        self.received.append(size)
        if len(self.received) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return thumbnail_pb2.ThumbnailImage(data=digest.digest(), mime_type="image/jpeg", width=1, height=1)

    def GetRenderers(self, request, context):
        return thumbnail_pb2.Renderers(mime_types=["image/jpeg"])


@pytest.fixture
def flaky(validator):
    policy = validator_pb2_grpc.ValidatorStub(validator.channel).GetPolicy(validator_pb2.GetPolicyRequest(),
                                                                          timeout=10)
    fakes = FlakyValidator(policy), FlakyThumbnailer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    validator_pb2_grpc.add_ValidatorServicer_to_server(fakes[0], server)
    thumbnail_pb2_grpc.add_ThumbnailServicer_to_server(fakes[1], server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", *fakes
    server.stop(None)


def test_get_policy_is_retried_when_the_service_is_unavailable(make_app, flaky):
    address, fake_validator, _ = flaky
    app = make_app(VALIDATOR_ADDR=address)
    policy = app.extensions["services"].policy()
    assert policy.max_file_size > 0
    assert fake_validator.policy_calls == 2


def test_render_is_retried_with_the_whole_file_again(make_app, flaky):
    address, _, fake_thumbnailer = flaky
    app = make_app(THUMBNAIL_ADDR=address)
    data = os.urandom(3 * 1024 * 1024 + 17)

    def from_the_start():
        return iter([data[i:i + 1024 * 1024] for i in range(0, len(data), 1024 * 1024)])

    reply = app.extensions["services"].render(from_the_start, "a.jpg", "image/jpeg", len(data))
    assert fake_thumbnailer.received == [len(data), len(data)]
    assert reply.data == hashlib.sha256(data).digest()


def test_a_validate_stream_that_has_read_body_bytes_is_not_retried(make_app, flaky, tmp_path):
    address, fake_validator, _ = flaky
    app = make_app(VALIDATOR_ADDR=address)
    app.extensions["services"].policy()  # (the policy's own retry is not what this test counts)
    client = app.test_client()
    response = client.post("/upload", data={"file": (io.BytesIO(b"some text\n" * 30000), "a.txt")})
    assert response.status_code == 503
    assert "validation service" in response.get_json()["error"]
    assert fake_validator.validate_calls == 1
    assert stored_files(tmp_path / "data") == []
    assert client.get("/files").get_json()["files"] == []

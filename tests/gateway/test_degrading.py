"""When a gRPC service is down or slow the gateway degrades, it does not fail."""
from __future__ import annotations

import io
import os
import time

import pytest
from PIL import Image

from gateway import create_app
from protos.plugins import hookimpl
from tests.conftest import free_port
from tests.images import encode
from thumbnail_service import server as thumbnail_server
from thumbnail_service.hookspecs import Renderer

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True

JPEG = encode(Image.new("RGB", (640, 480), "navy"), "JPEG")


def make_app(tmp_path, validator_addr, thumbnail_addr, **extra):
    return create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "data"),
                       "VALIDATOR_ADDR": validator_addr, "THUMBNAIL_ADDR": thumbnail_addr,
                       "THUMBNAIL_RETRY_INTERVAL": 0.2, **extra})


def upload(client, name="photo.jpg", data=JPEG):
    return client.post("/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def degraded(tmp_path, validator):
    apps = []

    def build(thumbnail_addr, **extra):
        app = make_app(tmp_path, validator.address, thumbnail_addr, **extra)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["thumbnails"].stop()
        app.extensions["services"].close()


def test_thumbnail_service_down_then_back(degraded):
    port = free_port()
    # Images are stored while it is down only when no metadata must be removed from them
    # (IMAGE_METADATA fails closed: tests/gateway/test_image_metadata.py).
    app = degraded(f"127.0.0.1:{port}", IMAGE_METADATA="keep")
    client = app.test_client()

    response = upload(client)
    assert response.status_code == 201
    rec = response.get_json()
    assert rec["thumbnail_url"] is None
    assert client.get(rec["download_url"]).status_code == 200
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'upload_service_up{service="thumbnail"} 0.0' in metrics
    assert "upload_thumbnails_pending 1.0" in metrics
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["services"]["thumbnail"] == "UNREACHABLE"

    server, _ = thumbnail_server.create_server(f"127.0.0.1:{port}")
    server.start()
    try:
        url = wait_for(lambda: client.get(f"/files/{rec['id']}").get_json()["thumbnail_url"])
        thumb = client.get(url)
        assert thumb.status_code == 200
        assert Image.open(io.BytesIO(thumb.data)).size == (200, 150)
        assert client.get("/readyz").status_code == 200
    finally:
        server.stop(None)


def slow(source, box):  # module-level: renderers travel to their render process by pickle
    time.sleep(2)
    return Image.new("RGB", box)


def test_slow_thumbnail_service_does_not_hold_the_upload(degraded, start_thumbnailer):
    class Slow:
        @hookimpl
        def upload_thumbnail_renderers(self):
            yield Renderer("slow", ("image/jpeg",), slow)

    slow_server = start_thumbnailer(pm=thumbnail_server.create_plugins(env={}, extra_plugins=[Slow()]))
    app = degraded(slow_server.address, THUMBNAIL_TIMEOUT=0.3, THUMBNAIL_RETRY_INTERVAL=60)
    started = time.monotonic()
    response = upload(app.test_client())
    assert response.status_code == 201
    assert response.get_json()["thumbnail_url"] is None
    assert time.monotonic() - started < 1.5
    assert app.extensions["files"].count_pending_thumbnails() == 1


def test_damaged_image_gets_no_thumbnail_and_no_retry(degraded, thumbnailer):
    app = degraded(thumbnailer.address)
    # A valid header (the validator accepts it) with the image data cut off.
    data = encode(Image.effect_noise((400, 300), 60).convert("RGB"), "JPEG")[:2000]
    response = upload(app.test_client(), data=data)
    assert response.status_code == 201
    assert response.get_json()["thumbnail_url"] is None
    assert app.extensions["files"].count_pending_thumbnails() == 0


def test_validator_down_is_503_with_nothing_stored(tmp_path, thumbnailer):
    app = make_app(tmp_path, f"127.0.0.1:{free_port()}", thumbnailer.address)
    try:
        client = app.test_client()
        response = upload(client)
        assert response.status_code == 503
        assert response.get_json()["error"]
        assert client.get("/readyz").get_json()["services"]["validator"] == "UNREACHABLE"
        assert 'upload_service_up{service="validator"} 0.0' in client.get("/metrics").get_data(as_text=True)
        files = [f for _, _, names in os.walk(tmp_path / "data" / "files") for f in names]
        assert files == []
        assert client.get("/files").get_json()["files"] == []
    finally:
        app.extensions["thumbnails"].stop()


def test_frozen_validator_is_503_within_the_deadline_then_recovers(tmp_path, thumbnailer):
    import signal

    from tests.processes import service_process

    port = free_port()
    with service_process("validator_service", "VALIDATOR_ADDR", port) as proc:
        app = make_app(tmp_path, f"127.0.0.1:{port}", thumbnailer.address, VALIDATOR_TIMEOUT=1.0)
        client = app.test_client()
        try:
            assert upload(client).status_code == 201
            proc.send_signal(signal.SIGSTOP)  # alive, connected, silent
            try:
                started = time.monotonic()
                response = upload(client, name="second.jpg")
                assert response.status_code == 503
                assert "try again" in response.get_json()["error"]
                assert time.monotonic() - started < 5
                assert client.get("/readyz").status_code == 503
            finally:
                proc.send_signal(signal.SIGCONT)
            assert upload(client, name="third.jpg").status_code == 201
            names = [r["original_name"] for r in client.get("/files").get_json()["files"]]
            assert names == ["third.jpg", "photo.jpg"]
        finally:
            app.extensions["thumbnails"].stop()
            app.extensions["services"].close()


def test_thumbnail_service_down_from_the_start_still_stores_other_files(degraded):
    # The gateway has never reached the thumbnail service, so it cannot know what it renders.
    app = degraded(f"127.0.0.1:{free_port()}")
    response = upload(app.test_client(), name="notes.txt", data=b"plain text\n")
    assert response.status_code == 201
    assert response.get_json()["thumbnail_url"] is None


def test_a_busy_service_is_unavailable_not_too_large():
    import grpc

    from protos.errors import TooLarge, Unavailable, error_for_code

    assert isinstance(error_for_code(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"),
                      Unavailable)
    assert isinstance(error_for_code(grpc.StatusCode.RESOURCE_EXHAUSTED, "The file is larger than 1 MiB."),
                      TooLarge)

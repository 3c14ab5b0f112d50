"""protos.client, as another team's program would use it: against real services, files
streamed from disk, busy answers retried through the service config, reasons read."""
from __future__ import annotations

import socket
import threading
import time

import grpc
import pytest
from PIL import Image

from protos.client import ThumbnailClient, ValidatorClient, connect, error_reason
from tests.images import encode
from tests.test_admission import validate_call
from validator_service.config import Settings as ValidatorSettings


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(encode(Image.new("RGB", (800, 600), "teal"), "PNG"))
    return path


def test_a_file_on_disk_is_validated_and_rendered(validator, thumbnailer, photo):
    with connect(validator.address) as v, connect(thumbnailer.address) as t:
        verdict = ValidatorClient(v).validate_file(photo)
        assert verdict.accepted and verdict.detected_type == "image/png"
        assert (verdict.width, verdict.height) == (800, 600)
        thumb = ThumbnailClient(t).render_file(photo, verdict.detected_type, box=(100, 100))
        assert (thumb.width, thumb.height) == (100, 75) and thumb.data[:8] == b"\x89PNG\r\n\x1a\n" or \
            thumb.mime_type == "image/jpeg"
        assert "image/png" in ThumbnailClient(t).renderers()
        assert "png" in {a.extension for a in ValidatorClient(v).policy().allowed}


def test_a_refusal_is_a_verdict_and_a_broken_call_has_a_reason(validator, thumbnailer, tmp_path):
    renamed = tmp_path / "holiday.jpg"
    renamed.write_bytes(b"MZ" + bytes(5000))
    with connect(validator.address) as v, connect(thumbnailer.address) as t:
        verdict = ValidatorClient(v).validate_file(renamed)
        assert not verdict.accepted and verdict.reasons[0].code in ("content_mismatch", "executable_content")
        assert ValidatorClient(v).check("notes.txt", b"plain words\n").accepted
        with pytest.raises(grpc.RpcError) as raised:
            ThumbnailClient(t).render_file(renamed, "image/jpeg")
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_reason(raised.value) == "INVALID_INPUT"


def test_a_big_file_is_streamed_not_read_whole_and_judged_by_its_size(validator, tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.seek(60 * 1024 * 1024 - 1)
        f.write(b"\n")
    with connect(validator.address) as v:
        verdict = ValidatorClient(v).validate_file(big)
    assert not verdict.accepted and verdict.reasons[0].code == "file_too_large"
    assert verdict.bytes_read < 2 * 1024 * 1024  # refused from the declared size, the rest never sent


@pytest.mark.parametrize("size", [1000, 20 * 1024 * 1024])  # within gRPC's retry buffer, and far past it
def test_a_busy_service_is_retried_until_a_slot_frees(start_validator, tmp_path, size):
    running = start_validator(settings=ValidatorSettings(workers=1))
    path = tmp_path / "notes.txt"
    path.write_bytes(b"plain words\n" * (size // 12))
    release = threading.Event()
    holding = validate_call(running.channel, release)
    try:
        time.sleep(0.3)
        # The one slot is held: a plain stub is refused at once...
        with pytest.raises(grpc.RpcError) as raised:
            ValidatorClient(running.channel).check("notes.txt", b"hi")
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and error_reason(raised.value) == "BUSY"
        # ...while the client's channel retries with backoff, and gets through once it frees.
        threading.Timer(0.5, release.set).start()
        with connect(running.address) as channel:
            verdict = ValidatorClient(channel).validate_file(path)
        assert verdict.accepted
    finally:
        release.set()
        holding.result()


def test_busy_for_longer_than_the_retries_last_is_unavailable(start_validator):
    running = start_validator(settings=ValidatorSettings(workers=1))
    release = threading.Event()
    holding = validate_call(running.channel, release)
    try:
        time.sleep(0.3)
        with connect(running.address) as channel, pytest.raises(grpc.RpcError) as raised:
            ValidatorClient(channel).check("notes.txt", b"hi")
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and error_reason(raised.value) == "BUSY"
    finally:
        release.set()
        holding.result()


def test_streams_sent_again_keep_to_the_callers_deadline(start_validator, tmp_path):
    # A scanner that takes the bytes and never answers: each Validate is UNAVAILABLE after
    # CLAMD_TIMEOUT (1 s). Each re-send once had a fresh deadline: 5 x the caller's in all.
    from validator_service.rules.clamav import ClamAV
    from validator_service.server import create_plugins

    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        rule = ClamAV(f"tcp://127.0.0.1:{silent.getsockname()[1]}", timeout=1)
        running = start_validator(pm=create_plugins(env={}, extra_plugins=[rule]))
        path = tmp_path / "notes.txt"
        path.write_bytes(b"plain words\n" * 10)
        started = time.monotonic()
        with connect(running.address) as channel, pytest.raises(grpc.RpcError) as raised:
            ValidatorClient(channel).validate_file(path, timeout=2.5)
        assert raised.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - started < 4.5

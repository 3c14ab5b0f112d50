"""The Node.js caller (protos/examples/caller.js: @grpc/grpc-js and @grpc/proto-loader loading the
shipped .proto files as they are) against real services."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.images import encode
from tests.test_admission import validate_call
from thumbnail_service.config import Settings as ThumbnailSettings
from validator_service.config import Settings as ValidatorSettings

ROOT = Path(__file__).resolve().parents[2]
CALLER = ROOT / "protos" / "examples" / "caller.js"


def call(validator: str, thumbnail: str, file: Path, *extra: str, env: dict | None = None) -> tuple[int, dict]:
    node = shutil.which("node")
    assert node, "node is missing: make install needs Node.js (npm) for the page and these callers"
    done = subprocess.run([node, str(CALLER), "--validator", validator, "--thumbnail", thumbnail, *extra, str(file)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, **(env or {})})
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(Image.new("RGB", (640, 480), "orange"), "JPEG"))
    return path


def test_node_validates_a_file_and_renders_its_thumbnail(validator, thumbnailer, photo):
    status, out = call(validator.address, thumbnailer.address, photo, "--box", "64")
    assert status == 0, out
    assert out["accepted"] and out["detected_type"] == "image/jpeg" and (out["width"], out["height"]) == (640, 480)
    assert out["thumbnail"]["mime_type"] == "image/jpeg"
    assert (out["thumbnail"]["width"], out["thumbnail"]["height"]) == (64, 48) and out["thumbnail"]["bytes"] > 100


def test_node_gets_a_refusal_as_a_verdict(validator, thumbnailer, tmp_path):
    renamed = tmp_path / "holiday.jpg"
    renamed.write_bytes(b"MZ" + bytes(300_000))  # a renamed executable, longer than one chunk
    status, out = call(validator.address, thumbnailer.address, renamed)
    assert status == 1
    assert not out["accepted"] and out["reasons"][0]["code"] in ("content_mismatch", "executable_content")
    assert "thumbnail" not in out


def test_node_retries_busy_through_its_service_config_and_reads_the_reason(start_validator, thumbnailer, tmp_path):
    running = start_validator(settings=ValidatorSettings(workers=1))
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"plain words\n" * 1000)
    release = threading.Event()
    holding = validate_call(running.channel, release)
    try:
        time.sleep(0.3)
        # Busy for longer than the retries last: UNAVAILABLE, with the reason BUSY read from
        # the google.rpc.Status details.
        status, out = call(running.address, thumbnailer.address, notes)
        assert status == 2 and out["error"] == "UNAVAILABLE" and out["reason"] == "BUSY"
        # Busy for half a second: retried until the slot frees.
        threading.Timer(0.5, release.set).start()
        status, out = call(running.address, thumbnailer.address, notes)
        assert status == 0 and out["accepted"], out
    finally:
        release.set()
        holding.result()


def test_node_calls_over_mutual_tls_with_the_services_settings(start_validator, start_thumbnailer, pki, photo):
    validator = start_validator(settings=ValidatorSettings.from_env(pki.validator.env(pki.ca)))
    thumbnailer = start_thumbnailer(settings=ThumbnailSettings.from_env(pki.thumbnail.env(pki.ca)))
    status, out = call(validator.address, thumbnailer.address, photo, env=pki.gateway.env(pki.ca))
    assert status == 0 and out["accepted"] and out["thumbnail"]["mime_type"] == "image/jpeg", out
    # Without a certificate of the CA the services let nobody in.
    status, out = call(validator.address, thumbnailer.address, photo, env={"GRPC_TLS_CA": str(pki.ca)})
    assert status == 2 and out["error"] == "UNAVAILABLE", out

"""Pixel floods and decompression bombs: tiny files that expand enormously.

Images are judged from their header alone: a declared size over the pixel
guard is ``pixel_flood``, over MAX_IMAGE_DIMENSION ``image_too_large``, and no
pixel is decoded either way. Archives are never decompressed, by any of the
three services: a zip, nested zips or gzip of any ratio is stored as the
bytes that were sent, within MAX_FILE_SIZE, and judged by its head.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import shutil
import tarfile
import time
import zipfile
import zlib

import grpc
import pytest

from tests.conftest import render, validate
from tests.hostile import corpus
from tests.hostile.checks import (BOUNDARY, assert_nothing_stored, assert_refused, assert_safe_download,
                                  assert_stored, multipart)
from tests.images import png_header_only

FLOODS = {
    "png": ("flood.png", corpus.png_flood),
    "gif": ("flood.gif", corpus.gif_flood),
    "webp": ("flood.webp", corpus.webp_flood),
}


@pytest.mark.parametrize("kind", FLOODS)
def test_a_pixel_flood_is_refused_from_its_header(client, app, kind):
    name, make = FLOODS[kind]
    started = time.monotonic()
    body = assert_refused(client, app, name, make(), 422, "pixel_flood")
    assert "decompression bomb" in body["error"]
    assert time.monotonic() - started < 10  # decoding billions of pixels would not be


@pytest.mark.parametrize("kind", FLOODS)
def test_the_validator_reads_no_further_than_the_header(validator, kind):
    name, make = FLOODS[kind]
    verdict = validate(validator.channel, name, make())
    assert not verdict.accepted and verdict.reasons[0].code == "pixel_flood"
    assert verdict.reasons[0].rule == "validator_service.rules.image"
    assert (verdict.width, verdict.height) == (0, 0)  # never measured, let alone decoded


@pytest.mark.parametrize("kind", FLOODS)
def test_the_thumbnail_service_refuses_a_flood_sent_to_it_directly(thumbnailer, kind):
    """Defence in depth: even a caller that skipped the validator gets no decode."""
    name, make = FLOODS[kind]
    with pytest.raises(grpc.RpcError) as info:
        render(thumbnailer.channel, make(), f"image/{kind}")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("kind,size", [("png", (9000, 9000)), ("gif", (5001, 4)), ("webp", (16384, 2))])
def test_a_flood_under_the_pixel_guard_but_over_the_side_limit_is_too_large(client, app, kind, size):
    data = {"png": png_header_only, "gif": corpus.gif_flood, "webp": corpus.webp_flood}[kind](*size)
    body = assert_refused(client, app, f"wide.{kind}", data, 422, "image_too_large")
    assert f"{size[0]}x{size[1]}" in body["error"]


# --- archives are never unpacked ------------------------------------------

BOMBS = {
    "gzip": ("zeros.gz", corpus.gzip_bomb, "application/gzip"),
    "zip": ("zeros.zip", corpus.zip_bomb, "application/zip"),
    "nested-zip": ("42.zip", corpus.nested_zip_bomb, "application/zip"),
}


@pytest.fixture(scope="module")
def bombs():
    """Made once, before any trap is set (making them uses zipfile)."""
    return {kind: make() for kind, (_, make, _) in BOMBS.items()}


@pytest.fixture
def no_decompression(monkeypatch):
    """Every decompressor Python offers fails the test if anything calls it (the
    gateway, the validator and the thumbnail service all run in this process)."""
    calls = []

    def trap(name):
        def refuse(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called: an archive is being unpacked")
        return refuse

    for module, attr in [(zlib, "decompress"), (zlib, "decompressobj"), (gzip, "decompress"),
                         (gzip, "open"), (gzip.GzipFile, "__init__"), (bz2, "decompress"),
                         (lzma, "decompress"), (zipfile.ZipFile, "__init__"), (tarfile, "open"),
                         (shutil, "unpack_archive")]:
        monkeypatch.setattr(module, attr, trap(f"{getattr(module, '__name__', module)}.{attr}"))
    yield calls
    assert calls == []


@pytest.mark.parametrize("kind", BOMBS)
def test_an_archive_bomb_is_stored_as_sent_and_never_unpacked(client, app, bombs, kind, no_decompression):
    name, _, mime = BOMBS[kind]
    data = bombs[kind]
    started = time.monotonic()
    rec = assert_stored(client, app, name, data, mime)  # also: the stored bytes are the archive
    # A ~1 MiB upload; inflating the nested bomb's 256 GiB would take many minutes.
    assert time.monotonic() - started < 10
    assert rec["sha256"] == hashlib.sha256(data).hexdigest()
    assert rec["thumbnail_url"] is None and rec["is_image"] is False
    response = assert_safe_download(client, rec, data)
    assert "Content-Encoding" not in response.headers  # served as the archive, not as "gzip-encoded zeros"


@pytest.mark.parametrize("kind", BOMBS)
def test_the_validator_judges_an_archive_by_its_first_64_kib(validator, bombs, kind):
    name, _, mime = BOMBS[kind]
    verdict = validate(validator.channel, name, bombs[kind])
    assert verdict.accepted and verdict.detected_type == mime  # libmagic did not look inside
    assert verdict.bytes_read <= 64 * 1024


def test_a_bomb_under_a_document_name_is_a_content_mismatch(client, app, bombs):
    assert_refused(client, app, "report.docx", bombs["zip"], 415, "content_mismatch")


def test_a_gzip_encoded_request_body_is_not_inflated(client, app, no_decompression):
    """The gateway never inflates a request either: a body sent with Content-Encoding: gzip is
    read as it is (and is then no multipart body): 400, nothing stored."""
    body = gzip.compress(multipart(b'filename="a.txt"', b"hello\n"))
    response = client.post("/upload", data=body, headers={
        "Content-Encoding": "gzip", "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert response.status_code == 400
    assert "malformed" in response.get_json()["error"]
    assert_nothing_stored(client, app)


def test_the_thumbnail_service_renders_no_archive(thumbnailer, bombs):
    for kind, (_, _, mime) in BOMBS.items():
        with pytest.raises(grpc.RpcError) as info:
            render(thumbnailer.channel, bombs[kind], mime)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

"""Polyglots: files that are two things at once.

The service decides what a file is from its head (libmagic), and then only
ever treats it as that: stored byte for byte, served with that type and
nosniff (so a browser never reads it as the other thing), and thumbnailed by
decoding and re-encoding the image, which drops anything appended or tucked
into metadata. Appended data is not refused: phones and cameras append
whole videos to JPEGs ("motion photos"), and the trailer of a large file is
past the head the validator reads. Each polyglot under the other name is a
content mismatch.
"""
from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.hostile import corpus
from tests.hostile.checks import assert_refused, assert_safe_download, assert_stored

POLYGLOTS = {
    "jpeg+zip": (corpus.jpeg_zip, "photo.jpg", "image/jpeg", "archive.zip"),
    "gif+jar": (corpus.gif_jar, "anim.gif", "image/gif", "applet.zip"),
    "pdf+zip": (corpus.pdf_zip, "paper.pdf", "application/pdf", "bundle.zip"),
    "html-in-png": (corpus.html_in_png, "image.png", "image/png", "page.txt"),
}


@pytest.mark.parametrize("kind", POLYGLOTS)
def test_a_polyglot_is_stored_and_served_as_what_its_head_is(client, app, kind):
    make, name, mime, _ = POLYGLOTS[kind]
    data = make()
    rec = assert_stored(client, app, name, data, mime)
    response = assert_safe_download(client, rec, data)
    assert response.headers["Content-Type"] == mime  # never text/html, never application/zip


@pytest.mark.parametrize("kind", [k for k in POLYGLOTS if POLYGLOTS[k][2].startswith("image/")])
def test_the_thumbnail_of_an_image_polyglot_carries_nothing_but_pixels(client, app, kind):
    make, name, mime, _ = POLYGLOTS[kind]
    rec = assert_stored(client, app, name, make(), mime)
    assert rec["thumbnail_url"]
    thumb = client.get(rec["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["X-Content-Type-Options"] == "nosniff"
    for marker in (b"PK\x03\x04", b"PK\x05\x06", b"META-INF", b"<script", b"<html"):
        assert marker not in thumb.data
    with Image.open(io.BytesIO(thumb.data)) as im:
        assert im.format in ("JPEG", "PNG") and max(im.size) <= 200


@pytest.mark.parametrize("kind", POLYGLOTS)
def test_a_polyglot_under_its_other_name_is_a_content_mismatch(client, app, kind):
    make, _, mime, other_name = POLYGLOTS[kind]
    body = assert_refused(client, app, other_name, make(), 415, "content_mismatch")
    assert mime in body["error"]


@pytest.mark.parametrize("name", ["applet.jar", "page.html", "page.htm", "x.phar"])
def test_the_other_readings_extensions_are_not_allowed_at_all(client, app, name):
    assert_refused(client, app, name, corpus.gif_jar(), 415, "extension_not_allowed")

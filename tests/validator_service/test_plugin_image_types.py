"""Image types a plugin adds (``FileType(..., image=True)``) are measured and held
to the image limits like the built-in ones, not refused for not being PNG, GIF,
WebP or JPEG."""
from __future__ import annotations

import pytest
from PIL import Image

from tests.conftest import validate
from tests.images import encode
from validator_service.server import create_plugins

PLUGIN = {"UPLOAD_PLUGINS": "tests.plugin_modules.bitmaps"}


@pytest.fixture
def plugged(start_validator):
    return start_validator(pm=create_plugins(env=PLUGIN))


@pytest.mark.parametrize("fmt,name", [("BMP", "a.bmp"), ("TIFF", "a.tif")])
def test_a_plugin_image_type_is_accepted_with_its_dimensions(plugged, fmt, name):
    verdict = validate(plugged.channel, name, encode(Image.new("RGB", (40, 30), "red"), fmt))
    assert verdict.accepted, verdict.reasons
    assert (verdict.width, verdict.height) == (40, 30)


@pytest.mark.parametrize("fmt,name", [("BMP", "wide.bmp"), ("TIFF", "wide.tif")])
def test_a_plugin_image_type_over_the_side_limit_is_refused(plugged, fmt, name):
    verdict = validate(plugged.channel, name, encode(Image.new("L", (5200, 2)), fmt))
    assert not verdict.accepted
    assert verdict.reasons[0].code == "image_too_large"


def test_a_plugin_image_type_with_a_broken_header_is_corrupt(plugged):
    data = b"BM" + b"\xff" * 200
    verdict = validate(plugged.channel, "broken.bmp", data)
    assert not verdict.accepted
    assert verdict.reasons[0].code in ("corrupt_image", "content_mismatch")


def test_a_plugin_image_type_declaring_a_flood_is_refused_from_its_header(plugged):
    head = encode(Image.new("L", (4, 4)), "BMP")
    # BITMAPINFOHEADER: width at 18, height at 22 (little-endian, signed)
    data = head[:18] + (60000).to_bytes(4, "little") + (60000).to_bytes(4, "little") + head[26:]
    verdict = validate(plugged.channel, "flood.bmp", data)
    assert not verdict.accepted
    assert verdict.reasons[0].code == "pixel_flood"


@pytest.mark.parametrize("name", ["noise.png", "noise.jpg", "noise.bmp"])
def test_bytes_that_are_no_image_are_refused_not_an_error(plugged, name):
    verdict = validate(plugged.channel, name, bytes(range(256)) * 8)
    assert not verdict.accepted
    assert verdict.reasons[0].code in ("corrupt_image", "content_mismatch")

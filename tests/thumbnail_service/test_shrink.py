"""JPEG draft mode is asked for the thumbnail's own shape; nothing else changes."""
from __future__ import annotations

import io
import random

import pytest
from PIL import Image, ImageChops, ImageStat

from tests.images import encode
from thumbnail_service.renderers import _fit, _shrink


def textured(width: int, height: int) -> Image.Image:
    """Gradients under blotches and grain, so that a poor resample shows."""
    size = (width, height)
    gradient = Image.linear_gradient("L").resize(size)
    blotches = Image.effect_noise((width // 40 + 2, height // 40 + 2), 60).resize(size, Image.Resampling.BICUBIC)
    grain = Image.effect_noise(size, 30)
    bands = [Image.blend(Image.blend(g, blotches, 0.5), grain, 0.2)
             for g in (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), blotches)]
    return Image.merge("RGB", bands)


def mean_abs_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def test_a_4_3_jpeg_in_a_square_box_decodes_at_one_eighth():
    # Image.thumbnail would ask draft for 200x200 and get 1/4 scale (400x300).
    im = Image.open(io.BytesIO(encode(textured(1600, 1200), "JPEG")))
    thumb = _shrink(im, (100, 100))
    assert im.size == (200, 150)  # what was decoded
    assert thumb.size == (100, 75)


@pytest.mark.parametrize("size", [(1600, 1200), (1601, 1201), (1203, 1605), (2000, 700)])
def test_jpeg_thumbnails_are_as_good_as_pillows_own(size):
    """Close to a full decode resampled with Lanczos, and no worse than
    Image.thumbnail; the odd sizes check draft's partial last block."""
    data = encode(textured(*size), "JPEG", quality=90)
    ours = _shrink(Image.open(io.BytesIO(data)), (100, 100))
    pillows = Image.open(io.BytesIO(data))
    pillows.thumbnail((100, 100))
    assert ours.size == pillows.size
    reference = Image.open(io.BytesIO(data)).resize(ours.size, Image.Resampling.LANCZOS, reducing_gap=None)
    ours_error = mean_abs_difference(ours, reference)
    assert ours_error < 1.5
    assert ours_error <= mean_abs_difference(pillows, reference) + 0.2


@pytest.mark.parametrize("fmt,mode", [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("WEBP", "RGB"),
                                      ("TIFF", "RGB"), ("BMP", "RGB")])
def test_other_formats_get_exactly_image_thumbnail(fmt, mode):
    data = encode(textured(603, 451).convert(mode), fmt)
    ours = _shrink(Image.open(io.BytesIO(data)), (200, 200))
    pillows = Image.open(io.BytesIO(data))
    pillows.thumbnail((200, 200))
    assert ours.size == pillows.size and ours.tobytes() == pillows.tobytes()


def test_sizes_follow_image_thumbnail_rule():
    rng = random.Random(7)
    for _ in range(400):
        size = (rng.randint(2, 2500), rng.randint(2, 2500))
        box = (rng.randint(1, 300), rng.randint(1, 300))
        if size[0] <= box[0] and size[1] <= box[1]:
            continue
        probe = Image.new("1", size)
        probe.thumbnail(box)
        assert _fit(size, box) == probe.size, (size, box)


def test_extreme_aspect_ratio_and_small_images():
    strip = Image.open(io.BytesIO(encode(textured(4000, 12), "JPEG")))
    assert _shrink(strip, (200, 200)).size == (200, 1)
    small = Image.open(io.BytesIO(encode(textured(150, 90), "JPEG")))
    assert _shrink(small, (200, 200)) is small  # never enlarged

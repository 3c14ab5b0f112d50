"""Genuine images larger than the validator's head (VALIDATOR_MAX_HEAD, 1 MiB)
are measured from their header and accepted, up to MAX_IMAGE_DIMENSION (5000
px) a side and MAX_FILE_SIZE (50 MiB); damaged ones are still refused.

The images are noise, so that no encoder shrinks them under the head, made
once per test session in a temporary folder (never kept in git).
"""
from __future__ import annotations

import struct

import pytest
from PIL import Image

from protos.streaming import file_info
from protos.upload.v1 import validator_pb2, validator_pb2_grpc
from tests.conftest import validate
from tests.hostile.checks import assert_refused, assert_stored
from tests.images import encode, noise, svg_of_paths
from validator_service.config import Settings
from validator_service.rules.imageheader import MAX_STEPS

MIB = 1024 * 1024
HEAD = Settings().max_head


def animation(size, fmt, count=3, mode="RGB", **params) -> bytes:
    frames = [noise(size, mode) for _ in range(count)]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], **params)


def gif(size) -> bytes:
    return encode(noise(size, "L").convert("P"), "GIF")


# name: (extension, build, (width, height) or None for SVG, which has no dimension check)
OVER_THE_HEAD = {
    "jpg": ("jpg", lambda: encode(noise((1600, 1200)), "JPEG", quality=95), (1600, 1200)),
    "jpeg-progressive": ("jpeg", lambda: encode(noise((1600, 1200)), "JPEG", quality=95, progressive=True),
                         (1600, 1200)),
    "png": ("png", lambda: encode(noise((1200, 1000)), "PNG"), (1200, 1000)),
    # A 2 MiB colour profile before the pixels: Pillow's header parse runs through it.
    "png-large-icc": ("png", lambda: encode(noise((400, 300)), "PNG", icc_profile=noise((1024, 700)).tobytes()),
                      (400, 300)),
    "gif": ("gif", lambda: gif((1600, 1200)), (1600, 1200)),
    "gif-animated": ("gif", lambda: animation((900, 700), "GIF", mode="L"), (900, 700)),
    # A 2 MiB comment before the first frame, which Pillow's header parse reads through.
    "gif-large-comment": ("gif", lambda: encode(noise((300, 200), "L").convert("P"), "GIF",
                                                comment=b"c" * (2 * MIB)), (300, 200)),
    "webp-lossy": ("webp", lambda: encode(noise((2000, 1500)), "WEBP", quality=90), (2000, 1500)),
    "webp-lossless": ("webp", lambda: encode(noise((1000, 800)), "WEBP", lossless=True), (1000, 800)),
    "webp-alpha": ("webp", lambda: encode(noise((1500, 1200), "RGBA"), "WEBP", quality=90), (1500, 1200)),
    "webp-animated": ("webp", lambda: animation((1200, 900), "WEBP", count=2, quality=90), (1200, 900)),
    "webp-large-icc": ("webp", lambda: encode(noise((300, 200)), "WEBP", icc_profile=noise((1024, 700)).tobytes()),
                       (300, 200)),
    "svg": ("svg", lambda: svg_of_paths(3 * MIB), None),
}

# As large as each format makes a 5000-pixel side within 50 MiB.
AT_THE_LIMITS = {
    "jpg-5000x5000": ("jpg", lambda: encode(noise((5000, 5000)), "JPEG", quality=99), (5000, 5000)),
    "png-5000x3300": ("png", lambda: encode(noise((5000, 3300)), "PNG", compress_level=1), (5000, 3300)),
    "gif-5000x5000": ("gif", lambda: gif((5000, 5000)), (5000, 5000)),
    "webp-lossy-5000x5000": ("webp", lambda: encode(noise((5000, 5000), "RGBA"), "WEBP", quality=80, method=0),
                             (5000, 5000)),
    "webp-lossless-3400x5000": ("webp", lambda: encode(noise((3400, 5000)), "WEBP", lossless=True, method=0,
                                                       quality=0), (3400, 5000)),
    "svg-48mib": ("svg", lambda: svg_of_paths(48 * MIB), None),
}


@pytest.fixture(scope="session")
def large_image(tmp_path_factory):
    """The bytes of a case above, built on first use and kept on disk for the session."""
    folder = tmp_path_factory.mktemp("large-images")

    def get(name: str) -> bytes:
        path = folder / name
        if not path.exists():
            _, build, _ = {**OVER_THE_HEAD, **AT_THE_LIMITS}[name]
            path.write_bytes(build())
        return path.read_bytes()

    return get


def check(channel, name: str, head: bytes, size: int):
    """The gateway's call for a file it holds: the head and the real size."""
    request = validator_pb2.CheckRequest(info=file_info(name, size), head=head, size=size)
    return validator_pb2_grpc.ValidatorStub(channel).Check(request, timeout=10)


def assert_accepted(verdict, dimensions) -> None:
    assert verdict.accepted, list(verdict.reasons)
    assert not verdict.head_incomplete
    if dimensions is not None:
        assert verdict.is_image and (verdict.width, verdict.height) == dimensions


@pytest.mark.parametrize("case", OVER_THE_HEAD)
def test_a_genuine_image_over_the_head_is_accepted(validator, large_image, case):
    ext, _, dimensions = OVER_THE_HEAD[case]
    data = large_image(case)
    assert len(data) > HEAD  # else this would prove nothing
    verdict = validate(validator.channel, f"photo.{ext}", data)
    assert_accepted(verdict, dimensions)
    assert verdict.bytes_read <= HEAD  # measured from the head, never from the rest


@pytest.mark.parametrize("case", AT_THE_LIMITS)
def test_a_genuine_image_at_the_limits_is_accepted(validator, large_image, case):
    ext, _, dimensions = AT_THE_LIMITS[case]
    data = large_image(case)
    assert 20 * MIB < len(data) <= Settings().max_file_size
    assert_accepted(validate(validator.channel, f"photo.{ext}", data), dimensions)
    assert_accepted(check(validator.channel, f"photo.{ext}", data[:HEAD], len(data)), dimensions)


@pytest.mark.parametrize("case", ["webp-lossy", "webp-lossless", "png-large-icc", "gif-large-comment"])
def test_the_gateway_stores_a_genuine_image_over_the_head(client, app, large_image, case):
    ext, _, dimensions = OVER_THE_HEAD[case]
    data = large_image(case)
    rec = assert_stored(client, app, f"holiday.{ext}", data, f"image/{ext}")
    assert (rec["width"], rec["height"]) == dimensions


# --- what is still refused -----------------------------------------------------

def test_a_large_webp_over_the_side_limit_is_refused(validator):
    data = encode(noise((5200, 300)), "WEBP", lossless=True, method=0, quality=0)
    assert len(data) > HEAD
    verdict = validate(validator.channel, "wide.webp", data)
    assert not verdict.accepted and verdict.reasons[0].code == "image_too_large"
    assert "5200x300" in verdict.reasons[0].message


def first_gif_block(data: bytes) -> int:
    flags = data[10]
    return 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)


def damage(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


DAMAGED = {
    "png": lambda data: damage(data, 20, b"\x7f"),  # a byte of IHDR's height: its checksum fails
    "webp-lossless": lambda data: damage(data, 20, b"\0"),  # VP8L's signature byte
    "webp-lossy": lambda data: damage(data, 23, b"\0"),  # VP8's start code
    "gif": lambda data: damage(data, first_gif_block(data), b";"),  # the trailer, before any frame
    "jpg": lambda data: damage(data, data.index(b"\xff\xc0") + 5, b"\0\0"),  # a frame 0 pixels high
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_large_image_damaged_in_its_header_is_refused(validator, large_image, case):
    ext, _, _ = OVER_THE_HEAD[case]
    verdict = validate(validator.channel, f"broken.{ext}", DAMAGED[case](large_image(case)))
    assert not verdict.accepted and verdict.reasons[0].code == "corrupt_image"
    assert verdict.reasons[0].message.endswith(".")


@pytest.mark.parametrize("case", ["jpg", "png", "gif", "webp-lossy"])
def test_an_image_cut_inside_its_header_is_corrupt(validator, large_image, case):
    ext, _, _ = OVER_THE_HEAD[case]
    verdict = validate(validator.channel, f"cut.{ext}", large_image(case)[:24])
    assert not verdict.accepted and verdict.reasons[0].code == "corrupt_image"


def jpeg_with_metadata_before_its_frame(metadata: int) -> bytes:
    # Pillow writes a colour profile in 64 KiB APP2 segments, all before the frame header.
    return encode(Image.new("RGB", (320, 240), "purple"), "JPEG", icc_profile=b"\0" * metadata)


def test_a_jpeg_frame_header_past_the_head_is_out_of_reach_not_corrupt(validator, client, app):
    data = jpeg_with_metadata_before_its_frame(HEAD + 200 * 1024)
    frame = data.index(b"\xff\xc0")
    assert frame > HEAD and struct.unpack(">HH", data[frame + 5:frame + 9]) == (240, 320)
    verdict = validate(validator.channel, "icc.jpg", data)
    assert not verdict.accepted and verdict.reasons[0].code == "image_header_out_of_reach"
    assert "1 MiB" in verdict.reasons[0].message and "VALIDATOR_MAX_HEAD" in verdict.reasons[0].message
    assert not verdict.head_incomplete
    body = assert_refused(client, app, "icc.jpg", data, 422, "image_header_out_of_reach")
    assert "dimensions cannot be checked" in body["error"]


def test_a_jpeg_frame_header_within_a_larger_head_is_measured(start_validator):
    data = jpeg_with_metadata_before_its_frame(HEAD + 200 * 1024)
    running = start_validator(settings=Settings(max_head=2 * MIB))
    assert_accepted(validate(running.channel, "icc.jpg", data), (320, 240))


# The walk to a header is bounded too: a head of tiny blocks or segments is
# refused after MAX_STEPS of them rather than walked to its end in Python, and
# fill bytes are skipped in one search.
GIF_SCREEN = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0, 0, 0)
HEADS_OF_TINY_STEPS = {
    "gif-tiny-extensions": ("gif", GIF_SCREEN + b"\x21\x01\x00" * (HEAD // 3), f"more than {MAX_STEPS} blocks"),
    "jpeg-tiny-segments": ("jpg", b"\xff\xd8" + b"\xff\xe0\x00\x02" * (HEAD // 4), f"more than {MAX_STEPS} segments"),
    "jpeg-standalone-markers": ("jpg", b"\xff\xd8" + b"\xff\x01" * (HEAD // 2), f"more than {MAX_STEPS} segments"),
    "jpeg-fill-bytes": ("jpg", b"\xff\xd8\xff\xe0" + b"\xff" * (HEAD - 4), "ends before its header"),
}


@pytest.mark.parametrize("case", HEADS_OF_TINY_STEPS)
def test_a_head_of_tiny_steps_is_refused_without_a_long_walk(validator, case):
    ext, data, why = HEADS_OF_TINY_STEPS[case]
    verdict = validate(validator.channel, f"steps.{ext}", data)
    assert not verdict.accepted and verdict.reasons[0].code == "corrupt_image", list(verdict.reasons)
    assert why in verdict.reasons[0].message

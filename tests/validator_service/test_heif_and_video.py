"""HEIC, HEIF and AVIF images are images like the others: measured from their
header (the ISO base media meta box, rules/imageheader.py) and held to the same
limits; videos (mp4, webm, mov) are allowed by their content. A program renamed
to any of these is refused."""
from __future__ import annotations

import struct

import pytest
from PIL import Image

from tests.conftest import validate
from tests.images import encode
from tests.samples import ELF_HEADER, MZ_HEADER, heif_bytes, make_sample
from validator_service.rules.imageheader import Damaged, dimensions

NEW_TYPES = ("heic", "heif", "avif", "mp4", "webm", "mov")


def reason(verdict) -> str | None:
    return verdict.reasons[0].code if verdict.reasons else None


def with_box(data: bytes, kind: bytes, payload: bytes) -> bytes:
    """``data`` with the content of its (only) ``kind`` box replaced by ``payload``
    of the same length: a header that says something else."""
    at = data.index(kind) + 4
    assert len(payload) <= struct.unpack_from(">I", data, at - 8)[0] - 8
    return data[:at] + payload + data[at + len(payload):]


def ispe(width: int, height: int) -> bytes:
    return b"\0\0\0\0" + struct.pack(">II", width, height)


def clap(width: int, height: int) -> bytes:
    return struct.pack(">IIII", width, 1, height, 1)


@pytest.mark.parametrize("ext", ["heic", "heif", "avif"])
def test_heif_and_avif_images_are_measured_from_their_header(validator, tmp_path, ext):
    verdict = validate(validator.channel, f"photo.{ext}", make_sample(ext, tmp_path).read_bytes())
    assert verdict.accepted, verdict.reasons
    assert verdict.is_image
    # libheif pads the 48 rows to a 64x64 coded picture; its clean aperture (clap) crops them away.
    assert (verdict.width, verdict.height) == (64, 48)


@pytest.mark.parametrize("ext", ["mp4", "webm", "mov"])
def test_videos_are_allowed_and_are_not_images(validator, tmp_path, ext):
    verdict = validate(validator.channel, f"clip.{ext}", make_sample(ext, tmp_path).read_bytes())
    assert verdict.accepted, verdict.reasons
    assert not verdict.is_image and verdict.width == verdict.height == 0


def test_a_turned_heic_reports_its_size_as_shown(validator):
    # pillow-heif writes EXIF orientation 6 as a quarter turn (irot) in the header.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = heif_bytes(Image.new("RGB", (64, 48), "red"), exif=exif.tobytes())
    verdict = validate(validator.channel, "portrait.heic", data)
    assert verdict.accepted and (verdict.width, verdict.height) == (48, 64)


@pytest.mark.parametrize("ext", NEW_TYPES)
@pytest.mark.parametrize("program,kind", [(MZ_HEADER, "application/x-dosexec"), (ELF_HEADER, "ELF")])
def test_a_program_renamed_to_a_new_type_is_refused(validator, ext, program, kind):
    verdict = validate(validator.channel, f"holiday.{ext}", program + b"\0" * 4000)
    assert not verdict.accepted
    assert reason(verdict) == "executable_content"


@pytest.mark.parametrize("ext,name", [("png", "photo.heic"), ("heic", "photo.avif"), ("mp4", "clip.webm"),
                                      ("mov", "clip.mp4"), ("webm", "clip.mov"), ("pdf", "clip.mp4"),
                                      ("mp4", "photo.heic")])
def test_content_that_is_another_type_is_refused(validator, tmp_path, ext, name):
    verdict = validate(validator.channel, name, make_sample(ext, tmp_path).read_bytes())
    assert reason(verdict) == "content_mismatch", verdict.reasons


def test_a_heic_declaring_a_flood_is_refused_unopened(validator, tmp_path):
    # 60000x60000 coded, "cropped" to 64x48: the decoder would still allocate the coded size.
    data = with_box(make_sample("heic", tmp_path).read_bytes(), b"ispe", ispe(60000, 60000))
    assert reason(validate(validator.channel, "flood.heic", data)) == "pixel_flood"


def test_an_avif_declaring_a_flood_is_refused_unopened(validator, tmp_path):
    data = with_box(make_sample("avif", tmp_path).read_bytes(), b"ispe", ispe(60000, 60000))
    assert reason(validate(validator.channel, "flood.avif", data)) == "pixel_flood"


def test_a_heif_image_over_the_side_limit_is_refused(validator, tmp_path):
    heic = make_sample("heic", tmp_path).read_bytes()
    wide = with_box(with_box(heic, b"ispe", ispe(5200, 64)), b"clap", clap(5200, 48))
    verdict = validate(validator.channel, "wide.heic", wide)
    assert reason(verdict) == "image_too_large" and "5200x48" in verdict.reasons[0].message
    avif = encode(Image.new("RGB", (6000, 10), "red"), "AVIF")
    assert reason(validate(validator.channel, "wide.avif", avif)) == "image_too_large"


def test_a_heic_cut_inside_its_header_is_corrupt(validator, tmp_path):
    heic = make_sample("heic", tmp_path).read_bytes()
    cut = heic[:heic.index(b"ipma") + 6]
    verdict = validate(validator.channel, "cut.heic", cut)
    assert reason(verdict) == "corrupt_image" and "ends before its header" in verdict.reasons[0].message


@pytest.mark.parametrize("damage,words", [
    (lambda d: with_box(d, b"pitm", b"\0\0\0\0\0\x09"), "no size"),  # the primary item is one that has none
    (lambda d: d.replace(b"ispe", b"ispX"), "no size"),
    (lambda d: d.replace(b"pitm", b"pitX"), "no primary image"),
    (lambda d: with_box(d, b"ipma", b"\0\0\0\0" + struct.pack(">I", 1) + b"\0\x01\x01\x09"), "property 9"),
    (lambda d: with_box(d, b"ispe", b"\0\0\0\0" + struct.pack(">II", 0, 48)), "0x"),
    (lambda d: with_box(d, b"clap", struct.pack(">IIII", 64, 0, 48, 1)), "divides by zero"),
])
def test_a_heic_whose_header_is_broken_is_corrupt(validator, tmp_path, damage, words):
    data = damage(make_sample("heic", tmp_path).read_bytes())
    verdict = validate(validator.channel, "broken.heic", data)
    assert reason(verdict) == "corrupt_image", verdict.reasons
    assert words in verdict.reasons[0].message


def test_box_sizes_that_do_not_fit_are_damage_not_a_crash(tmp_path):
    heic = make_sample("heic", tmp_path).read_bytes()
    meta = heic.index(b"meta") - 4
    # A child box of meta longer than meta itself, and one shorter than its own header.
    hdlr = heic.index(b"hdlr") - 4
    for size in (10_000, 4):
        broken = heic[:hdlr] + struct.pack(">I", size) + heic[hdlr + 4:]
        with pytest.raises(Damaged):
            dimensions(broken)
    # A meta box that goes on past the bytes given is waited for, not called damaged.
    assert dimensions(heic[:meta + 100]) is None


def test_many_tiny_boxes_cost_a_bounded_walk(tmp_path):
    heic = make_sample("heic", tmp_path).read_bytes()
    meta = heic.index(b"meta") - 4
    # 20,000 empty 'free' boxes inside meta (after its version and flags) before its real children.
    filler = b"\0\0\0\x08free" * 20_000
    meta_size = struct.unpack_from(">I", heic, meta)[0] + len(filler)
    data = heic[:meta] + struct.pack(">I", meta_size) + heic[meta + 4:meta + 12] + filler + heic[meta + 12:]
    with pytest.raises(Damaged, match="more than"):
        dimensions(data)

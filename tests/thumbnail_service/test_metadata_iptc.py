"""IPTC location under strip-location: the location datasets (2:26, 2:27, 2:90, 2:92, 2:95,
2:100, 2:101) are cut out of the IPTC wherever it is (a JPEG's APP13 Photoshop IRB, a PNG's
ImageMagick raw profile, a TIFF tag in the EXIF), the other datasets and resources stay as
they were, lengths and padding right; what cannot be read goes whole."""
from __future__ import annotations

import hashlib
import random

import pytest

from protos.errors import InvalidInput
from tests.metadata_images import (IPTC_LOCATION, IPTC_OTHER, MAKE, RESOLUTION, XMP_WITH_GPS, exif_with_gps, iim,
                                   image_bytes, iptc_of, irb_resource, opened, orientation_of, pixels, read_iim,
                                   with_iptc)
from tests.thumbnail_service.test_transforms import transform
from thumbnail_service.metadata import STRIPPERS, edit_exif, strip_jpeg, strip_png

MIME = {"jpg": "image/jpeg", "png": "image/png"}


def app13(irb: bytes) -> bytes:
    """A JPEG (EXIF with GPS, orientation 6) with ``irb`` in an APP13 after its APP0."""
    data = image_bytes("jpg", exif_with_gps())
    payload = b"Photoshop 3.0\x00" + irb
    end = 4 + int.from_bytes(data[4:6], "big")
    return data[:end] + b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload + data[end:]


def segment(data: bytes, marker: int) -> bytes | None:
    """The payload of the first segment with ``marker``, walked by its lengths."""
    at = 2
    while data[at + 1] not in (0xDA, 0xD9):
        end = at + 2 + int.from_bytes(data[at + 2:at + 4], "big")
        if data[at + 1] == marker:
            return data[at + 4:end]
        at = end
    return None


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_the_transform_cuts_the_location_out_of_the_iptc(thumbnailer, ext):
    data = with_iptc(ext)
    result, body = transform(thumbnailer.channel, data, MIME[ext])
    assert result.changed and list(result.removed) == ["iptc.location"]
    assert iptc_of(body) == IPTC_OTHER
    assert pixels(body) == pixels(data) and orientation_of(body) == 6
    keep, _ = transform(thumbnailer.channel, data, MIME[ext], "keep")
    assert not keep.changed


def test_the_irb_is_rewritten_with_its_lengths_and_padding_and_other_resources_kept():
    # What is left of the IPTC is of odd length: the resource is padded to even, the APP13's
    # length counts the padding, and the resource after it still starts where it should.
    odd = {(2, 120): b"odd caption!"}
    block = iim(IPTC_LOCATION | odd)
    digest = irb_resource(0x0425, hashlib.md5(block).digest())
    after = irb_resource(0x0400, b"x")  # an odd-length resource after the IPTC, padded too
    data = app13(RESOLUTION + irb_resource(0x0404, block) + digest + after)
    new, removed = strip_jpeg(data, "strip-location")
    assert sorted(removed) == ["exif.gps", "iptc.location"]
    left = iim(odd)
    assert len(left) % 2 == 1
    assert segment(new, 0xED) == (b"Photoshop 3.0\x00" + RESOLUTION + irb_resource(0x0404, left)
                                  + irb_resource(0x0425, hashlib.md5(left).digest()) + after)
    assert iptc_of(new) == odd and pixels(new) == pixels(data)
    assert strip_jpeg(new, "strip-location") == (None, [])


def test_an_iptc_of_location_alone_goes_and_so_does_an_app13_left_empty():
    only = app13(irb_resource(0x0404, iim(IPTC_LOCATION)))
    new, _ = strip_jpeg(only, "strip-location")
    assert segment(new, 0xED) is None and pixels(new) == pixels(only)
    with_other = app13(irb_resource(0x0404, iim(IPTC_LOCATION)) + RESOLUTION)
    new, _ = strip_jpeg(with_other, "strip-location")
    assert segment(new, 0xED) == b"Photoshop 3.0\x00" + RESOLUTION


def test_xmp_and_exif_inside_the_irb_lose_their_location():
    exif = exif_with_gps()
    data = app13(RESOLUTION + irb_resource(0x0424, XMP_WITH_GPS) + irb_resource(0x0422, exif))
    new, removed = strip_jpeg(data, "strip-location")
    assert set(removed) == {"exif.gps", "xmp"}
    irb = segment(new, 0xED)
    assert b"GPSLatitude" not in new and irb.startswith(b"Photoshop 3.0\x00" + RESOLUTION)
    inner = irb[len(b"Photoshop 3.0\x00" + RESOLUTION) + 12:]
    assert inner[:len(exif)] != exif and len(inner) == len(exif)  # the GPS zeroed in place
    assert dict(opened(new).getexif().get_ifd(0x8825)) == {}


@pytest.mark.parametrize("payload", [b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00\xff\xff\xff\xff" + b"x" * 20,
                                     b"Photoshop 3.0\x00" + b"NOPE" + b"x" * 30,
                                     b"Adobe_Photoshop2.5:" + irb_resource(0x0404, iim(IPTC_LOCATION))])
def test_an_app13_that_cannot_be_read_goes_whole(payload):
    data = image_bytes("jpg", exif_with_gps(gps=False))
    data = data[:2] + b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]
    new, removed = strip_jpeg(data, "strip-location")
    assert removed == ["iptc (unreadable)"] and segment(new, 0xED) is None
    assert pixels(new) == pixels(data) and orientation_of(new) == 6


def test_strip_all_drops_the_iptc_whole():
    for ext in ("jpg", "png"):
        new, removed = STRIPPERS[MIME[ext]](with_iptc(ext), "strip-all")
        assert iptc_of(new) == {} and "exif" in removed


def test_a_png_raw_profile_holding_an_irb_or_xmp_loses_the_location():
    from PIL.PngImagePlugin import PngInfo

    def raw(name: str, profile: bytes) -> str:
        return "\n%s\n%8d\n%s\n" % (name, len(profile), profile.hex())

    info = PngInfo()
    info.add_itxt("Raw profile type 8bim", raw("8bim", RESOLUTION + irb_resource(0x0404, iim(IPTC_LOCATION | IPTC_OTHER))))
    info.add_text("Raw profile type xmp", raw("xmp", XMP_WITH_GPS))  # hex: the plain search never saw it
    data = image_bytes("png", exif_with_gps(gps=False), im=None)
    from io import BytesIO
    out = BytesIO()
    opened(data).save(out, "PNG", pnginfo=info)
    data = out.getvalue()
    new, removed = strip_png(data, "strip-location")
    assert removed == ["iptc.location", "png.xmp"]
    text = opened(new).text
    assert "Raw profile type xmp" not in text
    irb = bytes.fromhex("".join(text["Raw profile type 8bim"].split()[2:]))
    assert irb.startswith(RESOLUTION) and read_iim(irb[len(RESOLUTION) + 12:]) == IPTC_OTHER
    assert pixels(new) == pixels(data)


def test_iptc_and_xmp_tags_in_the_exif_leave_it_when_they_name_a_place():
    exif = opened(image_bytes("jpg", exif_with_gps(gps=False))).getexif()
    exif[0x83BB] = iim(IPTC_LOCATION | IPTC_OTHER)
    exif[0x02BC] = XMP_WITH_GPS
    tiff = exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif") else exif.tobytes()
    assert b"Montmartre" in tiff
    new, removed = edit_exif(tiff, "strip-location")
    assert removed == ["exif.xmp", "exif.iptc"] or removed == ["exif.iptc", "exif.xmp"]
    assert len(new) == len(tiff) and b"Montmartre" not in new and b"GPSLatitude" not in new
    data = image_bytes("jpg", b"Exif\x00\x00" + new)
    kept = opened(data).getexif()
    assert kept.get(MAKE) == "Camera Maker" and kept.get(0x0112) == 6 and 0x83BB not in kept
    plain = opened(image_bytes("jpg", exif_with_gps(gps=False))).getexif()
    plain[0x83BB] = iim(IPTC_OTHER)
    tiff = plain.tobytes()[6:]
    assert edit_exif(tiff, "strip-location") == (None, [])


def test_hostile_iptc_never_crashes_the_strippers():
    rng = random.Random(29)
    block = iim(IPTC_LOCATION | IPTC_OTHER)
    for ext in ("jpg", "png"):
        original = with_iptc(ext)
        start = original.find(b"8BIM")
        for _ in range(150):
            if ext == "jpg":
                data = bytearray(original)
                for _ in range(rng.randint(1, 6)):
                    data[start + rng.randrange(0, 120)] = rng.randrange(256)
            else:
                # The damage goes into the IPTC itself: in the zTXt chunk's compressed bytes it
                # would only break zlib, and the profile would go as unreadable, never walked.
                damaged = bytearray(block)
                for _ in range(rng.randint(1, 6)):
                    damaged[rng.randrange(len(damaged))] = rng.randrange(256)
                data = with_iptc("png", block=bytes(damaged))
            try:
                new, _ = STRIPPERS[MIME[ext]](bytes(data), "strip-location")
            except InvalidInput:
                continue
            # Damage may turn a location dataset into another (its number hit): what is stored
            # has no location dataset left that a second pass would find.
            if new is not None:
                assert not {"iptc.location", "iptc (unreadable)"} & set(STRIPPERS[MIME[ext]](new, "strip-location")[1])

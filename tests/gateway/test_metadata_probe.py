"""gateway.ingest.metadata_probe: which images hold no metadata at all (stored byte for byte with
no call to the thumbnail service), walked over the chunks as they would be read from disk."""
from __future__ import annotations

import pytest

from gateway.ingest.metadata_probe import carries_metadata
from tests.images import encode
from tests.metadata_images import IPTC_OTHER, exif_with_gps, image_bytes, picture, with_iptc

MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def pieces(data: bytes, size: int = 7):
    """The file in small, uneven reads, so that no structure arrives whole."""
    return (data[i:i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_an_image_without_metadata_is_known_as_such(ext):
    assert not carries_metadata(pieces(image_bytes(ext)), MIME[ext])


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
@pytest.mark.parametrize("kind", ["exif with gps", "exif without gps", "xmp"])
def test_any_metadata_is_seen(ext, kind):
    if kind == "xmp":
        data = image_bytes(ext, xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    else:
        data = image_bytes(ext, exif_with_gps(gps=kind == "exif with gps"))
    assert carries_metadata(pieces(data), MIME[ext])


def test_a_jpeg_comment_and_more_images_in_it_count():
    assert carries_metadata(pieces(encode(picture(), "JPEG", comment=b"taken at home")), "image/jpeg")
    plain = image_bytes("jpg")
    mpf = plain[:2] + b"\xff\xe2\x00\x08MPF\x00\x00\x00" + plain[2:]  # an APP2 MPF segment
    assert carries_metadata(pieces(mpf), "image/jpeg")


@pytest.mark.parametrize("size", [7, 64 * 1024])
def test_a_picture_after_the_first_counts_without_an_mpf_index(size):
    # The service strips the EXIF of every picture it finds after the first one's scan, MPF
    # index or not; a first picture with no metadata must not vouch for the file.
    plain = image_bytes("jpg")
    assert not carries_metadata(pieces(plain + b"\x00" * 100, size), "image/jpeg")
    assert carries_metadata(pieces(plain + image_bytes("jpg", exif_with_gps()), size), "image/jpeg")
    assert carries_metadata(pieces(plain + image_bytes("jpg"), size), "image/jpeg")


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_iptc_counts_so_that_the_service_cuts_its_location_out(ext):
    # Only the service tells a location dataset from a caption: any APP13 or raw profile is sent.
    for datasets in (None, IPTC_OTHER):
        data = with_iptc(ext, datasets)
        if ext == "jpg":
            data = data[:data.index(b"\xff\xe1")] + data[data.index(b"\xff\xdb"):]  # no EXIF: the APP13 alone
            assert b"\xff\xe1" not in data[:data.index(b"\xff\xda")]
        assert carries_metadata(pieces(data), MIME[ext])


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_what_cannot_be_walked_counts_as_carrying_metadata(ext):
    data = image_bytes(ext)
    assert carries_metadata(pieces(data[:len(data) // 3]), MIME[ext])  # cut short
    assert carries_metadata(pieces(b"\x00" * 64 + data), MIME[ext])  # not the format's start
    assert carries_metadata(pieces(data), "image/heic")  # a kind it does not walk
    assert carries_metadata(pieces(data), "image/avif")


def test_a_file_of_countless_tiny_structures_counts_as_carrying_metadata():
    # A PNG of 100,000 empty ancillary chunks after its header, or a JPEG of fill bytes: valid
    # enough for the validator, and each walked step by step would cost the gateway's CPU for
    # every one. Past 10,000 structures the walk stops and the file goes to the service.
    png = image_bytes("png")
    header_end = 8 + 8 + 13 + 4  # signature, IHDR
    empty = (0).to_bytes(4, "big") + b"zzZz" + (0).to_bytes(4, "big")
    flooded = png[:header_end] + empty * 100_000 + png[header_end:]
    assert carries_metadata(pieces(flooded, 1024 * 1024), "image/png")
    jpeg = image_bytes("jpg")
    assert carries_metadata(pieces(jpeg[:2] + b"\xff" * 200_000 + jpeg[2:], 1024 * 1024), "image/jpeg")
    # Fewer than that is walked to the end as before.
    assert not carries_metadata(pieces(png[:header_end] + empty * 1000 + png[header_end:], 1024 * 1024),
                                "image/png")

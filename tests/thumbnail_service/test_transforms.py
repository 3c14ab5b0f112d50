"""Thumbnail.Transform and the shipped image_metadata transform: location goes from
JPEG, PNG, WebP, HEIC and AVIF, orientation and decoded pixels stay, an image with nothing
to remove is answered unchanged; hostile metadata never crashes the transform; a
plugin's transform runs after the built-in one, in the render child."""
from __future__ import annotations

import io
import random
from pathlib import Path

import grpc
import pytest

from protos.errors import InvalidInput
from protos.plugins import hookimpl
from protos.streaming import file_info, read_chunks, transform_requests
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc
from tests.metadata_images import (FORMATS, MAKE, exif_with_gps, gps_of, image_bytes, opened, orientation_of, pixels,
                                   with_gps)
from thumbnail_service import server as thumbnail_server
from thumbnail_service.hookspecs import Transform, TransformResult
from thumbnail_service.metadata import STRIPPERS, edit_exif, strip_jpeg


def transform(channel, data: bytes, mime: str, mode: str = "strip-location"):
    stub = thumbnail_pb2_grpc.ThumbnailStub(channel)
    options = thumbnail_pb2.TransformOptions(info=file_info("x", len(data)), mime_type=mime,
                                             parameters={"image_metadata": mode})
    replies = list(stub.Transform(transform_requests(options, read_chunks(io.BytesIO(data), 1 << 20)), timeout=30))
    result = replies[0].result
    body = b"".join(r.chunk for r in replies[1:])
    assert len(body) == result.size
    return result, body


def test_the_service_lists_its_transforms(thumbnailer):
    reply = thumbnail_pb2_grpc.ThumbnailStub(thumbnailer.channel).GetTransforms(
        thumbnail_pb2.GetTransformsRequest(), timeout=5)
    assert list(reply.mime_types) == ["image/avif", "image/heic", "image/heif", "image/jpeg", "image/png", "image/webp"]
    assert list(reply.names) == ["image_metadata"]


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("mode", ["strip-location", "strip-all"])
def test_location_goes_and_pixels_stay(thumbnailer, ext, mode):
    data = with_gps(ext)
    assert gps_of(data)
    result, body = transform(thumbnailer.channel, data, FORMATS[ext][1], mode)
    assert result.changed and result.transforms == ["image_metadata"]
    assert gps_of(body) == {}
    assert orientation_of(body) == orientation_of(data)
    assert pixels(body) == pixels(data)
    kept = opened(body).getexif().get(MAKE)
    assert kept == ("Camera Maker" if mode == "strip-location" else None)
    assert list(result.removed) == (["exif.gps"] if mode == "strip-location" else ["exif"])
    if ext in ("heic", "avif"):
        assert len(body) == len(data)  # edited in place: no box moves


@pytest.mark.parametrize("ext", FORMATS)
def test_nothing_to_remove_is_answered_unchanged(thumbnailer, ext):
    data = image_bytes(ext, exif_with_gps(gps=False))
    result, body = transform(thumbnailer.channel, data, FORMATS[ext][1])
    assert not result.changed and body == b"" and result.size == 0


def test_a_stripped_image_has_nothing_more_to_strip():
    for ext, (_, mime) in FORMATS.items():
        for mode in ("strip-location", "strip-all"):
            once, _ = STRIPPERS[mime](with_gps(ext), mode)
            assert STRIPPERS[mime](once, mode) == (None, [])


def test_errors_are_the_shared_model(thumbnailer):
    with pytest.raises(grpc.RpcError) as caught:
        transform(thumbnailer.channel, b"%PDF-1.4\n", "application/pdf")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as caught:
        transform(thumbnailer.channel, with_gps("jpg"), "image/jpeg", mode="remove-everything")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        transform(thumbnailer.channel, b"\xff\xd8\xff\xe1\xff\xff" + b"Exif\x00\x00" + b"\x00" * 20, "image/jpeg")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_hostile_exif_never_crashes_the_strippers():
    """Random damage to the metadata of every format: the strippers answer or raise
    InvalidInput, nothing else, and whatever they answer has no location left."""
    rng = random.Random(17)
    for ext, (_, mime) in FORMATS.items():
        original = with_gps(ext)
        start = max(original.find(b"MM\x00*"), original.find(b"II*\x00"))
        assert start > 0
        for _ in range(150):
            data = bytearray(original)
            for _ in range(rng.randint(1, 8)):
                at = start + rng.randrange(0, 160)
                if at < len(data):
                    data[at] = rng.randrange(256)
            for mode in ("strip-location", "strip-all"):
                try:
                    new, removed = STRIPPERS[mime](bytes(data), mode)
                except InvalidInput:
                    continue
                assert new is None or isinstance(new, bytes)


def test_edit_exif_handles_loops_and_offsets_outside():
    tiff = bytearray(exif_with_gps())[6:] if exif_with_gps().startswith(b"Exif") else bytearray(exif_with_gps())
    endian = "little" if tiff[:2] == b"II" else "big"
    ifd0 = int.from_bytes(tiff[4:8], endian)
    count = int.from_bytes(tiff[ifd0:ifd0 + 2], endian)
    looped = bytearray(tiff)
    looped[ifd0 + 2 + 12 * count:ifd0 + 6 + 12 * count] = ifd0.to_bytes(4, endian)  # next IFD: itself
    new, removed = edit_exif(bytes(looped), "strip-location")
    assert removed == ["exif.gps"] and len(new) == len(looped)
    outside = bytearray(tiff)
    outside[4:8] = (len(tiff) + 100).to_bytes(4, endian)
    assert edit_exif(bytes(outside), "strip-location") == (bytes(len(tiff)), ["exif (unreadable)"])


# --- a plugin's transform ---

def upper_comment(source, mime_type, parameters):
    """Adds a JPEG comment after the SOI marker (the test's transform: module-level, picklable)."""
    data = source.read()
    comment = b"checked"
    return TransformResult(data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:],
                           ("nothing",))


class CommentPlugin:
    @hookimpl
    def upload_transforms(self):
        yield Transform("comment", ("image/jpeg",), upper_comment)


def test_a_plugin_transform_runs_after_the_built_in_one(start_thumbnailer):
    running = start_thumbnailer(pm=thumbnail_server.create_plugins(env={}, extra_plugins=[CommentPlugin()]))
    data = with_gps("jpg")
    result, body = transform(running.channel, data, "image/jpeg")
    assert list(result.transforms) == ["image_metadata", "comment"]
    assert list(result.removed) == ["exif.gps", "nothing"]
    assert b"checked" in body and gps_of(body) == {} and pixels(body) == pixels(data)


def test_every_picture_of_a_multi_picture_jpeg_loses_its_location():
    # Phones write MPF: a first picture with an APP2 "MPF" index, then further pictures, each
    # with EXIF of its own (location included). Each loses it, the further ones in place at their
    # own length, so that the index's offsets stay right.
    first, second = with_gps("jpg"), with_gps("jpg", orientation=1)
    mpf = b"\xff\xe2" + (10).to_bytes(2, "big") + b"MPF\x00" + bytes(4)
    data = first[:2] + mpf + first[2:] + second
    new, removed = strip_jpeg(data, "strip-location")
    assert new is not None and "exif.gps" in removed
    assert gps_of(new) == {} and pixels(new) == pixels(data)
    further = new[len(new) - len(second):]
    assert further[:3] == b"\xff\xd8\xff" and gps_of(second) and gps_of(further) == {}
    assert pixels(further) == pixels(second)
    assert new[:len(new) - len(second)] == strip_jpeg(first[:2] + mpf + first[2:], "strip-location")[0]


def test_a_real_cameras_multi_picture_jpeg_keeps_both_pictures_and_its_index(start_thumbnailer):
    # A stereo camera's MPO (tests/fixtures/README.md): strip-all takes every picture's EXIF,
    # and the MPF index still finds the second picture, pixels unchanged.
    running = start_thumbnailer()
    data = (Path(__file__).parent.parent / "fixtures" / "camera.mpo").read_bytes()
    result, _ = transform(running.channel, data, "image/jpeg")
    assert not result.changed  # no location in it: stored byte for byte
    result, body = transform(running.channel, data, "image/jpeg", mode="strip-all")
    assert result.changed and len(body) < len(data)
    before, after = opened(data), opened(body)
    assert before.n_frames == after.n_frames == 2
    for frame in range(2):
        before.seek(frame)
        after.seek(frame)
        assert before.getexif() and not after.getexif().get(0x010F)  # its camera make, among the rest
        assert before.tobytes() == after.tobytes()


def test_xmp_naming_a_place_in_any_case_goes():
    # DJI's drones write drone-dji:GpsLatitude / GpsLongitude in their XMP.
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" '
           b'drone-dji:GpsLatitude="48.8582" drone-dji:GpsLongitude="2.2945"/></rdf:RDF></x:xmpmeta>')
    data = image_bytes("jpg", xmp=xmp)
    assert b"GpsLatitude" in data
    new, removed = strip_jpeg(data, "strip-location")
    assert new is not None and b"GpsLatitude" not in new and "xmp" in removed
    assert pixels(new) == pixels(data)

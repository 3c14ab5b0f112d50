"""Thumbnails: bounded size, aspect kept, orientation applied, bad input refused cleanly."""
from __future__ import annotations

import io

import grpc
import pytest
from PIL import Image

from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc
from tests.conftest import render
from tests.images import encode, jpeg_with_orientation, png_header_only
from tests.samples import make_sample
from thumbnail_service.config import Settings


def open_thumb(reply) -> Image.Image:
    im = Image.open(io.BytesIO(reply.data))
    assert (im.width, im.height) == (reply.width, reply.height)
    assert Image.MIME[im.format] == reply.mime_type
    return im


@pytest.mark.parametrize("size,expected", [
    ((800, 400), (200, 100)),
    ((400, 800), (100, 200)),
    ((1000, 1000), (200, 200)),
    ((150, 90), (150, 90)),   # never enlarged
])
def test_thumbnail_fits_200_and_keeps_aspect(thumbnailer, size, expected):
    reply = render(thumbnailer.channel, encode(Image.new("RGB", size, "teal"), "JPEG"), "image/jpeg")
    assert (reply.width, reply.height) == expected
    assert open_thumb(reply).format == "JPEG"


@pytest.mark.parametrize("ext,mime", [("jpg", "image/jpeg"), ("png", "image/png"),
                                      ("gif", "image/gif"), ("webp", "image/webp")])
def test_every_raster_sample_renders(thumbnailer, tmp_path, ext, mime):
    reply = render(thumbnailer.channel, make_sample(ext, tmp_path).read_bytes(), mime)
    assert (reply.width, reply.height) == (64, 48)
    open_thumb(reply)


@pytest.mark.parametrize("orientation,expected", [(1, (200, 100)), (3, (200, 100)),
                                                  (6, (100, 200)), (8, (100, 200))])
def test_exif_orientation_is_applied(thumbnailer, orientation, expected):
    data = jpeg_with_orientation(400, 200, orientation)
    im = open_thumb(render(thumbnailer.channel, data, "image/jpeg")).convert("RGB")
    assert im.size == expected
    # The red third was on the left as stored; check where display orientation puts it.
    red_corner = {1: (5, 50), 3: (195, 50), 6: (50, 5), 8: (50, 195)}[orientation]
    r, g, b = im.getpixel(red_corner)
    assert r > 180 and b < 80


def test_transparency_is_kept(thumbnailer):
    im = Image.new("RGBA", (400, 400), (255, 0, 0, 0))
    im.paste((0, 0, 255, 255), (0, 0, 200, 400))
    thumb = open_thumb(render(thumbnailer.channel, encode(im, "PNG"), "image/png"))
    assert thumb.format == "PNG" and thumb.mode == "RGBA"
    assert thumb.getpixel((190, 100))[3] == 0
    assert thumb.getpixel((10, 100))[3] == 255


def test_palette_gif_transparency_is_kept(thumbnailer):
    im = Image.new("P", (300, 300), 0)
    im.putpalette([255, 255, 255, 0, 128, 0] + [0] * 762)
    im.paste(1, (0, 0, 150, 300))
    thumb = open_thumb(render(thumbnailer.channel, encode(im, "GIF", transparency=0), "image/gif"))
    assert thumb.mode == "RGBA"
    assert thumb.getpixel((190, 100))[3] == 0
    assert thumb.getpixel((10, 100))[3] == 255


def test_animated_gif_gives_its_first_frame(thumbnailer):
    frames = [Image.new("RGB", (300, 300), colour) for colour in ("red", "lime", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    thumb = open_thumb(render(thumbnailer.channel, data, "image/gif")).convert("RGB")
    r, g, b = thumb.getpixel((100, 100))
    assert r > 200 and g < 60 and b < 60


def test_large_photo_is_reduced_in_draft_mode(thumbnailer):
    # 6000x4000 = 24 MP; rendered at a fraction of full size through JPEG draft.
    data = encode(Image.new("RGB", (6000, 4000), "orange"), "JPEG", quality=70)
    reply = render(thumbnailer.channel, data, "image/jpeg")
    assert (reply.width, reply.height) == (200, 133)


def test_caller_can_ask_for_another_box(thumbnailer):
    data = encode(Image.new("RGB", (1000, 500)), "PNG")
    reply = render(thumbnailer.channel, data, "image/png", box=(64, 64))
    assert (reply.width, reply.height) == (64, 32)


def test_default_size_follows_the_setting(start_thumbnailer):
    running = start_thumbnailer(settings=Settings(size=120))
    reply = render(running.channel, encode(Image.new("RGB", (600, 300)), "PNG"), "image/png")
    assert (reply.width, reply.height) == (120, 60)


def rpc_error(channel, data, mime, box=(0, 0)) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        render(channel, data, mime, box)
    assert info.value.code() != grpc.StatusCode.UNKNOWN
    return info.value


def test_corrupt_image_is_invalid_argument(thumbnailer):
    error = rpc_error(thumbnailer.channel, b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10, "image/jpeg")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image" in error.details()


@pytest.mark.parametrize("fmt,mime", [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")])
def test_truncated_image_is_invalid_argument(thumbnailer, fmt, mime):
    im = Image.effect_noise((400, 300), 64).convert("RGB")
    data = encode(im, fmt)
    error = rpc_error(thumbnailer.channel, data[: len(data) // 2], mime)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated" in error.details() or "damaged" in error.details()


def test_pixel_flood_is_resource_exhausted_without_decoding(thumbnailer):
    error = rpc_error(thumbnailer.channel, png_header_only(60000, 60000), "image/png")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_type_without_renderer_is_failed_precondition(thumbnailer):
    error = rpc_error(thumbnailer.channel, b"PK\x03\x04", "application/zip")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "application/zip" in error.details()


def test_empty_file_is_invalid_argument(thumbnailer):
    assert rpc_error(thumbnailer.channel, b"", "image/png").code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("box", [(5000, 5000), (-1, 10)])
def test_absurd_box_is_invalid_argument(thumbnailer, box):
    data = encode(Image.new("RGB", (10, 10)), "PNG")
    assert rpc_error(thumbnailer.channel, data, "image/png", box).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_input_over_the_limit_is_resource_exhausted(start_thumbnailer):
    running = start_thumbnailer(settings=Settings(max_input=10_000))
    data = encode(Image.effect_noise((300, 300), 90).convert("RGB"), "PNG")
    assert len(data) > 10_000
    assert rpc_error(running.channel, data, "image/png").code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_options_first_is_required(thumbnailer):
    stub = thumbnail_pb2_grpc.ThumbnailStub(thumbnailer.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Render(iter([thumbnail_pb2.RenderRequest(chunk=b"abc")]), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_renderers_are_listed(thumbnailer):
    stub = thumbnail_pb2_grpc.ThumbnailStub(thumbnailer.channel)
    types = stub.GetRenderers(thumbnail_pb2.GetRenderersRequest()).mime_types
    assert {"image/jpeg", "image/png", "image/gif", "image/webp"} <= set(types)


@pytest.mark.parametrize("fmt,claimed", [("PNG", "image/jpeg"), ("TIFF", "image/png"), ("GIF", "image/webp")])
def test_the_detected_type_picks_the_decoder_not_the_bytes(thumbnailer, fmt, claimed):
    """A file judged one type is never parsed by another type's decoder."""
    data = encode(Image.new("RGB", (40, 30), "teal"), fmt)
    error = rpc_error(thumbnailer.channel, data, claimed)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The same bytes under their own type render.
    assert render(thumbnailer.channel, data, Image.MIME[fmt])

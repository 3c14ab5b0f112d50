"""The built-in renderer: raster images through Pillow.

Decoding is bounded: JPEGs are decoded in draft mode at the smallest scale
that still covers the box (Image.thumbnail does this), only the first frame of
an animation is read, and Pillow's pixel guard refuses absurd sizes before
any pixel is allocated.
"""
from __future__ import annotations

import logging
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from protos.errors import InvalidInput, TooLarge
from protos.plugins import hookimpl
from thumbnail_service.hookspecs import Renderer

log = logging.getLogger("upload.thumbnail")

RASTER_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff")
# EXIF orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}


def _has_transparency(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info


def render_raster(source: BinaryIO, box: tuple[int, int]) -> Image.Image:
    # No `with`: closing an image destroys its pixels, and the caller owns `source`.
    try:
        im = Image.open(source)
        if im.width * im.height > Image.MAX_IMAGE_PIXELS:
            raise TooLarge(
                f"The image is {im.width}x{im.height} pixels, more than the "
                f"{Image.MAX_IMAGE_PIXELS} this service renders."
            )
        orientation = im.getexif().get(ImageOps.ExifTags.Base.Orientation, 1)
        if orientation in _TRANSPOSED:
            box = (box[1], box[0])
        if im.mode in ("P", "1"):
            # Palette images resize only with nearest-neighbour; convert first.
            im = im.convert("RGBA" if _has_transparency(im) else "RGB")
        im.thumbnail(box)
        im = ImageOps.exif_transpose(im)
        if im.mode not in ("RGB", "RGBA", "L", "LA"):
            im = im.convert("RGBA" if _has_transparency(im) else "RGB")
        im.load()
        return im
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"The image has too many pixels to render safely ({exc}).") from None
    except UnidentifiedImageError:
        raise InvalidInput("The file is not an image this service can read.") from None
    except MemoryError:
        raise TooLarge("The image needs more memory to render than this service allows.") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as exc:
        # Truncated and malformed files surface as any of these from Pillow's decoders.
        log.info("unreadable image: %s", exc)
        raise InvalidInput(f"The image is damaged or truncated and cannot be rendered ({exc}).") from None

@hookimpl
def upload_thumbnail_renderers():
    return [Renderer("pillow", RASTER_TYPES, render_raster)]

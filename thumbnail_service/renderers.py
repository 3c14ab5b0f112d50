"""The built-in renderer of images: raster images through Pillow, HEIC/HEIF
through pillow-heif's opener (libheif), AVIF through Pillow's own (libavif).

Decoding is bounded: JPEGs are decoded in draft mode at the smallest scale
that still leaves twice the thumbnail's size (a HEIC's embedded thumbnail is
used likewise when it is large enough), only the first frame of an animation
is read, and Pillow's pixel guard refuses absurd sizes before any pixel is
allocated. The other built-in renderers are plugins of their own: PDFs
(``thumbnail_service.pdf``) and videos (``thumbnail_service.video``).
"""
from __future__ import annotations

import logging
from functools import partial
from math import ceil, floor
from typing import BinaryIO

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from protos.errors import InvalidInput, TooLarge
from protos.plugins import hookimpl
from thumbnail_service.hookspecs import Renderer

log = logging.getLogger("upload.thumbnail")

# The built-in plugins, registered first (the validator's are in validator_service.rules).
DEFAULT_PLUGINS = (__name__, "thumbnail_service.pdf", "thumbnail_service.video", "thumbnail_service.metadata")

# HEIF images open through Pillow once libheif's opener is registered (here, so in the fork
# server that imports this module, and so in every render's process). It applies the
# image's own turns and crops as it decodes (and resets the EXIF orientation it has used);
# no depth maps or auxiliary images are read.
pillow_heif.register_heif_opener(thumbnails=True, depth_images=False, aux_images=False)

# The Pillow decoders each type may use: the type libmagic detected picks the
# decoder, never the bytes (a file judged a PNG is not parsed by the TIFF decoder).
PILLOW_FORMATS = {
    "image/jpeg": ("JPEG", "MPO"), "image/png": ("PNG",), "image/gif": ("GIF",), "image/webp": ("WEBP",),
    "image/bmp": ("BMP", "DIB"), "image/tiff": ("TIFF",),
    "image/heic": ("HEIF",), "image/heif": ("HEIF",), "image/avif": ("AVIF",),
}
RASTER_TYPES = tuple(PILLOW_FORMATS)
# EXIF orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}


def _has_transparency(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info


def _fit(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """The size Image.thumbnail gives an image of ``size`` in ``box`` (its rule,
    ported so output sizes stay as they were): the limiting side fills the box,
    the other is floor or ceil, whichever keeps the aspect ratio closer."""
    (width, height), (box_w, box_h) = size, box
    aspect = width / height
    if box_w / box_h >= aspect:
        exact = box_h * aspect
        return max(1, min(floor(exact), ceil(exact), key=lambda n: abs(aspect - n / box_h))), box_h
    exact = box_w / aspect
    return box_w, max(1, min(floor(exact), ceil(exact), key=lambda n: abs(aspect - box_w / n) if n else 0))


def _shrink(im: Image.Image, box: tuple[int, int]) -> Image.Image:
    """Image.thumbnail, except for the size asked of JPEG draft mode.

    thumbnail() asks draft() for twice the *box*, so a 4:3 photo in a square
    box decodes at 1/4 scale where 1/8 still leaves twice the thumbnail's
    height (libvips uses 1/8 too). Asking for twice the thumbnail's own size
    keeps thumbnail's quality margin (the bicubic step reduces at least 2x).
    Drafting first and then calling thumbnail() would lose draft's crop box,
    which trims the partial last block of sizes not divisible by the scale,
    hence the resize here. Formats without draft take thumbnail's path.
    """
    if im.width <= box[0] and im.height <= box[1]:
        return im
    size = _fit(im.size, box)
    drafted = im.draft(None, (size[0] * 2, size[1] * 2))
    crop = drafted[1] if drafted else None
    return im.resize(size, Image.Resampling.BICUBIC, box=crop, reducing_gap=2.0)


def render_raster(source: BinaryIO, box: tuple[int, int], formats: tuple[str, ...] | None = None) -> Image.Image:
    # No `with`: closing an image destroys its pixels, and the caller owns `source`.
    try:
        if formats and "WEBP" in formats:
            _check_webp_canvas(source)
        im = Image.open(source, formats=formats)
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
        im = _shrink(im, box)
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
        raise  # past the render's memory budget: the render process says so (OverBudget)
    except RuntimeError as exc:
        # libheif's errors, through pillow-heif; its own limit on pixels is a security limit.
        if "Security limit" in str(exc):
            raise TooLarge(f"The image has too many pixels to render safely ({exc}).") from None
        log.info("unreadable image: %s", exc)
        raise InvalidInput(f"The image is damaged or truncated and cannot be rendered ({exc}).") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError) as exc:
        # Truncated and malformed files surface as any of these from Pillow's decoders.
        log.info("unreadable image: %s", exc)
        raise InvalidInput(f"The image is damaged or truncated and cannot be rendered ({exc}).") from None

def _check_webp_canvas(source: BinaryIO) -> None:
    """Pillow's WebP decoder allocates the whole canvas as it opens the file, before
    its pixel guard can look: under the render's memory budget a flood then fails as
    a damaged file. So the canvas the header declares is checked first (the
    validator reads the same header; the services share no code but protos)."""
    head = source.read(30)
    source.seek(0)
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
        return  # not a WebP this can read: Pillow says why
    chunk = head[12:16]
    if chunk == b"VP8X":
        width, height = int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    elif chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8 ":
        width, height = int.from_bytes(head[26:28], "little") & 0x3FFF, int.from_bytes(head[28:30], "little") & 0x3FFF
    else:
        return
    if width * height > Image.MAX_IMAGE_PIXELS:
        raise TooLarge(f"The image is {width}x{height} pixels, more than the "
                       f"{Image.MAX_IMAGE_PIXELS} this service renders.")


@hookimpl
def upload_thumbnail_renderers():
    return [Renderer("pillow", (mime,), partial(render_raster, formats=formats))
            for mime, formats in PILLOW_FORMATS.items()]

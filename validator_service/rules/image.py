"""Image limits, read from the header only: no pixel is ever decoded here.

A PNG that declares 60000x60000 pixels is refused from its first 33 bytes.
"""
from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from protos.plugins import hookimpl
from validator_service.fileview import MAGIC_HEAD
from validator_service.hookspecs import Rejection

# Enough for headers behind large EXIF/ICC/XMP segments; capped by VALIDATOR_MAX_HEAD.
LONG_HEAD = 1024 * 1024


def _open_header(data: bytes):
    """Pillow's lazy open: parses the header, allocates and decodes nothing.
    Its own bomb guard (Image.MAX_IMAGE_PIXELS) raises on absurd sizes."""
    return Image.open(io.BytesIO(data))


def read_size(file) -> tuple[int, int] | None:
    """(width, height) from the header; None when the head holds no readable header.
    Raises Image.DecompressionBombError for absurd pixel counts."""
    for n in (MAGIC_HEAD, LONG_HEAD):
        try:
            with _open_header(file.head(n)) as im:
                return im.size
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            if len(file.head(n)) < n:  # no more bytes to try with
                return None
    return None


@hookimpl(tryfirst=True)
def upload_check(file, policy):
    file_type = policy.type_for(file.extension)
    if file_type is None or not file_type.image:
        return None
    try:
        size = read_size(file)
    except Image.DecompressionBombError:
        return Rejection(
            "pixel_flood",
            "The image declares far more pixels than it could reasonably hold "
            "(a decompression bomb); it was not opened.",
        )
    if size is None:
        return Rejection("corrupt_image", "The image header cannot be read; the file is damaged or not an image.")
    width, height = size
    file.image_size = size
    limit = policy.max_image_dimension
    if width > limit or height > limit:
        return Rejection(
            "image_too_large",
            f"The image is {width}x{height} pixels; the longest side allowed is {limit} pixels.",
        )
    return None

"""Image limits, read from the header only: no pixel is ever decoded here.

A PNG that declares 60000x60000 pixels is refused from its first 33 bytes, and
a 40 MiB WebP is measured from its first 30, a HEIC or AVIF photo from its meta
box (rules/imageheader.py): a file is never called damaged because the
validator saw only its head.
"""
from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from protos.plugins import hookimpl
from protos.text import human_size
from validator_service.fileview import MAGIC_HEAD
from validator_service.hookspecs import Rejection
from validator_service.rules.imageheader import Damaged, UnknownFormat, dimensions


def read_size(file, longest: int) -> tuple[int, int] | None:
    """(width, height) from the header, read from the first 64 KiB or, for a
    JPEG frame header behind large EXIF/ICC/XMP segments, up to ``longest``;
    None when the header goes on past that (or past what was sent). Raises Damaged."""
    for n in (MAGIC_HEAD, longest):
        head = file.head(n)
        try:
            size = dimensions(head)
        except UnknownFormat as unknown:
            # Not one of those read here: an image type a plugin added, or not an image.
            size = _pillow_size(file, longest)
            if size is None:
                raise Damaged(str(unknown)) from None
            return size
        if size is not None or len(head) < n:  # no more bytes to try with
            break
    if size is None and file.ends_in_head:
        raise Damaged("the file ends before its header does")
    return size if size is not None else dimensions(head, cut=True)


def _pillow_size(file, longest: int) -> tuple[int, int] | None:
    """An image type a plugin added (``FileType(..., image=True)``: BMP, TIFF...),
    measured by Pillow's lazy open, which parses the header and decodes nothing.
    Raises Image.DecompressionBombError for absurd pixel counts."""
    for n in (MAGIC_HEAD, longest):
        head = file.head(n)
        try:
            with Image.open(io.BytesIO(head)) as im:
                return im.size
        except Image.DecompressionBombError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            if len(head) < n:  # no more bytes to try with
                return None
    return None


def pixel_flood(size: tuple[int, int]) -> bool:
    # Pillow's own guard: it refuses to open twice MAX_IMAGE_PIXELS, and so does the thumbnail service.
    return size[0] * size[1] > 2 * Image.MAX_IMAGE_PIXELS


@hookimpl(tryfirst=True)
def upload_check(file, policy):
    file_type = policy.type_for(file.extension)
    if file_type is None or not file_type.image:
        return None
    try:
        size = read_size(file, policy.head_bytes)
    except Damaged as exc:
        return Rejection("corrupt_image", f"The image header cannot be read: {exc}.")
    except Image.DecompressionBombError:
        size = (2 * Image.MAX_IMAGE_PIXELS + 1, 1)  # past Pillow's own guard: a flood
    if size is None:
        seen = len(file.head(policy.head_bytes))
        where = "all the validator reads (VALIDATOR_MAX_HEAD)" if seen >= policy.head_bytes else "all that was sent"
        return Rejection(
            "image_header_out_of_reach",
            f"The image's header lies past its first {human_size(seen)}, {where}, "
            "so its dimensions cannot be checked.",
        )
    if pixel_flood(size):
        return Rejection(
            "pixel_flood",
            "The image declares far more pixels than it could reasonably hold "
            "(a decompression bomb); it was not opened.",
        )
    width, height = size
    file.image_size = size
    limit = policy.max_image_dimension
    if width > limit or height > limit:
        return Rejection(
            "image_too_large",
            f"The image is {width}x{height} pixels; the longest side allowed is {limit} pixels.",
        )
    return None

"""The shipped transform: image metadata stripping (IMAGE_METADATA), lossless.

Only containers are edited, never pixels: JPEG segments (jpeg), PNG chunks (png), WebP
RIFF chunks (webp), the Exif and XMP items of a HEIC/HEIF or AVIF file (isobmff). What
decodes to pixels is copied as it is, so the stored image decodes to exactly the uploaded
pixels. EXIF is edited in exif, IPTC-IIM and the Photoshop IRB that carries it in iptc and
photoshop; common holds what they share. Imports go one way: the containers use exif,
photoshop and iptc, never the other way round.

- ``strip-location``: the GPS of the EXIF goes (same length, no offset moves); XMP that
  names a location (``exif:GPS...``, ``photoshop:City``...) goes whole; IPTC loses its
  location datasets (2:26, 2:27, 2:90, 2:92, 2:95, 2:100, 2:101) and keeps the others,
  in a JPEG's APP13 and in a PNG's raw profiles alike.
- ``strip-all``: the EXIF becomes a minimal TIFF holding only Orientation (when it
  is not 1); XMP, IPTC (Photoshop IRB), comments and text chunks go. ICC profiles
  stay (they are how the pixels' colours are read).

EXIF or IPTC that cannot be parsed (truncated, offsets outside, ...) is removed whole
("exif (unreadable)", "iptc (unreadable)"), since what it holds cannot be known; a
container that cannot be parsed is InvalidInput (the gateway refuses the upload:
nothing is stored that may still carry a location).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import BinaryIO

from protos.errors import InvalidInput
from protos.plugins import hookimpl
from thumbnail_service.metadata.exif import edit_exif, minimal_exif
from thumbnail_service.metadata.isobmff import strip_heif
from thumbnail_service.metadata.jpeg import strip_jpeg
from thumbnail_service.metadata.png import strip_png
from thumbnail_service.metadata.webp import strip_webp
from thumbnail_service.types import Transform, TransformResult

__all__ = ["DEFAULT_MODE", "MIME_TYPES", "MODES", "STRIPPERS", "edit_exif", "minimal_exif", "strip_heif",
           "strip_jpeg", "strip_metadata", "strip_png", "strip_webp", "upload_transforms"]

MODES = ("strip-location", "strip-all")
DEFAULT_MODE = "strip-location"
MIME_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic", "image/heif", "image/avif")

STRIPPERS = {
    "image/jpeg": strip_jpeg, "image/png": strip_png, "image/webp": strip_webp,
    "image/heic": strip_heif, "image/heif": strip_heif,
    # AVIF is HEIF too (AV1-coded, brands avif/avis): its Exif and XMP are items of the meta
    # box as a HEIC's are, so the same in-place edit serves.
    "image/avif": strip_heif,
}


def strip_metadata(source: BinaryIO, mime_type: str, parameters: Mapping[str, str]) -> TransformResult | None:
    """The transform: IMAGE_METADATA's mode comes as the ``image_metadata`` parameter."""
    mode = parameters.get("image_metadata", DEFAULT_MODE)
    if mode == "keep":
        return None
    if mode not in MODES:
        raise InvalidInput(f"image_metadata must be one of keep, {', '.join(MODES)}; got {mode!r}.")
    data = source.read()
    new, removed = STRIPPERS[mime_type](data, mode)
    if new is None or new == data:
        return None
    return TransformResult(new, tuple(removed))


@hookimpl
def upload_transforms():
    yield Transform("image_metadata", MIME_TYPES, strip_metadata)

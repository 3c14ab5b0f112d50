"""What the validator's hooks give back: small frozen dataclasses (the hookspecs
re-export them, so a plugin imports everything from ``validator_service.hookspecs``)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileType:
    """An allowed extension and every MIME type libmagic may report for a
    genuine file of that kind (the first is the canonical type)."""

    extension: str
    mime_types: tuple[str, ...]
    # A raster image: dimension limits apply and thumbnails are made.
    image: bool = False


@dataclass(frozen=True)
class Rejection:
    """A refusal: ``code`` is stable, for programs; ``message`` is for people."""

    code: str
    message: str

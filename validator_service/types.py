"""What the validator's hooks give back: small frozen dataclasses (the hookspecs
re-export them, so a plugin imports everything from ``validator_service.hookspecs``)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


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


class Scanner(Protocol):
    """One whole-file rule's look at one file, made by ``WholeFileRule.open``.

    ``feed`` gets every byte of the file in order, as it arrives (the bytes the
    head rules read included); ``finish`` is called once the last byte has been
    fed, and only if no other rule has refused the file first; ``close`` is
    always called last, whatever happened (a refusal, an error, a caller gone).
    Raise ``protos.errors.Unavailable`` (or another ``UploadError``) from any of
    them when the rule cannot judge now, e.g. its scanner cannot be reached: the
    call then fails with that status, and the file is not accepted.
    """

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> Rejection | None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class WholeFileRule:
    """A rule that reads every byte of every file (a virus scanner): ``open(file)``
    is called before the first byte with the file's ``FileView`` (its name,
    extension, declared size and type are known then; read no bytes from it)
    and returns a ``Scanner``, or None when it has nothing to look for in this
    file. ``name`` is what the verdict's decisions and reasons call the rule."""

    name: str
    open: Callable[[Any], Scanner | None]

"""What the rest of the gateway may ask of a storage backend (``Storage``), and
what every backend shares: stored names, stats and the entries reconcile reads.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from flask import current_app

# Stored names: 128 random bits in hex, optionally a validated extension.
NAME_RE = re.compile(r"^[0-9a-f]{32}(\.[a-z0-9]{1,16})?$")
TEMP_SUFFIX = ".part"


def new_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Stat:
    size: int
    mtime: float  # seconds since the epoch


class Storage(Protocol):
    """What callers may ask of a backend. Areas are "files" and "thumbnails";
    names are stored names (NAME_RE), anything else is refused or not found."""

    # Whether stored bytes are files on this machine: LocalStorage's own ``path()``,
    # ``partial_path()`` and ``place()`` (tus uploads on local disk) then apply.
    local: bool

    def create_temp(self, area: str, name: str):
        """Somewhere to stream a new file (``write_temp``); invisible until ``commit``."""

    def write_temp(self, temp, data) -> None:
        """Append ``data`` (a view its caller may reuse once this returns)."""

    def read_temp(self, temp):
        """A function giving the temp's bytes from the start (an iterator of chunks) each
        time it is called, or None when they cannot be read back before ``commit``."""

    def commit(self, temp) -> None:
        """Make the finished temp the stored file, atomically."""

    def discard(self, temp) -> None:
        """Give up a temp; nothing of it stays."""

    def write(self, area: str, name: str, data: bytes) -> None:
        """Store a small blob (a thumbnail) atomically."""

    def open(self, area: str, name: str) -> BinaryIO | None:
        """The stored bytes as a readable stream, or None."""

    def stat(self, area: str, name: str) -> Stat | None: ...

    def exists(self, area: str, name: str) -> bool: ...

    def delete(self, area: str, name: str) -> None:
        """Remove stored bytes; deleting what is not there is fine."""

    def entries(self, area: str) -> Iterator["Entry"]:
        """Everything stored in an area, classified (for reconcile)."""

    def remove_entry(self, entry: "Entry") -> None: ...


@dataclass(frozen=True)
class Entry:
    # stored: a final name; temp: a POST upload or thumbnail being written;
    # partial: a resumable (tus) upload's bytes; other: nothing we made.
    kind: str
    filename: str
    path: Path | str  # a local path, or the backend's own handle (an S3 key, an upload)
    size: int
    mtime: float


def entry_kind(filename: str) -> str:
    if NAME_RE.fullmatch(filename):
        return "stored"
    if filename.startswith(".") and filename.endswith(TEMP_SUFFIX):
        inner = filename[1:-len(TEMP_SUFFIX)]
        if NAME_RE.fullmatch(inner):
            return "partial"
        name, _, tag = inner.rpartition(".")
        if NAME_RE.fullmatch(name) and re.fullmatch(r"[0-9a-f]{8}", tag):
            return "temp"
    return "other"


def storage() -> Storage:
    """The app's backend (made by ``gateway.storage.init_app``)."""
    return current_app.extensions["storage"]

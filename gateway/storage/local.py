"""Where the bytes live: ``Storage`` is what the rest of the gateway may ask of
a backend; ``LocalStorage`` (here, the default) and ``S3Storage``
(gateway/s3_storage.py, STORAGE=s3) implement it.

Local disk: every write goes to a temporary file in the same folder as its
final place (same filesystem, so the rename is atomic), and only a finished,
accepted file is renamed into place. Files are spread over two levels of
sub-folders named after the first hex digits of their random names.
"""
from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

from protos.streaming import write_all

# Stored names: 128 random bits in hex, optionally a validated extension.
NAME_RE = re.compile(r"^[0-9a-f]{32}(\.[a-z0-9]{1,16})?$")
TEMP_SUFFIX = ".part"


def new_id() -> str:
    return secrets.token_hex(16)


@dataclass
class TempFile:
    path: Path
    final: Path
    handle: BinaryIO


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


class LocalStorage:
    local = True

    def __init__(self, root: str | os.PathLike, fsync: bool = False):
        self.root = Path(root).resolve()
        self.fsync = fsync
        self.areas = {"files": self.root / "files", "thumbnails": self.root / "thumbnails"}
        for folder in self.areas.values():
            folder.mkdir(parents=True, exist_ok=True)

    def path(self, area: str, name: str) -> Path | None:
        """The path of a stored name, or None for anything that is not one of
        our names (so `../x`, absolute paths and the like never reach the disk)."""
        if not NAME_RE.fullmatch(name):
            return None
        return self.areas[area] / name[:2] / name[2:4] / name

    def create_temp(self, area: str, name: str) -> TempFile:
        final = self.path(area, name)
        if final is None:
            raise ValueError(f"not a stored name: {name!r}")
        temp = final.with_name(f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        # O_EXCL: never follow or reuse something already there.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(temp, flags, 0o640)
        except FileNotFoundError:  # the first file of its sub-folder (asking every time cost more)
            final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, flags, 0o640)
        return TempFile(temp, final, os.fdopen(fd, "wb", buffering=0))

    def write_temp(self, temp: TempFile, data) -> None:
        write_all(temp.handle, data)  # unbuffered: a filling disk may take only part of a write

    def commit(self, temp: TempFile) -> None:
        """Rename the finished temp file into place (fsynced first if asked).

        Without fsync a killed process still never leaves a half file in
        place: the rename happens only after the last write, and the page
        cache outlives the process. Only a power cut can lose recent bytes."""
        if self.fsync:
            os.fsync(temp.handle.fileno())
        temp.handle.close()
        os.replace(temp.path, temp.final)

    def partial_path(self, area: str, name: str) -> Path:
        """Where a resumable upload collects its bytes across requests: a
        hidden file beside its final place (so placing it is a rename)."""
        final = self.path(area, name)
        if final is None:
            raise ValueError(f"not a stored name: {name!r}")
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{name}{TEMP_SUFFIX}")

    def place(self, path: Path, area: str, name: str) -> None:
        """Rename a complete, already-synced file into its final place."""
        os.replace(path, self.path(area, name))

    def discard(self, temp: TempFile) -> None:
        if not temp.handle.closed:
            temp.handle.close()
        temp.path.unlink(missing_ok=True)

    def write(self, area: str, name: str, data: bytes) -> None:
        """Store a small blob (a thumbnail) atomically."""
        temp = self.create_temp(area, name)
        try:
            write_all(temp.handle, data)  # unbuffered: a filling disk may take only part of a write
            self.commit(temp)
        except BaseException:
            self.discard(temp)
            raise

    def open(self, area: str, name: str) -> BinaryIO | None:
        path = self.path(area, name)
        try:
            return open(path, "rb") if path is not None else None
        except FileNotFoundError:
            return None

    def stat(self, area: str, name: str) -> Stat | None:
        path = self.path(area, name)
        try:
            result = path.stat() if path is not None else None
        except FileNotFoundError:
            return None
        return Stat(result.st_size, result.st_mtime) if result is not None else None

    def exists(self, area: str, name: str) -> bool:
        path = self.path(area, name)
        return path is not None and path.is_file()

    def delete(self, area: str, name: str) -> None:
        path = self.path(area, name)
        if path is not None:
            path.unlink(missing_ok=True)

    def remove_entry(self, entry: "Entry") -> None:
        entry.path.unlink(missing_ok=True)

    def entries(self, area: str) -> Iterator[Entry]:
        """Everything on disk in an area, classified by name (for reconcile)."""
        root = self.areas[area]
        for folder, _dirs, names in os.walk(root):
            for filename in names:
                path = Path(folder) / filename
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # removed while we walked
                yield Entry(_kind(filename), filename, path, stat.st_size, stat.st_mtime)


@dataclass(frozen=True)
class Entry:
    # stored: a final name; temp: a POST upload or thumbnail being written;
    # partial: a resumable (tus) upload's bytes; other: nothing we made.
    kind: str
    filename: str
    path: Path | str  # a local path, or the backend's own handle (an S3 key, an upload)
    size: int
    mtime: float


def _kind(filename: str) -> str:
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


def init_app(app) -> None:
    if app.config["STORAGE"] == "s3":
        from gateway.s3_storage import S3Storage

        # Checks the bucket: a missing or unreachable one stops the start with a sentence.
        app.extensions["storage"] = S3Storage.from_config(app.config)
        # DATA_DIR still holds the SQLite database (the default metadata backend).
        os.makedirs(app.config["DATA_DIR"], exist_ok=True)
    else:
        app.extensions["storage"] = LocalStorage(app.config["DATA_DIR"], fsync=app.config["UPLOAD_FSYNC"])


def storage() -> Storage:
    from flask import current_app

    return current_app.extensions["storage"]

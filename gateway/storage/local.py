"""Local disk, the default backend: every write goes to a temporary file in
the same folder as its final place (same filesystem, so the rename is atomic),
and only a finished, accepted file is renamed into place. Files are spread over
two levels of sub-folders named after the first hex digits of their random names.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from gateway.storage.base import NAME_RE, TEMP_SUFFIX, Entry, Stat, entry_kind
from protos.streaming import write_all


@dataclass
class TempFile:
    path: Path
    final: Path
    handle: BinaryIO


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

    def read_temp(self, temp: TempFile):
        """A function giving the temp's bytes so far from the start, in chunks, each
        time it is called (None: they cannot be read back; never so on local disk)."""
        def chunks():
            with open(temp.path, "rb") as source:
                while chunk := source.read(1024 * 1024):
                    yield chunk
        return chunks

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
                yield Entry(entry_kind(filename), filename, path, stat.st_size, stat.st_mtime)

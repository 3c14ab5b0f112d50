"""A file the renderer reads while the upload is still arriving.

The call's gRPC thread appends chunks as they are received; the renderer, on
a thread of its own, sees an ordinary read-only, seekable file. A read waits
until the bytes it asks for have arrived, so decoding overlaps the transfer
instead of following it, and from the renderer's side the file still holds
the whole upload (the plugin contract): a read comes back short only at the
real end, and anything that needs the end (read(), seek(0, 2)) waits for it.

The bytes live in the caller's SpooledTemporaryFile, so memory stays bounded
by its spool size whatever the upload's size. One lock guards that file's
single position, shared by the writer (always at the end) and the reader
(wherever it seeks).

There is deliberately no fileno() and no getvalue(): libtiff, for one, reads
straight from a file descriptor when it gets one, and would see a partial file.
"""
from __future__ import annotations

import io
import threading
from typing import IO


class UploadAborted(Exception):
    """Raised to the renderer when the upload failed before it ended (too
    large, malformed, client gone), so that it stops instead of waiting for
    bytes that will never come. The call reports the upload's own error.

    Not an OSError on purpose: Pillow and renderers report OSError as a
    damaged file, and this is not the file's fault."""


class IncomingFile(io.RawIOBase):
    def __init__(self, spool: IO[bytes]):
        super().__init__()
        self._spool = spool
        self._changed = threading.Condition()
        self._size = 0  # bytes received so far
        self._ended = False  # all of the upload has been received
        self._aborted = False
        self._pos = 0  # the reader's position

    # --- writer side: the thread receiving the stream ---

    @property
    def size(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        with self._changed:
            self._spool.seek(self._size)
            self._spool.write(data)
            self._size += len(data)
            self._changed.notify_all()

    def end(self) -> None:
        """All of the upload is here: reads past it now come back short."""
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def abort(self) -> None:
        """The upload failed: waiting and later reads raise UploadAborted."""
        with self._changed:
            self._aborted = True
            self._changed.notify_all()

    # --- reader side: the renderer ---

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._changed:
            self._check_open()
            if whence == io.SEEK_SET:
                base = 0
            elif whence == io.SEEK_CUR:
                base = self._pos
            elif whence == io.SEEK_END:
                self._wait_for(None)
                base = self._size
            else:
                raise ValueError(f"invalid whence ({whence})")
            if base + offset < 0:
                raise ValueError(f"negative seek position {base + offset}")
            # Past what has arrived is fine: the next read waits for it.
            self._pos = base + offset
            return self._pos

    def read(self, size: int | None = -1) -> bytes:
        whole = size is None or size < 0
        with self._changed:
            self._check_open()
            self._wait_for(None if whole else self._pos + size)
            self._spool.seek(self._pos)
            data = self._spool.read(-1 if whole else size)
            self._pos += len(data)
            return data

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _wait_for(self, end: int | None) -> None:
        """With the lock held: until ``end`` bytes have arrived (None: all of
        them) or the upload has ended; raises if it failed meanwhile."""
        while not (self._aborted or self._ended or (end is not None and self._size >= end)):
            self._changed.wait()
        if self._aborted:
            raise UploadAborted("The upload failed before the renderer had all of it.")

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file.")

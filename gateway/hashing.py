"""sha256 of a stream, computed on a thread of its own.

hashlib releases the GIL on large buffers, so hashing on a second thread
overlaps with receiving and writing the next piece on the request thread (a
512 MiB upload spends ~0.3 s hashing on this kind of machine). Small files are
hashed inline: a thread would cost more than it saves.
"""
from __future__ import annotations

import hashlib
import queue
import threading

# Pieces in flight: bounds the memory held for hashing to a few MiB.
MAX_QUEUED = 8
_DONE = None


class StreamHasher:
    def __init__(self, inline_below: int = 1024 * 1024):
        self._sha256 = hashlib.sha256()
        self._inline_below = inline_below
        self._seen = 0
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None

    def update(self, data: bytes) -> None:
        self._seen += len(data)
        if self._queue is None and self._seen < self._inline_below:
            self._sha256.update(data)
            return
        if self._queue is None:
            self._queue = queue.Queue(MAX_QUEUED)
            self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def _run(self) -> None:
        while (data := self._queue.get()) is not _DONE:
            self._sha256.update(data)

    def _join(self) -> None:
        if self._thread is not None:
            self._queue.put(_DONE)
            self._thread.join()
            self._thread = None

    def hexdigest(self) -> str:
        self._join()
        return self._sha256.hexdigest()

    def close(self) -> None:
        """Stop the thread without a result (the upload was abandoned)."""
        self._join()

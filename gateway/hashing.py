"""sha256 of a stream, computed beside the write of the same bytes.

hashlib releases the GIL on large buffers, so a helper thread hashes a piece
while the request thread writes it to disk (a 512 MiB upload spends ~0.3 s
hashing on this kind of machine, about what the write takes). The piece may
be a view of a buffer its caller reuses: ``hashing()`` returns only when the
hash has taken it. Small files are hashed inline: a thread would cost more
than it saves.
"""
from __future__ import annotations

import hashlib
import queue
import threading
from contextlib import contextmanager

_STOP = None


class StreamHasher:
    def __init__(self, inline_below: int = 1024 * 1024):
        self._sha256 = hashlib.sha256()
        self._inline_below = inline_below
        self._seen = 0
        self._todo: queue.SimpleQueue | None = None
        self._done: queue.SimpleQueue | None = None
        self._thread: threading.Thread | None = None

    @contextmanager
    def hashing(self, data):
        """Hash ``data`` while the block runs; on leaving the block, it has been."""
        self._seen += len(data)
        if self._thread is None and self._seen < self._inline_below:
            self._sha256.update(data)
            yield
            return
        if self._thread is None:
            self._todo, self._done = queue.SimpleQueue(), queue.SimpleQueue()
            self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
            self._thread.start()
        self._todo.put(data)
        try:
            yield
        finally:
            self._done.get()

    def update(self, data) -> None:
        with self.hashing(data):
            pass

    def _run(self) -> None:
        while (data := self._todo.get()) is not _STOP:
            try:
                self._sha256.update(data)
            finally:
                self._done.put(True)

    def _join(self) -> None:
        if self._thread is not None:
            self._todo.put(_STOP)
            self._thread.join()
            self._thread = None

    def hexdigest(self) -> str:
        self._join()
        return self._sha256.hexdigest()

    def pause(self) -> None:
        """Stop the thread until more comes (the hash is kept between requests)."""
        self._join()

    def close(self) -> None:
        """Stop the thread without a result (the upload was abandoned)."""
        self._join()

"""sha256 of a stream, computed beside the receiving and writing of it.

hashlib releases the GIL on large buffers, so a helper thread hashes one
piece while the request thread writes it and receives the next (a 512 MiB
upload spends ~0.3 s hashing on this kind of machine, more than receiving
and writing it). A piece may be a view of a buffer its caller reuses: the
caller says ``release(buffer)`` before it does, and waits there if that
piece is still being hashed. Small files are hashed inline: a thread would
cost more than it saves.
"""
from __future__ import annotations

import hashlib
import queue
import threading

_STOP = None


class StreamHasher:
    def __init__(self, inline_below: int = 1024 * 1024):
        self._sha256 = hashlib.sha256()
        self._inline_below = inline_below
        self._seen = 0
        self._todo: queue.SimpleQueue | None = None
        self._done: queue.SimpleQueue | None = None
        self._thread: threading.Thread | None = None
        self._in_flight = None  # the piece the thread is hashing, if any

    def submit(self, data) -> None:
        """Hash ``data``, on the helper thread once past ``inline_below``: it
        must stay intact until ``release()`` of its buffer, ``hexdigest()`` or
        ``close()``. One piece is hashed at a time (the previous one is waited for)."""
        self._seen += len(data)
        if self._thread is None and self._seen < self._inline_below:
            self._sha256.update(data)
            return
        if self._thread is None:
            self._todo, self._done = queue.SimpleQueue(), queue.SimpleQueue()
            self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
            self._thread.start()
        self._settle()
        self._todo.put(data)
        self._in_flight = data

    def release(self, buffer) -> None:
        """Wait until no piece of ``buffer`` (a bytearray about to be reused) is being hashed."""
        if self._in_flight is not None and getattr(self._in_flight, "obj", self._in_flight) is buffer:
            self._settle()

    def update(self, data) -> None:
        """Hash ``data`` and return once it has been (``data`` may change afterwards)."""
        self.submit(data)
        self._settle()

    def _settle(self) -> None:
        if self._in_flight is not None:
            self._in_flight = None
            self._done.get()

    def _run(self) -> None:
        while (data := self._todo.get()) is not _STOP:
            try:
                self._sha256.update(data)
            finally:
                self._done.put(True)

    def _join(self) -> None:
        self._settle()
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

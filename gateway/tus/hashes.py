"""sha256 of tus uploads computed as their bytes arrive, so that finishing an
upload does not read the whole file back to hash it (half a second for
512 MiB on this kind of machine).

A hash lives in the process that received the bytes, keyed by upload and by
the offset it has reached. A PATCH that finds no hash at its offset (another
worker or replica took the previous one, the gateway restarted, a PATCH
failed halfway) simply goes without, and the file is hashed when it is
finished, as before: the running hash is a shortcut, never the only way.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from gateway.ingest.hashing import StreamHasher

# Uploads in progress whose hash is kept; the oldest goes first (its upload is
# then hashed at the end, nothing more).
CAPACITY = 256


class RunningHashes:
    def __init__(self, capacity: int = CAPACITY):
        self._capacity = capacity
        self._hashes: OrderedDict[str, tuple[int, StreamHasher]] = OrderedDict()
        self._lock = threading.Lock()

    def resume(self, upload_id: str, offset: int) -> StreamHasher | None:
        """The hash of the upload's first ``offset`` bytes, taken out (a PATCH
        that fails does not put it back); a new one at offset 0; else None."""
        with self._lock:
            kept = self._hashes.pop(upload_id, None)
        if kept is not None and kept[0] == offset:
            return kept[1]
        if kept is not None:
            kept[1].close()
        return StreamHasher() if offset == 0 else None

    def keep(self, upload_id: str, offset: int, hasher: StreamHasher) -> None:
        hasher.pause()  # no idle thread per upload between PATCHes
        with self._lock:
            self._hashes[upload_id] = (offset, hasher)
            while len(self._hashes) > self._capacity:
                self._hashes.popitem(last=False)[1][1].close()

    def digest(self, upload_id: str, size: int) -> str | None:
        """The hex sha256 of a finished upload of ``size`` bytes, if this process saw them all."""
        with self._lock:
            kept = self._hashes.pop(upload_id, None)
        if kept is None:
            return None
        offset, hasher = kept
        if offset != size:
            hasher.close()
            return None
        return hasher.hexdigest()

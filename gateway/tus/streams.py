"""Validate streams kept open across a tus upload's PATCHes, for when a rule
reads every byte (the validator's policy says ``whole_file``, e.g. the ClamAV
rule): each PATCH feeds its bytes to the upload's stream as they arrive, and
the PATCH that brings the last byte gets the verdict before anything is
committed. The bytes are never read back at the end.

Like the running hashes (gateway/tus/hashes.py) a stream lives in the process
that received the bytes, keyed by upload and by the offset it has reached,
and it is a shortcut, never the only way. Once an upload's stream is lost (a
PATCH went to another worker or replica, the gateway restarted, a PATCH failed
halfway or had a wrong checksum, the stream was given up), its later PATCHes
feed none, and the finished file is sent whole to the validator from storage,
once, before it is accepted. Feeding a new stream what is already stored at
each such PATCH would let a client make the gateway read and scan the same
bytes again for every tiny PATCH it sends.

A kept stream holds one of the validator's VALIDATOR_WORKERS slots, and its
scanner's connection (clamd's own ReadTimeout is 120 s): a stream no PATCH
has fed for KEEP_IDLE seconds is given up, and at most CAPACITY are kept.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from gateway.ingest.validation_stream import ValidationStream

# Seconds a stream waits for its upload's next PATCH before it is given up (within
# one keepalive, 15 s, of it); the upload is then judged whole when it is finished.
KEEP_IDLE = 30.0
# Streams kept between PATCHes in one process; the oldest is given up first.
CAPACITY = 32


class WholeFileStreams:
    def __init__(self, capacity: int = CAPACITY, keep_idle: float = KEEP_IDLE):
        self._capacity = capacity
        self._keep_idle = keep_idle
        self._streams: OrderedDict[str, tuple[int, ValidationStream]] = OrderedDict()
        self._lock = threading.Lock()

    def resume(self, upload_id: str, offset: int) -> ValidationStream | None:
        """The upload's stream if it has been fed exactly its first ``offset`` bytes and
        is still usable, taken out (a PATCH that fails does not put it back); else None."""
        with self._lock:
            kept = self._streams.pop(upload_id, None)
        if kept is None:
            return None
        fed, stream = kept
        if fed == offset and stream.usable:
            stream.idle_limit = None
            return stream
        stream.cancel()
        return None

    def keep(self, upload_id: str, offset: int, stream: ValidationStream) -> None:
        if not stream.usable:
            return
        stream.idle_limit = self._keep_idle
        with self._lock:
            self._streams[upload_id] = (offset, stream)
            evicted = []
            while len(self._streams) > self._capacity:
                evicted.append(self._streams.popitem(last=False)[1][1])
        for old in evicted:
            old.cancel()

    def drop(self, upload_id: str) -> None:
        with self._lock:
            kept = self._streams.pop(upload_id, None)
        if kept is not None:
            kept[1].cancel()

    def close(self) -> None:
        with self._lock:
            kept, self._streams = list(self._streams.values()), OrderedDict()
        for _, stream in kept:
            stream.cancel()

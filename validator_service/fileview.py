"""A read-once view of an upload stream that rules pull bytes from."""
from __future__ import annotations

import os
from collections.abc import Iterator

from protos.errors import InvalidInput
from protos.upload.v1 import validator_pb2
from validator_service.libmagic import MAGIC_HEAD, detect_mime


def extension_of(name: str) -> str:
    """Lower-case extension without the dot; "" when there is none."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    _, ext = os.path.splitext(base.rstrip(". "))
    return ext[1:].lower() if ext else ""


class FileView:
    """What the rules see: the declared metadata and a lazily read head.

    Bytes are pulled from the request stream only as far as some rule asks, so
    the verdict can come before the whole file has been sent.
    """

    def __init__(self, info, requests: Iterator[validator_pb2.ValidateRequest], max_head: int):
        self.original_name = info.original_name
        self.extension = extension_of(info.original_name)
        self.declared_size: int | None = info.declared_size if info.HasField("declared_size") else None
        self.declared_type = info.declared_type
        self._requests = requests
        self._buffer = bytearray()
        self._max_head = max_head
        self._end_size: int | None = None
        self.bytes_read = 0
        # The stream has ended (after the last chunk or an `end` message).
        self.complete = False
        # Set by the image rule when the head holds a readable image header.
        self.image_size: tuple[int, int] | None = None
        # Some rule asked for bytes the caller chose not to send (see `end`).
        self.head_incomplete = False
        # Called with every chunk as it is read (whole-file rules see every byte through it).
        self.tap = None
        self._detected_type: str | None = None

    def _pull(self) -> None:
        message = next(self._requests, None)
        if message is None:
            self.complete = True
            return
        kind = message.WhichOneof("part")
        if kind == "end":
            if message.end.size < self.bytes_read:
                raise InvalidInput(f"end.size is {message.end.size} but {self.bytes_read} bytes were sent.")
            self._end_size = message.end.size
            self.complete = True
            if next(self._requests, None) is not None:
                raise InvalidInput("Nothing may follow the end message.")
            return
        if kind != "chunk":
            raise InvalidInput("Only the first message may carry the file's info; the rest carry bytes.")
        chunk = message.chunk  # a copy each time it is read: once
        self.bytes_read += len(chunk)
        if self.declared_size is not None and self.bytes_read > self.declared_size:
            raise InvalidInput(f"The stream carried more than the {self.declared_size} bytes declared.")
        if len(self._buffer) < self._max_head:
            self._buffer += chunk[: self._max_head - len(self._buffer)]
        if self.tap is not None and chunk:
            self.tap(chunk)

    def read_on(self) -> bool:
        """Read the next message (its bytes go to ``tap``); False once the stream has ended."""
        if not self.complete:
            self._pull()
        return not self.complete

    def head(self, n: int = MAGIC_HEAD) -> bytes:
        """The first ``n`` bytes (fewer if the file is shorter). Asking for more
        than VALIDATOR_MAX_HEAD gives only that much."""
        n = min(n, self._max_head)
        while len(self._buffer) < n and not self.complete:
            self._pull()
        if len(self._buffer) < n and self.bytes_read < self._counted_size():
            self.head_incomplete = True
        return bytes(self._buffer[:n])

    def _counted_size(self) -> int:
        return self.bytes_read if self._end_size is None else self._end_size

    @property
    def whole(self) -> bool:
        """Whether every byte of the file has been seen (small files)."""
        return self.complete and self.bytes_read == self._counted_size()

    @property
    def ends_in_head(self) -> bool:
        """Whether the bytes read into the head are the whole file. Pulls at most
        one more chunk (or the end of the stream) to tell, none when the
        declared size already says the file is longer."""
        if self.declared_size is not None and self.declared_size > len(self._buffer):
            return False
        while not self.complete and self.bytes_read == len(self._buffer):
            self._pull()
        return self.complete and self._counted_size() == len(self._buffer)

    @property
    def size(self) -> int:
        """The declared size when given, else the counted one (this waits for
        the end of the stream; bytes past the head are dropped)."""
        if self.declared_size is not None:
            return self.declared_size
        while not self.complete:
            self._pull()
        return self._counted_size()

    def exceeds(self, limit: int) -> bool:
        """Whether the file is larger than ``limit``, reading no further than
        needed to tell (a huge undeclared stream is not drained)."""
        if self.declared_size is not None:
            return self.declared_size > limit
        while not self.complete and self.bytes_read <= limit:
            self._pull()
        return self._counted_size() > limit

    @property
    def detected_type(self) -> str:
        """libmagic's MIME type for the head of the file."""
        # Not functools.cached_property: on Python 3.11 it holds one lock for every
        # instance while it computes, so a stream waiting for its head there held up
        # every other call's content rule (a Check stuck behind a tus upload's open stream).
        if self._detected_type is None:
            self._detected_type = detect_mime(self.head(MAGIC_HEAD))
        return self._detected_type

    @property
    def known_type(self) -> str:
        """The detected type if some rule has asked for it already, else ""
        (so a refusal never reads bytes just to report a type)."""
        return self._detected_type or ""

    def finish(self) -> None:
        """Check what can still be checked once the rules are done: a stream that
        ended short of (or past) its declared size is a broken call, not a file.
        (Bytes past the declared size are refused as they arrive, in ``_pull``.)"""
        if self.complete and self.declared_size is not None and self._counted_size() != self.declared_size:
            raise InvalidInput(
                f"The stream carried {self._counted_size()} bytes but {self.declared_size} were declared."
            )

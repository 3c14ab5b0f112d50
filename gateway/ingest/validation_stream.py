"""A Validate call fed while an upload is still arriving (``ValidationStream``): the
head the rules may read, or every byte when the policy says ``whole_file``, framed by
hand and handed to gRPC through a bounded outbox. Never repeated: bytes already read
from the client cannot be sent again."""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import grpc

from gateway.ingest.calls import explained
from protos.errors import Unavailable, error_for_code, from_rpc_error
from protos.streaming import file_info
from protos.upload.v1 import validator_pb2

_END = object()

VALIDATE = f"/{validator_pb2.DESCRIPTOR.services_by_name['Validator'].full_name}/Validate"
# ValidateRequest's `chunk` (field 2, length-delimited) as it goes on the wire.
_CHUNK_TAG = bytes([2 << 3 | 2])


def chunk_message(data) -> bytes:
    """A serialized ``ValidateRequest(chunk=data)``, framed by hand in one copy of ``data``
    (which may be a view of a buffer its reader reuses). Built with protobuf, a 1 MiB chunk
    cost 1.5-2 ms to make (a new arena each) and as much again to serialize: a whole 50 MiB
    file streamed to the validator spent more on that than on everything else it added."""
    size, prefix = len(data), bytearray(_CHUNK_TAG)
    while True:
        if size < 0x80:
            prefix.append(size)
            break
        prefix.append(size & 0x7F | 0x80)
        size >>= 7
    return b"".join((prefix, data))


# How often a Validate stream waiting for the rest of its upload tells the validator it is
# still there (well under the validator's GRPC_STREAM_IDLE_TIMEOUT, 60 s by default).
KEEPALIVE = 15.0
# Bytes a stream holds for the validator before ``feed`` waits for it to take some: an upload
# goes no faster than the validator (and a whole-file rule's scanner) reads, in bounded memory.
OUTBOX_BYTES = 4 * 1024 * 1024


class ValidationStream:
    """One Validate call fed while the upload is still arriving.

    The gateway counts and stores the bytes itself, so only the head the
    validator's rules may read is sent, then an `end` message with the real
    size; with ``whole`` (the policy's ``whole_file``: a rule reads every byte)
    every byte is sent, and an accepting verdict comes after `end`. A refusal
    can arrive after the first chunk; ``early_verdict()`` reports it without
    blocking.
    """

    def __init__(self, validate, original_name: str, declared_type: str, head_bytes: int, timeout: float,
                 declared_size: int | None = None, whole: bool = False,
                 noted: Callable[[validator_pb2.Verdict], object] = lambda verdict: None):
        self._cond = threading.Condition()
        self._outbox: deque = deque()
        self._queued = 0
        self._closed = False
        self._head_left = head_bytes
        self.whole = whole
        self._noted = noted  # sees every verdict that comes back (Services._note)
        self._sent_end = False
        # Set while a tus upload keeps the stream between PATCHes: silent this long, it is given up.
        self.idle_limit: float | None = None
        self._last_fed = time.monotonic()
        info = file_info(original_name, declared_size, declared_type)
        # ``validate``: the Validate method taking serialized messages (Services.validate_raw).
        self._future = validate.future(self._requests(info), timeout=timeout)
        self._future.add_done_callback(lambda _: self._close())

    def _requests(self, info) -> Iterator[bytes]:
        yield validator_pb2.ValidateRequest(info=info).SerializeToString()
        while True:
            with self._cond:
                if not self._outbox and not self._closed:
                    self._cond.wait(KEEPALIVE)
                if self._closed:
                    return
                item = None
                if self._outbox:
                    item, size = self._outbox.popleft()
                    self._queued -= size
                    self._cond.notify_all()
            if item is None:
                if self.idle_limit is not None and time.monotonic() - self._last_fed > self.idle_limit:
                    self.cancel()  # the validator's slot is not held for an upload that may never go on
                    return
                # The upload is still arriving, and the validator cuts a stream silent for
                # GRPC_STREAM_IDLE_TIMEOUT: an empty chunk says the caller is still there.
                yield chunk_message(b"")
                continue
            if item is _END:
                return
            yield item

    def _put(self, item, size: int) -> None:
        with self._cond:
            while not self._closed and self._queued and self._queued + size > OUTBOX_BYTES:
                self._cond.wait(1.0)
            if self._closed:
                return  # the call has ended (a verdict, an error): nothing more is read
            self._outbox.append((item, size))
            self._queued += size
            self._cond.notify_all()

    def _close(self) -> None:
        with self._cond:
            self._closed = True
            self._outbox.clear()
            self._queued = 0
            self._cond.notify_all()

    @property
    def usable(self) -> bool:
        """The call still runs (no verdict or error yet, not given up), or it has accepted
        the file already (no rule needed the rest of it)."""
        if not self._future.done():
            return True
        try:
            return self._future.result(timeout=0).accepted
        except Exception:
            return False

    def feed(self, chunk: bytes) -> None:
        """Send the next bytes (copied: the caller may reuse ``chunk``'s buffer). Waits
        while OUTBOX_BYTES are still on their way."""
        if self._closed:
            return
        if not self.whole:
            if self._head_left <= 0:
                return
            chunk = chunk[: self._head_left]
            self._head_left -= len(chunk)
        self._last_fed = time.monotonic()
        self._put(chunk_message(chunk), len(chunk))

    def early_verdict(self) -> validator_pb2.Verdict | None:
        """The verdict if it has already come (a refusal from the head), else None.
        Raises an UploadError if the call failed (validator unreachable)."""
        return self._result(0) if self._future.done() else None

    def finish(self, size: int, wait: float) -> validator_pb2.Verdict:
        if not self._sent_end:
            self._sent_end = True
            self._last_fed = time.monotonic()
            self._put(validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=size)).SerializeToString(), 0)
            self._put(_END, 0)
        return self._result(wait)

    def _result(self, wait: float) -> validator_pb2.Verdict:
        try:
            verdict = self._future.result(timeout=wait)
        except grpc.FutureTimeoutError:
            self.cancel()
            raise explained(error_for_code(grpc.StatusCode.DEADLINE_EXCEEDED), "validate") from None
        except grpc.FutureCancelledError:
            # Given up by this gateway (a tus upload silent too long): as if the validator were gone.
            raise explained(Unavailable(), "validate") from None
        except grpc.RpcError as exc:
            raise explained(from_rpc_error(exc), "validate") from None
        self._noted(verdict)
        return verdict

    def cancel(self) -> None:
        """Stop the call; always lets the request iterator end (no stuck thread)."""
        self._close()
        self._future.cancel()

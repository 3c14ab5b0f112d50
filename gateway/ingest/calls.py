"""Calls to the gRPC services that are safe to repeat (GetPolicy, Check, health checks,
GetRenderers, Render or Validate from a file still on disk) go through ``call_with_retry``:
UNAVAILABLE is tried again after a short pause, within the same deadline; gRPC failures
become protos.errors with a sentence that names what failed.

A service that refuses a call because all its work slots are taken (UNAVAILABLE with
reason BUSY) frees one as soon as a call ends. So a caller given a ``Freed`` waits for
one of this process's own calls of that kind to end (or polls, with a growing pause,
while the slots are other processes'), then tries again, for as long as its deadline
allows: a queue in all but name. Fixed pauses made a burst of images wait 50 and 200 ms
for slots freed in 10, then give their thumbnails up to the background retry; a fixed
short poll made every waiting thread send its file again 50 times a second, so calls
are also held back before they are sent while this process has its share of the slots
in flight (``Freed``)."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from collections.abc import Callable
from typing import TypeVar

import grpc

from protos.client import error_reason
from protos.errors import TimedOut, Unavailable, UploadError, from_rpc_error

log = logging.getLogger("upload.gateway")

# Pauses before the second and the third attempt of a call that is safe to repeat.
RETRY_DELAYS = (0.05, 0.2)
# An attempt that would have less time than this before the deadline is not made.
MIN_ATTEMPT = 0.05
# A call refused BUSY while none of this process's calls of its kind runs (another process's hold
# the slots) tries again after BUSY_POLL, doubling up to BUSY_POLL_MAX. While ours run, a call waits
# for one of them to end, and goes anyway after BUSY_WAIT_MAX (another process's may have ended).
BUSY_POLL = 0.01
BUSY_POLL_MAX = 0.1
BUSY_WAIT_MAX = 0.1


class Freed:
    """This process's share of a service's work slots for one kind of call (Render), learnt
    from its answers: when the service says BUSY with n of ours in flight, it takes about n
    of ours at once, and a call waits for one of them to end before it is sent (rather than
    send its file only to be refused); each call served while at that share raises it by one,
    so a share freed by other callers is found again."""

    def __init__(self):
        self._ended = threading.Condition()
        self._running = 0
        self._share: int | None = None  # None: no BUSY seen yet

    @contextmanager
    def running(self, seconds: float):
        """Around one attempt: first waits, at most ``seconds``, for room in this process's share."""
        deadline = time.monotonic() + seconds
        with self._ended:
            while self._share is not None and self._running >= self._share:
                left = deadline - time.monotonic()
                if left <= 0 or not self._ended.wait(min(left, BUSY_WAIT_MAX)):
                    break  # no call of ours ended meanwhile: try anyway
            self._running += 1
        try:
            yield
        finally:
            with self._ended:
                self._running -= 1
                self._ended.notify()

    def refused(self) -> None:
        """Inside ``running``: the service said BUSY with ``_running`` of ours (this one too) in flight."""
        with self._ended:
            self._share = max(1, self._running - 1)

    def served(self) -> None:
        """Inside ``running``: this call held a slot and ended."""
        with self._ended:
            if self._share is not None and self._running >= self._share:
                self._share += 1

    def pause(self, seconds: float, refusals: int) -> None:
        """After the ``refusals``-th BUSY of one call: with none of ours running the slots are
        other processes', so poll with a growing pause; else ``running`` does the waiting."""
        with self._ended:
            idle = not self._running
        if idle:
            # A plain sleep: every attempt's end notifies, refused ones too, and waking on those
            # made the pause a spin while another process held the slots.
            time.sleep(min(seconds, BUSY_POLL * 2 ** min(refusals - 1, 8), BUSY_POLL_MAX))


# What a person reads when a service is down or silent (the generic sentence
# does not say which part of the upload failed).
UNREACHABLE = {
    "validate": "The validation service cannot be reached, so the file could not be checked; "
                "nothing was stored. Please try again shortly.",
    "policy": "The validation service cannot be reached, so the upload rules are not known right now. "
              "Please try again shortly.",
}
SILENT = {
    "validate": "The validation service did not answer in time, so the file could not be checked; "
                "nothing was stored. Please try again shortly.",
    "policy": "The validation service did not answer in time, so the upload rules are not known right now. "
              "Please try again shortly.",
}

T = TypeVar("T")


def explained(error: UploadError, call: str | None) -> UploadError:
    """``error`` with a sentence that names what failed, for the calls that have one."""
    if call is not None and type(error) is Unavailable:
        return Unavailable(UNREACHABLE[call])
    if call is not None and type(error) is TimedOut:
        return TimedOut(SILENT[call])
    return error


def call_with_retry(attempt: Callable[[float], T], timeout: float, what: str = "call",
                    explain: str | None = None, freed: Freed | None = None) -> T:
    """Run ``attempt(seconds_left)``, one gRPC call that is safe to repeat, with
    ``timeout`` seconds for all attempts together. A call failing with
    UNAVAILABLE (the service is restarting, a connection just broke) is made
    again after each pause of RETRY_DELAYS while the deadline leaves room; with
    ``freed``, one refused BUSY is made again once a slot may have freed, as often
    as the deadline allows. Any other failure, or the last one, raises its UploadError."""
    deadline = time.monotonic() + timeout
    delays = iter(RETRY_DELAYS)
    refusals = 0
    while True:
        try:
            return attempt(max(deadline - time.monotonic(), 0.001))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise explained(from_rpc_error(exc), explain) from None
            if freed is not None and error_reason(exc) == "BUSY":
                left = deadline - time.monotonic() - MIN_ATTEMPT
                if left <= 0:
                    raise explained(from_rpc_error(exc), explain) from None
                refusals += 1
                freed.pause(left, refusals)
                continue
            delay = next(delays, None)
            if delay is None or time.monotonic() + delay + MIN_ATTEMPT > deadline:
                raise explained(from_rpc_error(exc), explain) from None
            log.debug("%s: service unavailable, trying again in %.0f ms", what, delay * 1000)
            time.sleep(delay)

"""Calls to the gRPC services that are safe to repeat (GetPolicy, Check, health checks,
GetRenderers, Render or Validate from a file still on disk) go through ``call_with_retry``:
UNAVAILABLE is tried again after a short pause, within the same deadline; gRPC failures
become protos.errors with a sentence that names what failed.

A service that refuses a call because all its work slots are taken (UNAVAILABLE with
reason BUSY) frees one as soon as a call ends. So a caller given a ``Freed`` waits for
one of this process's own calls of that kind to end (or BUSY_POLL, for the calls of
other processes), then tries again, for as long as its deadline allows: a queue in
all but name, where fixed pauses made a burst of images wait 50 and 200 ms for slots
freed in 10, then give their thumbnails up to the background retry."""
from __future__ import annotations

import logging
import threading
import time
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
# The longest a call refused BUSY waits before trying again when none of this process's ends.
BUSY_POLL = 0.02


class Freed:
    """Tells callers refused BUSY that one of this process's calls to the service has ended."""

    def __init__(self):
        self._ended = threading.Condition()

    def notify(self) -> None:
        with self._ended:
            self._ended.notify()

    def wait(self, seconds: float) -> None:
        with self._ended:
            self._ended.wait(seconds)

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
                freed.wait(min(BUSY_POLL, left))
                continue
            delay = next(delays, None)
            if delay is None or time.monotonic() + delay + MIN_ATTEMPT > deadline:
                raise explained(from_rpc_error(exc), explain) from None
            log.debug("%s: service unavailable, trying again in %.0f ms", what, delay * 1000)
            time.sleep(delay)

"""Admission control for the gRPC servers: how many work calls run at once, and
how long a call may wait for its caller.

A sync gRPC server gives every call a thread from one pool, health checks and
reflection included. So a work call (Validate and Check; Render) takes a slot
first: with none left it is UNAVAILABLE at once (retryable), never queued, and
the pool keeps threads beyond the slots, so health and reflection always find
one. A request stream whose caller sends nothing for ``idle_timeout`` seconds
while the server waits for it, or a work call running past ``max_call_time``,
is cut (cancelled), logged and counted: a silent or crawling caller cannot hold
a slot, or a thread, for ever. (The gateway keeps its own long Validate streams
alive with empty chunks while an upload still arrives.)
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc

from protos.errors import Busy, abort

log = logging.getLogger("upload.grpc")

# How often the watchdog looks at the calls it watches (seconds, at most).
TICK = 0.25


@dataclass(frozen=True)
class Limits:
    methods: frozenset[str] = frozenset()  # the work calls, by full name (/package.Service/Method)
    slots: int = 0  # work calls at once; 0: not limited here
    idle_timeout: float = 0  # seconds a request stream may stay silent while awaited; 0: never
    max_call_time: float = 0  # seconds a work call may last; 0: never


@dataclass(eq=False)
class _Call:
    context: grpc.ServicerContext
    method: str
    started: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)
    waiting: bool = False  # the handler is waiting for the caller's next message


class Admission:
    def __init__(self, limits: Limits, metrics=None):
        self.limits = limits
        self.metrics = metrics  # protos.metrics.ServerMetrics, or None
        self._slots = threading.BoundedSemaphore(limits.slots) if limits.slots else None
        self._calls: set[_Call] = set()
        self._lock = threading.Lock()
        # The watchdog runs while there are calls to watch, and ends with the last one: a thread
        # for the server's whole life would outlive it too (nothing tells it the server stopped).
        self._watched = limits.idle_timeout > 0 or limits.max_call_time > 0
        self._watching = False

    def covers(self, method: str) -> bool:
        return method in self.limits.methods

    @contextmanager
    def admit(self, method: str, context: grpc.ServicerContext) -> Iterator[_Call]:
        """Hold a slot for the call (or abort it UNAVAILABLE) and watch it until it ends."""
        if self._slots is not None and not self._slots.acquire(blocking=False):
            self._count(method, "busy")
            abort(context, Busy(f"The service is busy: its {self.limits.slots} {_short(method)} calls at "
                                "once are all running. Try again shortly."))
        call = _Call(context, method)
        with self._lock:
            self._calls.add(call)
            start_watch = self._watched and not self._watching
            self._watching = self._watching or start_watch
        if start_watch:
            try:
                self._start_watch()
            except RuntimeError:  # no thread to be had now: the next call tries again
                log.exception("the call watchdog could not start")
                with self._lock:
                    self._watching = False
        try:
            yield call
        finally:
            with self._lock:
                self._calls.discard(call)
            if self._slots is not None:
                self._slots.release()

    def track(self, requests: Iterator, call: _Call) -> Iterator:
        """The request stream, with the call's clock moved by every message."""
        call.waiting = True
        try:
            for message in requests:
                call.waiting, call.last = False, time.monotonic()
                yield message
                call.waiting, call.last = True, time.monotonic()
        finally:
            call.waiting = False

    def _start_watch(self) -> None:
        threading.Thread(target=self._watch, name="rpc-watchdog", daemon=True).start()

    def _watch(self) -> None:
        limits = self.limits
        tick = min(t for t in (limits.idle_timeout / 4, limits.max_call_time / 4, TICK) if t > 0)
        while True:
            time.sleep(tick)
            now = time.monotonic()
            with self._lock:
                if not self._calls:
                    self._watching = False
                    return
                calls = list(self._calls)
            for call in calls:
                if limits.idle_timeout > 0 and call.waiting and now - call.last > limits.idle_timeout:
                    self._cut(call, "idle", f"its caller sent nothing for {limits.idle_timeout:g} s")
                elif limits.max_call_time > 0 and now - call.started > limits.max_call_time:
                    self._cut(call, "too_long", f"it ran past {limits.max_call_time:g} s")

    def _cut(self, call: _Call, reason: str, why: str) -> None:
        with self._lock:
            if call not in self._calls:
                return  # ended meanwhile
            self._calls.discard(call)  # cut once
        log.warning("rpc %s cut: %s", call.method, why)
        self._count(call.method, reason)
        call.context.cancel()

    def _count(self, method: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.refuse(method, reason)


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]

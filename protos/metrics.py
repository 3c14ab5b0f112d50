"""Prometheus metrics both gRPC services share: a registry of their own (with
the process collectors), calls counted by method and status code and timed by
the server's call interceptor (protos/serving.py), and the HTTP endpoint that
serves them (VALIDATOR_METRICS_PORT / THUMBNAIL_METRICS_PORT)."""
from __future__ import annotations

import errno
import logging

from prometheus_client import (CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector,
                               ProcessCollector, start_http_server)

log = logging.getLogger("upload.metrics")

CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


def new_registry() -> CollectorRegistry:
    """A service's registry: its own metrics plus process_*, python_info and python_gc_*."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class ServerMetrics:
    """What the server's call interceptor records for one service (``service``:
    validator or thumbnail): every call by method and status code, and its duration."""

    def __init__(self, registry: CollectorRegistry, service: str):
        self.service = service
        self.calls = Counter("upload_grpc_server_calls_total",
                             "gRPC calls this service answered, by method and status code.",
                             ["service", "method", "code"], registry=registry)
        self.seconds = Histogram("upload_grpc_server_call_seconds",
                                 "Time this service took to answer a gRPC call (a stream: from its first "
                                 "message to the answer), by method.",
                                 ["service", "method"], buckets=CALL_BUCKETS, registry=registry)
        self.refused = Counter("upload_grpc_server_refused_total",
                               "Work calls this service refused or cut, by method and reason: busy (every "
                               "slot taken, answered UNAVAILABLE at once), idle (the caller's stream went "
                               "silent), too_long (past the longest a call may last).",
                               ["service", "method", "reason"], registry=registry)
        self._calls: dict[tuple[str, str], Counter] = {}
        self._seconds: dict[str, Histogram] = {}

    def refuse(self, full_method: str, reason: str) -> None:
        self.refused.labels(self.service, full_method.lstrip("/"), reason).inc()

    def observe(self, full_method: str, code: str, seconds: float) -> None:
        # Children looked up once per (method, code): a call costs a dict lookup, not a label lookup.
        child = self._calls.get((full_method, code))
        method = full_method.lstrip("/")
        if child is None:
            child = self._calls[(full_method, code)] = self.calls.labels(self.service, method, code)
        child.inc()
        timer = self._seconds.get(full_method)
        if timer is None:
            timer = self._seconds[full_method] = self.seconds.labels(self.service, method)
        timer.observe(seconds)


def metrics_host(listen: str) -> str:
    """The host part of a gRPC listen address: the metrics endpoint binds the same
    interface (127.0.0.1:50051 -> 127.0.0.1; [::]:50051 -> ::)."""
    host = listen.rsplit(":", 1)[0] if ":" in listen else ""
    host = host.strip("[]")
    return host or "0.0.0.0"


def serve_metrics(registry: CollectorRegistry, port: int, host: str, setting: str):
    """Serve ``registry`` at http://host:port/metrics on a daemon thread; port 0: off
    (returns None). Returns the HTTP server (``.server_port``, ``.shutdown()``).

    A port that cannot be bound is logged as an error with a sentence naming the
    setting and the service runs on without the endpoint (returns None): metrics
    are for operators, while a second replica on the same host (its own gRPC
    port, the default metrics port) must still validate or render."""
    if not port:
        return None
    try:
        try:
            server, _thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            # The images listen on [::]; a kernel without IPv6 refuses that family, and gRPC
            # itself falls back to IPv4 there, so the metrics do too.
            if host != "::" or exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            host = "0.0.0.0"
            server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.error("Cannot serve metrics on %s:%s (%s): the port is in use or the address is not this "
                  "machine's. Serving without a metrics endpoint; set %s to another port, or 0 to turn "
                  "it off.", host, port, exc.strerror or exc, setting)
        return None
    log.info("metrics on http://%s:%s/metrics", host if ":" not in host else f"[{host}]", server.server_port)
    return server

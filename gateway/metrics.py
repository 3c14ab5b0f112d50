"""Prometheus metrics of the gateway, served at GET /metrics.

With one gateway worker process (GATEWAY_WORKERS=1) they live in one registry
in memory, every thread counting into the same objects. With several,
prometheus_client's multiprocess mode keeps each worker's values in files of
its own (gateway/serving/processes.py chose the directory before this module
was imported) and ``scraped()`` adds them up, whichever worker answers the
scrape: counters and histograms are summed, gauges show the latest value any
live worker set; process_* add up the gunicorn master and its workers (CPU,
memory, open files), and python_gc_* are served only with one worker.

What a request touches is cheap: label children are looked up once, here or
on first use, never per chunk; a file costs a handful of ``perf_counter()``
calls and observations, nothing per piece of its body.
"""
from __future__ import annotations

import os
import time

import grpc
from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, Histogram, PlatformCollector,
                               ProcessCollector)

from protos.processes import shared_registry

# Set by gateway/serving/processes.py when several workers share the metrics.
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

REGISTRY = CollectorRegistry()
if MULTIPROCESS_DIR is None:
    # process_* (CPU, memory, open files), python_info, python_gc_*: as the default registry has them.
    ProcessCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)
    GCCollector(registry=REGISTRY)
# A gauge is set by whichever worker last looked (the services' health, the database's counts).
LATEST = "livemostrecent"


def scraped() -> CollectorRegistry:
    """What GET /metrics serves: this process's registry, or every worker's files added up
    (process_* of the gunicorn master, this worker's parent, and all its workers)."""
    return REGISTRY if MULTIPROCESS_DIR is None else shared_registry(os.getppid)


# The gateway started (for "since" on the dashboard and for rates after a restart).
STARTED = time.time()

UPLOADS = Counter("upload_requests_total", "Uploads by outcome (stored, refused, error), POST /upload and tus.",
                  ["outcome"], registry=REGISTRY)
REFUSALS = Counter("upload_refusals_total", "Refused files by reason code.", ["reason"], registry=REGISTRY)
UPLOAD_BYTES = Counter("upload_stored_bytes_total", "Bytes of files stored.", registry=REGISTRY)
UPLOAD_SECONDS = Histogram("upload_duration_seconds", "Time to receive, validate and store one POST /upload request.",
                           buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
                           registry=REGISTRY)
STEP_SECONDS = Histogram(
    "upload_step_seconds",
    "Time of each step of an upload: receive (a POST /upload file part, or one tus PATCH body), validate "
    "(waiting for the validator's verdict once the bytes are in), store (moving the bytes into place), "
    "thumbnail (the thumbnail call at upload time), db (writing the record).",
    ["step"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY)
STEPS = ("receive", "validate", "store", "thumbnail", "db")
RECEIVE, VALIDATE, STORE, THUMBNAIL, DB = (STEP_SECONDS.labels(step=step) for step in STEPS)

SERVICE_UP = Gauge("upload_service_up", "1 when the gRPC service answers its health check as SERVING.",
                   ["service"], registry=REGISTRY, multiprocess_mode=LATEST)
THUMBNAILS_PENDING = Gauge("upload_thumbnails_pending",
                           "Thumbnails waiting for the thumbnail service (the background retry's queue).",
                           registry=REGISTRY, multiprocess_mode=LATEST)
THUMBNAILS = Counter("upload_thumbnails_total",
                     "Thumbnail attempts (at upload time and by the background retry) by outcome: done, "
                     "pending (postponed: the service is down or slow, or the disk full), failed (cannot be "
                     "rendered).", ["outcome"], registry=REGISTRY)
FILES_REAPED = Counter("upload_files_reaped_total", "Expired files removed by the reaper (bytes, thumbnail, record).",
                       registry=REGISTRY)
RECONCILED = Counter("upload_reconciled_total", "What reconcile repaired, by kind (see gateway/storage/reconcile.py).",
                     ["kind"], registry=REGISTRY)

EVENTS = Counter("upload_events_total",
                 "Events about files written to the outbox, by type (file.stored, file.deleted, file.expired); "
                 "only while some plugin (a webhook) takes that type.", ["type"], registry=REGISTRY)
EVENT_DELIVERIES = Counter("upload_event_deliveries_total",
                           "Attempts to hand an event to a plugin (a webhook is one), by plugin and outcome: "
                           "delivered, failed (tried again later), dead (given up after EVENT_GIVE_UP_AFTER).",
                           ["consumer", "outcome"], registry=REGISTRY)
EVENT_OUTBOX = Gauge("upload_event_outbox",
                     "Events in the outbox by plugin and state: pending (not taken yet) or dead (given up); "
                     "counted in the database at each scrape.", ["consumer", "state"], registry=REGISTRY,
                     multiprocess_mode=LATEST)
EVENT_OLDEST = Gauge("upload_event_oldest_pending_seconds",
                     "Age of the oldest event a plugin has not taken yet (0: none waiting).", ["consumer"],
                     registry=REGISTRY, multiprocess_mode=LATEST)

TUS_CREATED = Counter("upload_tus_creations_total", "tus uploads created (POST /tus/, a final concatenation too).",
                      registry=REGISTRY)
TUS_PATCHES = Counter("upload_tus_patches_total", "tus PATCH bodies received (and kept).", registry=REGISTRY)
TUS_BYTES = Counter("upload_tus_received_bytes_total", "Bytes received by tus PATCHes and kept.",
                    registry=REGISTRY)
TUS_FINISHED = Counter("upload_tus_finished_total", "tus uploads finished and stored as files.", registry=REGISTRY)

GRPC_CALLS = Counter("upload_grpc_client_calls_total",
                     "gRPC calls the gateway made, by service (validator, thumbnail), method and status code; "
                     "every attempt of a retried call counts.",
                     ["service", "method", "code"], registry=REGISTRY)
GRPC_SECONDS = Histogram("upload_grpc_client_call_seconds",
                         "Duration of the gateway's gRPC calls, by service and method.",
                         ["service", "method"],
                         buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                  30, 60, 300, 3600),
                         registry=REGISTRY)


def observe_outbox(stats, consumers, now: float | None = None) -> None:
    """The outbox's rows by plugin and state (``Outbox.stats()``); ``consumers``:
    the plugins loaded, shown at 0 when nothing waits for them."""
    now = time.time() if now is None else now
    counts = {(name, state): (0, None) for name in consumers for state in ("pending", "dead")}
    for row in stats:
        counts[(row.consumer, row.state)] = (row.count, row.oldest)
    # A plugin no longer loaded whose rows are gone too drops back to 0 rather than keep its last value.
    for labels in _outbox_labels - set(counts):
        counts[labels] = (0, None)
    for (name, state), (count, oldest) in counts.items():
        EVENT_OUTBOX.labels(consumer=name, state=state).set(count)
        if state == "pending":
            EVENT_OLDEST.labels(consumer=name).set(max(0.0, now - oldest.timestamp()) if oldest else 0)
    _outbox_labels.update(counts)


_outbox_labels: set[tuple[str, str]] = set()


def count_reconciled(counts: dict[str, int]) -> None:
    for kind, count in counts.items():
        if count:
            RECONCILED.labels(kind=kind).inc(count)


def observe_services(status: dict[str, str]) -> None:
    for name, value in status.items():
        SERVICE_UP.labels(service=name).set(1 if value == "SERVING" else 0)


_STORED = UPLOADS.labels(outcome="stored")
_REFUSED = UPLOADS.labels(outcome="refused")
_ERROR = UPLOADS.labels(outcome="error")
_THUMBNAIL_OUTCOMES = {outcome: THUMBNAILS.labels(outcome=outcome) for outcome in ("done", "pending", "failed")}


def count_stored(rows, seconds: float | None = None) -> None:
    """Files stored; ``seconds``: how long their POST /upload took (None for tus)."""
    for row in rows:
        _STORED.inc()
        UPLOAD_BYTES.inc(row.size)
    if seconds is not None:
        UPLOAD_SECONDS.observe(seconds)


def count_failure(error) -> None:
    code = getattr(error, "code", None)
    if code:
        _REFUSED.inc()
        REFUSALS.labels(reason=code).inc()
    else:
        _ERROR.inc()


def count_thumbnail(status: str) -> None:
    child = _THUMBNAIL_OUTCOMES.get(status)
    if child is not None:
        child.inc()


def refusals_by_reason() -> dict[str, int]:
    """upload_refusals_total as {reason: count}, every worker's."""
    return _counted(REFUSALS, "upload_refusals_total", "reason")


def uploads_by_outcome() -> dict[str, int]:
    return _counted(UPLOADS, "upload_requests_total", "outcome")


def _counted(counter: Counter, name: str, label: str) -> dict[str, int]:
    collected = counter.collect() if MULTIPROCESS_DIR is None else scraped().collect()
    return {sample.labels[label]: int(sample.value)
            for metric in collected for sample in metric.samples if sample.name == name}


class ClientCallMetrics(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Counts every call made on one channel (``service``: validator or thumbnail)
    by method and status code, and times it. The count is taken when the call
    ends: at once for blocking calls, by a done-callback for futures (the
    Validate stream)."""

    def __init__(self, service: str):
        self.service = service
        # (full method, code) -> counter child; method -> histogram child. Filled on first use
        # (a race only makes two lookups of the same child).
        self._calls: dict[tuple[str, grpc.StatusCode], Counter] = {}
        self._seconds: dict[str, Histogram] = {}

    def _method(self, full: str) -> str:
        # "/upload.v1.Validator/Check" -> "upload.v1.Validator/Check"
        return full[1:] if full.startswith("/") else full

    def _observe(self, method: str, call, started: float) -> None:
        try:
            code = call.code()
        except Exception:  # noqa: BLE001 - counting must never break a call
            code = None
        code = code or grpc.StatusCode.UNKNOWN
        child = self._calls.get((method, code))
        if child is None:
            child = self._calls[(method, code)] = GRPC_CALLS.labels(self.service, self._method(method), code.name)
        child.inc()
        timer = self._seconds.get(method)
        if timer is None:
            timer = self._seconds[method] = GRPC_SECONDS.labels(self.service, self._method(method))
        timer.observe(time.perf_counter() - started)

    def _intercept(self, continuation, details, request):
        started = time.perf_counter()
        call = continuation(details, request)
        method = details.method
        call.add_done_callback(lambda done: self._observe(method, done, started))
        return call

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return self._intercept(continuation, client_call_details, request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return self._intercept(continuation, client_call_details, request_iterator)


def timed(child):
    """``with timed(metrics.VALIDATE): ...`` observes the block's duration (also when it raises)."""
    return _Timer(child)


class _Timer:
    __slots__ = ("child", "started")

    def __init__(self, child):
        self.child = child

    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.child.observe(time.perf_counter() - self.started)
        return False

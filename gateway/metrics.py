"""Prometheus metrics of the gateway (one registry per process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

UPLOADS = Counter("upload_requests_total", "Uploads by outcome (stored, refused reason, error).",
                  ["outcome"], registry=REGISTRY)
REFUSALS = Counter("upload_refusals_total", "Refused files by reason code.", ["reason"], registry=REGISTRY)
UPLOAD_BYTES = Counter("upload_stored_bytes_total", "Bytes of files stored.", registry=REGISTRY)
UPLOAD_SECONDS = Histogram("upload_duration_seconds", "Time to receive, validate and store one file.",
                           buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
                           registry=REGISTRY)
SERVICE_UP = Gauge("upload_service_up", "1 when the gRPC service answers its health check as SERVING.",
                   ["service"], registry=REGISTRY)
THUMBNAILS_PENDING = Gauge("upload_thumbnails_pending", "Thumbnails waiting for the thumbnail service.",
                           registry=REGISTRY)
FILES_REAPED = Counter("upload_files_reaped_total", "Expired files removed by the reaper (bytes, thumbnail, record).",
                       registry=REGISTRY)
RECONCILED = Counter("upload_reconciled_total", "What reconcile repaired, by kind (see gateway/reconcile.py).",
                     ["kind"], registry=REGISTRY)


def count_reconciled(counts: dict[str, int]) -> None:
    for kind, count in counts.items():
        if count:
            RECONCILED.labels(kind=kind).inc(count)


def observe_services(status: dict[str, str]) -> None:
    for name, value in status.items():
        SERVICE_UP.labels(service=name).set(1 if value == "SERVING" else 0)


def count_stored(rows, seconds: float) -> None:
    for row in rows:
        UPLOADS.labels(outcome="stored").inc()
        UPLOAD_BYTES.inc(row.size)
    UPLOAD_SECONDS.observe(seconds)


def count_failure(error) -> None:
    code = getattr(error, "code", None)
    if code:
        UPLOADS.labels(outcome="refused").inc()
        REFUSALS.labels(reason=code).inc()
    else:
        UPLOADS.labels(outcome="error").inc()

"""Prometheus metrics of the thumbnail service, served on THUMBNAIL_METRICS_PORT."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

from protos.metrics import ServerMetrics, new_registry

REGISTRY = new_registry()
GRPC = ServerMetrics(REGISTRY, "thumbnail")
RENDERS = Counter("upload_thumbnail_renders_total",
                  "Render calls by outcome: ok, or the error (unsupported_type, invalid_input, too_large, "
                  "cancelled, internal...).", ["outcome"], registry=REGISTRY)
RENDER_SECONDS = Histogram("upload_thumbnail_render_seconds",
                           "Time of one Render call's work, from its first message to the encoded thumbnail "
                           "(receiving and decoding overlap), by outcome.",
                           ["outcome"],
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                           registry=REGISTRY)
RENDERED_BYTES = Counter("upload_thumbnail_input_bytes_total", "Bytes of files received for rendering.",
                         registry=REGISTRY)
_OK = (RENDERS.labels(outcome="ok"), RENDER_SECONDS.labels(outcome="ok"))


def count_render(outcome: str, seconds: float, size: int) -> None:
    if outcome == "ok":
        counter, timer = _OK
    else:
        counter, timer = RENDERS.labels(outcome=outcome), RENDER_SECONDS.labels(outcome=outcome)
    counter.inc()
    timer.observe(seconds)
    RENDERED_BYTES.inc(size)


TRANSFORMS = Counter("upload_thumbnail_transforms_total",
                     "Transform calls by outcome: changed, unchanged, or the error (unsupported_type, "
                     "invalid_input, too_large, cancelled, internal...).", ["outcome"], registry=REGISTRY)
TRANSFORM_SECONDS = Histogram("upload_thumbnail_transform_seconds",
                              "Time of one Transform call's work, from its first message to the result, by outcome.",
                              ["outcome"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                              registry=REGISTRY)


def count_transform(outcome: str, seconds: float, size: int) -> None:
    TRANSFORMS.labels(outcome=outcome).inc()
    TRANSFORM_SECONDS.labels(outcome=outcome).observe(seconds)

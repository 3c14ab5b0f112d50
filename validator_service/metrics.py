"""Prometheus metrics of the validator, served on VALIDATOR_METRICS_PORT."""
from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge

from protos.metrics import ServerMetrics, new_registry

REGISTRY = new_registry()
GRPC = ServerMetrics(REGISTRY, "validator")
VERDICTS = Counter("upload_validator_verdicts_total",
                   "Verdicts given, by verdict (accepted, refused, undecided: a rule wanted more of the head "
                   "than a Check call carried) and reason code (none when accepted).",
                   ["verdict", "reason"], registry=REGISTRY)
_ACCEPTED = VERDICTS.labels(verdict="accepted", reason="none")
_UNDECIDED = VERDICTS.labels(verdict="undecided", reason="none")


def count_verdict(verdict) -> None:
    if verdict.accepted:
        _ACCEPTED.inc()
    elif verdict.head_incomplete:
        _UNDECIDED.inc()
    else:
        VERDICTS.labels(verdict="refused", reason=verdict.reasons[0].code if verdict.reasons else "unknown").inc()
CLAMAV_SCANS = Counter("upload_validator_clamav_scans_total",
                       "Files the ClamAV rule sent to clamd, by outcome: clean, found (refused as malware), "
                       "unavailable (clamd unreachable or too slow: the call failed UNAVAILABLE), fail_open "
                       "(the same, let through unscanned because CLAMAV_FAIL_OPEN is on), error (clamd would "
                       "not scan it, e.g. over its StreamMaxLength: never let through).",
                       ["outcome"], registry=REGISTRY)
# Made, and so in the registry (or, with VALIDATOR_PROCESSES, in the shared files), only once a
# clamd is watched: without CLAMD_ADDRESS a 0 would read as "clamd down".
_clamd_up: Gauge | None = None
_clamd_up_lock = threading.Lock()


def clamd_up() -> Gauge:
    """upload_validator_clamd_up, made on first use (once, however many servers watch a clamd)."""
    global _clamd_up
    with _clamd_up_lock:
        if _clamd_up is None:
            _clamd_up = Gauge("upload_validator_clamd_up",
                              "1 while clamd answers PING (asked every few seconds), 0 while it does not. "
                              "Present only with CLAMD_ADDRESS set.", registry=REGISTRY, multiprocess_mode="livemin")
        return _clamd_up

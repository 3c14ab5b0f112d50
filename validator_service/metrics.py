"""Prometheus metrics of the validator, served on VALIDATOR_METRICS_PORT."""
from __future__ import annotations

from prometheus_client import Counter

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

"""Property-based fuzzing (hypothesis) of what the gateway reads from clients:
file names, Range headers, tus headers and multipart bodies.

Bounded so the package runs in seconds inside `make test`; FUZZ_EXAMPLES
raises the number of examples per property for a longer hunt, e.g.
`FUZZ_EXAMPLES=2000 make test PYTEST_ARGS=tests/fuzz`.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SCALE = int(os.environ.get("FUZZ_EXAMPLES", "0") or 0)


def bounded(examples: int) -> settings:
    """Settings for one property: ``examples`` runs (FUZZ_EXAMPLES overrides), no
    deadline (the app's first request is slow), no example database (it would
    write .hypothesis/ into the working tree), and one app per test (the
    function-scoped fixtures are shared by the examples on purpose)."""
    return settings(
        max_examples=_SCALE or examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
    )

"""A render job (``RenderChild(..., job=probe)``) that renders as the service's own job
does, then answers which modules the render process had to import to do it."""
from __future__ import annotations

import sys


def probe(render, box, source):
    from thumbnail_service.isolation import _render

    before = set(sys.modules)
    answer = _render(render, box, source)
    imported = sorted(set(sys.modules) - before)
    return "ok", repr((answer[0], imported)).encode(), "text/plain", 0, 0

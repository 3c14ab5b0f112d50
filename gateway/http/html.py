"""HTML answers: our pages are rendered here, and every HTML answer (pages,
and anything else that happens to be HTML) gets the strict security headers."""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache

from flask import Response, current_app, make_response, render_template, url_for

# Everything the page needs is its own: no inline script or style, no other origin.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


@lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def fingerprint(path: str) -> str | None:
    """A short hash of a file's bytes (cached while its mtime holds), or None when it is missing."""
    try:
        return _digest(path, os.stat(path).st_mtime_ns)
    except OSError:
        return None


def asset_url(filename: str) -> str:
    """The URL of a static asset with a content fingerprint (`?v=`), so a browser never
    runs an old app.js against a new page after an upgrade."""
    version = fingerprint(os.path.join(current_app.static_folder, filename))
    if version is None:
        return url_for("static", filename=filename)
    return url_for("static", filename=filename, v=version)


def render_page(template: str, status: int = 200, **context) -> Response:
    """One of our HTML pages (its headers come from secure_html, like every HTML answer's)."""
    return make_response(render_template(template, **context), status)


def secure_html(response):
    """Every HTML answer gets the strict policy: pages, and anything else
    that happens to be HTML (no inline script can ever run from our origin)."""
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response

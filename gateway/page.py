"""GET /: the upload page, and the browser library it loads from node_modules."""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache

from flask import Blueprint, Response, current_app, make_response, render_template, request, url_for

from protos.errors import NotFound

bp = Blueprint("page", __name__)

# Everything the page needs is its own: no inline script or style, no other origin.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

# `make install` runs `npm ci`, which puts the pinned tus-js-client here (never committed).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUS_DIST = os.path.join(ROOT, "node_modules", "tus-js-client", "dist")


@lru_cache(maxsize=64)
def _fingerprint(path: str, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def _version(path: str) -> str | None:
    try:
        return _fingerprint(path, os.stat(path).st_mtime_ns)
    except OSError:
        return None


def asset_url(filename: str) -> str:
    """The URL of a static asset with a content fingerprint (`?v=`), so a browser never
    runs an old app.js against a new page after an upgrade."""
    version = _version(os.path.join(current_app.static_folder, filename))
    if version is None:
        return url_for("static", filename=filename)
    return url_for("static", filename=filename, v=version)


class _Vendor(Blueprint):
    """Static files from node_modules; cached for good only under their own fingerprint."""

    def send_static_file(self, filename: str):
        if not os.path.isdir(self.static_folder):
            raise NotFound("The page's libraries are not installed here; `make install` installs them.")
        response = super().send_static_file(filename)
        if request.args.get("v") == _version(os.path.join(self.static_folder, filename)):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        else:
            response.headers["Cache-Control"] = "no-cache"
        return response


vendor = _Vendor("vendor", __name__, static_folder=TUS_DIST, static_url_path="/vendor")
bp.register_blueprint(vendor)


def vendor_url(filename: str) -> str | None:
    """The fingerprinted URL of a library file from node_modules, or None when it is not
    installed (then the page does without it)."""
    version = _version(os.path.join(TUS_DIST, filename))
    return None if version is None else url_for("page.vendor.static", filename=filename, v=version)


def render_page(template: str, status: int = 200, **context) -> Response:
    """One of our HTML pages, with the headers every one of them carries."""
    html = render_template(template, asset_url=asset_url, vendor_url=vendor_url, **context)
    response = make_response(html, status)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.get("/")
def index():
    return render_page("index.html")

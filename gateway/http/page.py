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


@bp.get("/")
def index():
    from gateway.auth import auth_enabled, csrf_token, current_user
    from gateway.login import login_page

    user = current_user()
    if auth_enabled() and user is None:
        return login_page()
    return render_page("index.html", user=user, csrf_token=csrf_token() if user is not None else "")


def init_app(app) -> None:
    app.jinja_env.globals.update(asset_url=asset_url, vendor_url=vendor_url)
    app.after_request(secure_html)

"""GET /: the upload page, and the browser library it loads from node_modules."""
from __future__ import annotations

import os

from flask import Blueprint, request, url_for

from gateway.auth.identity import auth_enabled, csrf_token, current_user
from gateway.http.html import asset_url, fingerprint, render_page, secure_html
from gateway.http.login import login_page
from protos.errors import NotFound

bp = Blueprint("page", __name__)

# `make install` runs `npm ci`, which puts the pinned tus-js-client here (never committed).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TUS_DIST = os.path.join(ROOT, "node_modules", "tus-js-client", "dist")


class _Vendor(Blueprint):
    """Static files from node_modules; cached for good only under their own fingerprint."""

    def send_static_file(self, filename: str):
        if not os.path.isdir(self.static_folder):
            raise NotFound("The page's libraries are not installed here; `make install` installs them.")
        response = super().send_static_file(filename)
        if request.args.get("v") == fingerprint(os.path.join(self.static_folder, filename)):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        else:
            response.headers["Cache-Control"] = "no-cache"
        return response


vendor = _Vendor("vendor", __name__, static_folder=TUS_DIST, static_url_path="/vendor")
bp.register_blueprint(vendor)


def vendor_url(filename: str) -> str | None:
    """The fingerprinted URL of a library file from node_modules, or None when it is not
    installed (then the page does without it)."""
    version = fingerprint(os.path.join(TUS_DIST, filename))
    return None if version is None else url_for("page.vendor.static", filename=filename, v=version)


@bp.get("/")
def index():
    user = current_user()
    if auth_enabled() and user is None:
        return login_page()
    return render_page("index.html", user=user, csrf_token=csrf_token() if user is not None else "")


def init_app(app) -> None:
    app.jinja_env.globals.update(asset_url=asset_url, vendor_url=vendor_url)
    app.after_request(secure_html)

"""GET /: the upload page."""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache

from flask import Blueprint, current_app, render_template, url_for

bp = Blueprint("page", __name__)


@lru_cache(maxsize=64)
def _fingerprint(path: str, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:12]


def asset_url(filename: str) -> str:
    """The URL of a static asset with a content fingerprint (`?v=`), so a browser never
    runs an old app.js against a new page after an upgrade."""
    path = os.path.join(current_app.static_folder, filename)
    try:
        version = _fingerprint(path, os.stat(path).st_mtime_ns)
    except OSError:
        return url_for("static", filename=filename)
    return url_for("static", filename=filename, v=version)


@bp.get("/")
def index():
    return render_template("index.html", asset_url=asset_url)

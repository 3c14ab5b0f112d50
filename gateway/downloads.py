"""Serving stored bytes: downloads and thumbnails."""
from __future__ import annotations

from flask import Blueprint, send_file

from gateway.auth import owner_scope
from gateway.db import repository
from gateway.expiry import refuse_expired
from gateway.names import sanitize
from gateway.storage import storage
from protos.errors import NotFound

bp = Blueprint("downloads", __name__)

# Types a browser would run as a page: never rendered inline from our origin.
ACTIVE_TYPES = {
    "image/svg+xml", "text/html", "application/xhtml+xml", "text/xml", "application/xml",
    "text/javascript", "application/javascript",
}


def _serve(area: str, name: str, mimetype: str, etag: str, download_name: str, active: bool):
    path = storage().path(area, name)
    if path is None or not path.is_file():
        raise NotFound("Nothing is stored under that name.")
    response = send_file(path, mimetype=mimetype, conditional=True, etag=etag,
                         download_name=download_name, as_attachment=active)
    response.headers["X-Content-Type-Options"] = "nosniff"
    if active:
        response.headers["Content-Security-Policy"] = "sandbox"
    return response


def send_stored(row):
    """The bytes of a stored file (downloads and share links alike); 410 once it has expired."""
    refuse_expired(row)
    active = row.type in ACTIVE_TYPES or row.type.endswith("+xml")
    # Sanitized on the way in already; once more on the way out (idempotent), so a row written
    # by anything else (an older version, a migration, another tool) cannot break the header.
    response = _serve("files", row.filename, row.type, row.sha256, sanitize(row.original_name), active)
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@bp.get("/uploads/<name>")
def download(name: str):
    row = repository().by_filename(name, owner=owner_scope())
    if row is None:
        raise NotFound("Nothing is stored under that name.")
    return send_stored(row)


@bp.get("/thumbnails/<name>")
def thumbnail(name: str):
    row = repository().by_thumbnail(name, owner=owner_scope())
    if row is None:
        raise NotFound("There is no thumbnail under that name.")
    refuse_expired(row)
    mimetype = "image/png" if name.endswith(".png") else "image/jpeg"
    response = _serve("thumbnails", name, mimetype, f"t-{row.sha256}", name, False)
    # Thumbnail names are random and never reused: cache them for good, but only in the
    # browser (with accounts a thumbnail is as private as its file; no shared cache may keep it).
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return response

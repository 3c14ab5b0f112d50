"""Serving stored bytes: downloads and thumbnails."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Blueprint, Response, redirect, request, send_file

from gateway.auth.identity import owner_scope
from gateway.ingest.names import sanitize
from gateway.metadata.files import repository
from gateway.storage.base import storage
from gateway.storage.expiry import refuse_expired
from gateway.storage.s3 import content_disposition
from protos.errors import NotFound

bp = Blueprint("downloads", __name__)

# Types a browser would run as a page: never rendered inline from our origin.
ACTIVE_TYPES = {
    "image/svg+xml", "text/html", "application/xhtml+xml", "text/xml", "application/xml",
    "text/javascript", "application/javascript",
}


def _serve(area: str, name: str, mimetype: str, etag: str, download_name: str, active: bool):
    if not storage().local:
        response = _serve_object(area, name, mimetype, etag, download_name, active)
    else:
        path = storage().path(area, name)
        if path is None or not path.is_file():
            raise NotFound("Nothing is stored under that name.")
        response = send_file(path, mimetype=mimetype, conditional=True, etag=etag,
                             download_name=download_name, as_attachment=active)
    response.headers["X-Content-Type-Options"] = "nosniff"
    if active:
        response.headers["Content-Security-Policy"] = "sandbox"
    return response


class _ObjectResponse(Response):
    """An object in the bucket, fetched only once werkzeug's conditional and
    Range handling (the same as send_file's) has decided what to send: the
    whole object, one range of it (get_object with Range), or nothing (304,
    416, HEAD)."""

    def __init__(self, store, area: str, name: str, size: int, **kwargs):
        super().__init__(**kwargs)
        self.response = _Lazy(store, area, name, 0, size)

    def _wrap_range_response(self, start: int, length: int) -> None:
        if self.status_code == 206:
            whole = self.response
            self.response = _Lazy(whole.store, whole.area, whole.name, start, length)


class _Lazy:
    """Iterating fetches and streams the bytes; a body never iterated costs no request."""

    def __init__(self, store, area: str, name: str, start: int, length: int):
        self.store, self.area, self.name, self.start, self.length = store, area, name, start, length
        self._chunks = None

    def __iter__(self):
        self._chunks = self.store.read_range(self.area, self.name, self.start, self.length)
        return self._chunks

    def close(self):
        if self._chunks is not None:
            self._chunks.close()


def _serve_object(area: str, name: str, mimetype: str, etag: str, download_name: str, active: bool):
    store = storage()
    stat = store.stat(area, name)
    if stat is None:
        raise NotFound("Nothing is stored under that name.")
    response = _ObjectResponse(store, area, name, stat.size, mimetype=mimetype, direct_passthrough=True)
    response.set_etag(etag)
    response.last_modified = datetime.fromtimestamp(int(stat.mtime), timezone.utc)
    response.headers["Content-Disposition"] = content_disposition(download_name, active)
    response.content_length = stat.size
    # Active types are always passed through: only the gateway can add the sandbox to them.
    if store.presigned and area == "files" and not active:
        response.make_conditional(request, accept_ranges=False)
        if response.status_code in (304, 412):
            return response
        # The bucket serves the bytes (and Range) itself; the URL works for S3_PRESIGNED_TTL seconds.
        return redirect(store.presigned_url(area, name, mimetype, download_name, active), 302)
    return response.make_conditional(request, accept_ranges=True, complete_length=stat.size)


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

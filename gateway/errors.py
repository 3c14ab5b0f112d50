"""Every error leaves the gateway as JSON with a sentence a person understands."""
from __future__ import annotations

import logging

from flask import Flask, Response, g, has_request_context, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

from gateway.metadata.refusals import record
from gateway.storage.s3 import is_storage_error
from protos.errors import Gone, InsufficientStorage, NotFound, Refused, Unavailable, UploadError, is_out_of_space

log = logging.getLogger("upload.gateway")


def prefers_html() -> bool:
    """A browser following a link (its Accept ranks text/html above JSON),
    not a script or an API client (JSON, or */* alike)."""
    accept = request.accept_mimetypes
    return accept.quality("text/html") > accept.quality("application/json")


def error_response(error: UploadError) -> Response:
    if isinstance(error, Gone):
        # A 410 is met by people following an old link (an expired file, later
        # an expired share link): they get a page saying so, programs the JSON.
        response = _gone_page(error) if prefers_html() else _json_error(error)
        response.vary.add("Accept")
        return response
    return _json_error(error)


def _gone_page(error: Gone) -> Response:
    # Rendered here, not by gateway.http (which uses this module); its CSP comes from
    # gateway.http.html.secure_html like every HTML answer's.
    return make_response(render_template("gone.html", heading=error.message.rstrip(".")), error.http_status)


def _json_error(error: UploadError) -> Response:
    body = {"error": error.message}
    if isinstance(error, Refused):
        _record(error)
        body["code"] = error.code
        if error.original_name:
            body["filename"] = error.original_name
        if error.rule:
            body["rule"] = error.rule
    response = jsonify(body)
    response.status_code = error.http_status
    if error.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="upload-service"'
    return response


def _record(refused: Refused) -> None:
    """Every refusal the gateway answers is recorded here, once: POST /upload's and tus'."""
    if not has_request_context():
        return
    user = g.get("user")  # set by gateway.auth before any view (a sibling layer: not imported)
    via = "tus" if request.path.startswith("/tus") else "upload"
    record(refused.original_name or "", refused.code, refused.rule or "", refused.size,
           user.id if user is not None else None, via)


def _http_error(exc: HTTPException) -> Response:
    response = jsonify(error=exc.description)
    response.status_code = exc.code or 500
    for name, value in exc.get_headers():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


def _unexpected(exc: Exception) -> Response:
    # A full disk met outside the upload paths (a session, a share, a tus
    # creation, the database itself): a 507 like the uploads get.
    if is_out_of_space(exc):
        log.warning("storage full: %s", exc)
        return error_response(InsufficientStorage(
            "The server has run out of storage space, so this could not be done. Please try again later."))
    if is_storage_error(exc):
        # STORAGE=s3 and the bucket failed the request (after boto3's retries).
        log.warning("file storage unavailable: %s", exc)
        return error_response(Unavailable(
            "The file storage cannot be reached right now; nothing was changed. Please try again later."))
    log.exception("unhandled error")
    response = jsonify(error="Something went wrong on our side; nothing was stored. Please try again.")
    response.status_code = 500
    return response


# Path values checked some other way first: a share link's token by its signature
# (a changed character, a NUL included, is 403 "tampered", as the contract says).
_OWN_PATH_CHECKS = frozenset({"sharing.open_share"})


def refuse_nul_in_path() -> None:
    """(before_request, after authentication) An id or a name in the path holding a
    NUL names nothing this service made, and PostgreSQL cannot even compare it (its
    query would fail: a 500 for bad input)."""
    if request.endpoint in _OWN_PATH_CHECKS:
        return
    if request.view_args and any(isinstance(v, str) and "\x00" in v for v in request.view_args.values()):
        raise NotFound("There is nothing at this address.")


def init_app(app: Flask) -> None:
    app.register_error_handler(UploadError, error_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)

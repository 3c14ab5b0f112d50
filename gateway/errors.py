"""Every error leaves the gateway as JSON with a sentence a person understands."""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from protos.errors import Refused, UploadError

log = logging.getLogger("upload.gateway")


def error_response(error: UploadError) -> Response:
    body = {"error": error.message}
    if isinstance(error, Refused):
        body["code"] = error.code
        if error.original_name:
            body["filename"] = error.original_name
    response = jsonify(body)
    response.status_code = error.http_status
    if error.http_status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="upload-service"'
    return response


def _http_error(exc: HTTPException) -> Response:
    response = jsonify(error=exc.description)
    response.status_code = exc.code or 500
    for name, value in exc.get_headers():
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    response = jsonify(error="Something went wrong on our side; nothing was stored. Please try again.")
    response.status_code = 500
    return response


def init_app(app: Flask) -> None:
    app.register_error_handler(UploadError, error_response)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)

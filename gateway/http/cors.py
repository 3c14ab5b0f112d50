"""Cross-origin access for the pages listed in CORS_ORIGINS (none by default).

Written out rather than taken from flask-cors: the contract fixes the exact
request and exposed headers (the tus ones), and it is a dozen lines.
"""
from __future__ import annotations

from flask import Flask, request

ALLOW_HEADERS = ("Tus-Resumable, Upload-Length, Upload-Offset, Upload-Metadata, Upload-Checksum, "
                 "Upload-Concat, Upload-Defer-Length, Content-Type, Authorization, X-Requested-With, "
                 "X-HTTP-Method-Override")
EXPOSE_HEADERS = ("Location, Upload-Offset, Upload-Length, Upload-Expires, Upload-Metadata, Upload-Concat, "
                  "Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, "
                  "Upload-File-Id, Content-Disposition, ETag")
ALLOW_METHODS = "GET, HEAD, POST, PATCH, DELETE, OPTIONS"


def init_app(app: Flask) -> None:
    origins = {o.strip().rstrip("/") for o in app.config["CORS_ORIGINS"].split(",") if o.strip()}
    if not origins:
        return

    @app.after_request
    def _cors(response):
        origin = request.headers.get("Origin", "")
        response.vary.add("Origin")
        if origin not in origins and "*" not in origins:
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = "86400"
        return response

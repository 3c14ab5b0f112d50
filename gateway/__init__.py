"""The HTTP gateway: receives uploads and calls the gRPC services."""
from __future__ import annotations

from flask import Flask

from gateway import config


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config.from_env())
    if test_config:
        app.config.update(test_config)

    from gateway import (cors, db, downloads, errors, expiry, files, ingest, meta, openapi, page, services,
                         storage, thumbnails, tus, uploads)

    # Resources first (each init_app puts one in app.extensions), then the HTTP surface.
    storage.init_app(app)
    db.init_app(app)
    services.init_app(app)
    thumbnails.init_app(app)
    ingest.init_app(app)
    expiry.init_app(app)
    tus.init_app(app)
    errors.init_app(app)
    cors.init_app(app)
    for module in (meta, uploads, files, downloads, page, openapi, tus):
        app.register_blueprint(module.bp)

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return app

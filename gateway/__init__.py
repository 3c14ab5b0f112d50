"""The HTTP gateway: receives uploads and calls the gRPC services."""
from __future__ import annotations

from flask import Flask

from gateway import config


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config.from_env())
    if test_config:
        app.config.update(test_config)

    from gateway import (accounts, accounts_api, auth, cli, cors, dashboard, db, downloads, errors, expiry, files,
                         ingest, jsonbody, limits, login, meta, openapi, page, reconcile, services, sharing, storage,
                         thumbnails, tus, uploads)

    # Resources first (each init_app puts one in app.extensions), then the HTTP surface.
    storage.init_app(app)
    db.init_app(app)  # migrates the schema (every table) to head
    accounts.init_app(app)
    services.init_app(app)
    thumbnails.init_app(app)
    ingest.init_app(app)
    expiry.init_app(app)
    tus.init_app(app)
    reconcile.init_app(app)  # after tus: it must know which partial bytes are still wanted
    errors.init_app(app)
    app.before_request(jsonbody.limit_small_bodies)
    auth.init_app(app)
    cors.init_app(app)
    page.init_app(app)
    cli.init_app(app)
    for module in (meta, uploads, files, downloads, page, openapi, tus, login, accounts_api, sharing, dashboard):
        app.register_blueprint(module.bp)
    limits.init_app(app)  # wraps views registered above; after auth, whose user it keys on

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return app

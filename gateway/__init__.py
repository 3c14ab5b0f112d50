"""The HTTP gateway: receives uploads and calls the gRPC services.

``create_app`` puts it together. Its parts, each a sub-package, and the one way
their imports run (checked by import-linter, see pyproject.toml):

    events          plugins, and the delivery of events about files to them (webhooks)
    http, openapi   the HTTP surface: blueprints, pages, the OpenAPI document
    tus             resumable uploads: protocol, routes, write path, stores
    ingest | auth   the upload pipeline and gRPC clients | who is asking, quotas
    storage         the bytes: local disk or S3; expiry, reconcile
    metadata        the records: schema, migrations, repositories

The modules beside them (config, errors, metrics, background) are used by all;
hookspecs is what gateway plugins see (events about stored files), and events
delivers those events to them (webhooks included).

Importing this package imports nothing beyond the standard library: every
service's plugin manager imports ``gateway.hookspecs``, and a validator or
thumbnail install has no Flask.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: dict | None = None) -> Flask:
    from flask import Flask

    from gateway import config

    app = Flask(__name__)
    app.config.update(config.from_env())
    if test_config:
        app.config.update(test_config)

    from gateway import cli, errors, metadata, storage
    from gateway.auth import identity
    from gateway.events import dispatch as events
    from gateway.http import (accounts, cors, dashboard, downloads, files, jsonbody, limits, login, meta, page,
                              sharing, uploads)
    from gateway.ingest import pipeline, services, thumbnails
    from gateway.metadata import accounts as account_store
    from gateway.openapi import document as openapi
    from gateway.storage import expiry, reconcile
    from gateway.tus import routes as tus

    # Resources first (each init_app puts one in app.extensions), then the HTTP surface.
    storage.init_app(app)
    metadata.init_app(app)  # migrates the schema (every table) to head
    events.init_app(app)  # plugins: before anything writes a file's row, so its event is written with it
    account_store.init_app(app)
    services.init_app(app)
    thumbnails.init_app(app)
    pipeline.init_app(app)
    expiry.init_app(app)
    tus.init_app(app)
    reconcile.init_app(app)  # after tus: it must know which partial bytes are still wanted
    errors.init_app(app)
    app.before_request(jsonbody.limit_small_bodies)
    identity.init_app(app)
    app.before_request(errors.refuse_nul_in_path)  # after identity: no token is still 401
    cors.init_app(app)
    page.init_app(app)
    cli.init_app(app)
    for module in (meta, uploads, files, downloads, page, openapi, tus, login, accounts, sharing, dashboard):
        app.register_blueprint(module.bp)
    limits.init_app(app)  # wraps views registered above; after auth, whose user it keys on

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    return app

"""The HTTP gateway: receives uploads and calls the gRPC services."""
from __future__ import annotations

from flask import Flask

from gateway import config


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config.from_env())
    if test_config:
        app.config.update(test_config)

    from gateway import health, services

    services.init_app(app)
    app.register_blueprint(health.bp)
    return app

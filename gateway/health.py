"""Liveness and readiness."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from gateway.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    status = services().health(current_app.config["HEALTH_TIMEOUT"])
    ready = all(value == "SERVING" for value in status.values())
    return jsonify(ready=ready, services=status), 200 if ready else 503

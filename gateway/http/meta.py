"""What the gateway says about itself: health, readiness, policy, metrics."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import metrics
from gateway.auth.identity import auth_enabled, current_user
from gateway.ingest.services import services
from gateway.metadata.files import repository
from gateway.metadata.outbox import outbox
from protos.plugins import loaded_plugins
from protos.text import human_size

bp = Blueprint("meta", __name__)

# What the page (tus-js-client) sends per PATCH, and the size above which it uses tus at all.
TUS_CHUNK_SIZE = 8 * 1024 * 1024


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    report = services().health_report()
    status = {name: value for name, (value, _) in report.items()}
    metrics.observe_services(status)
    ready = all(value == "SERVING" for value in status.values())
    # Which part is down and why, for whoever reads a 503 (the services' states alone say little).
    reasons = {name: why for name, (_, why) in report.items() if why}
    return jsonify(ready=ready, services=status, reasons=reasons), 200 if ready else 503


def _plugins_json(infos) -> list[dict]:
    """A service's PluginInfo messages as protos.plugins.loaded_plugins gives the gateway's own."""
    return [{"name": i.name, "from": i.source, "hooks": list(i.hooks)} for i in infos]


@bp.get("/policy")
def policy():
    p = services().policy()
    allowed = [{"extension": t.extension, "mime_types": list(t.mime_types)} for t in p.allowed]
    extra = {}
    user = current_user()
    if not auth_enabled() or (user is not None and user.admin):
        # Which plugins decide here (the validator's rules, the gateway's events), with their
        # versions: for operators, not for anyone who can reach an open endpoint.
        extra["plugins"] = {
            "validator": _plugins_json(p.plugins),
            "thumbnail": _plugins_json(services().thumbnail_plugins()),
            "gateway": loaded_plugins(current_app.extensions["plugins"]),
        }
    return jsonify(
        **extra,
        allowed=allowed,
        extensions=[t["extension"] for t in allowed],
        accept=",".join(f".{t['extension']}" for t in allowed),
        max_file_size=p.max_file_size,
        max_file_size_formatted=human_size(p.max_file_size),
        max_image_dimension=p.max_image_dimension,
        whole_file=p.whole_file,
        tus={"endpoint": "/tus/", "chunk_size": TUS_CHUNK_SIZE},
    )


@bp.get("/metrics")
def metrics_endpoint():
    metrics.observe_services(services().health())
    metrics.THUMBNAILS_PENDING.set(repository().count_pending_thumbnails())
    metrics.observe_outbox(outbox().stats(), outbox().subscribers())
    return Response(generate_latest(metrics.scraped()), mimetype=CONTENT_TYPE_LATEST)

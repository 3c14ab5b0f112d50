"""Builds and runs the validator's gRPC server."""
from __future__ import annotations

import logging
import os
import sys

import grpc
import pluggy

from protos.admission import Limits
from protos.metrics import metrics_host, serve_metrics
from protos.processes import serve_children, shared_registry
from protos.plugins import create_plugin_manager
from protos.serving import SPARE_THREADS, build_server, configure_logging, listen_address, serve_until_signalled
from protos.upload.v1 import validator_pb2, validator_pb2_grpc
from validator_service import metrics
from validator_service.config import Settings
from validator_service.policy import build_policy
from validator_service.rules import DEFAULT_PLUGINS
from validator_service.rules.clamav import ClamAV
from validator_service.rules.clamav_health import watch_clamd
from validator_service.servicer import ValidatorServicer

log = logging.getLogger("upload.validator")

SERVICE_NAME = validator_pb2.DESCRIPTOR.services_by_name["Validator"].full_name


def create_plugins(env=None, extra_plugins=()) -> pluggy.PluginManager:
    """The built-in rules, installed and named plugins, ``extra_plugins``; and the ClamAV
    rule when the environment's CLAMD_ADDRESS names a clamd."""
    env = os.environ if env is None else env
    clamav = ClamAV.from_env(env)
    if clamav is not None:
        extra_plugins = (clamav, *extra_plugins)
        if not clamav.ping():
            log.warning("clamd does not answer at %s (CLAMD_ADDRESS): until it does, uploads %s", clamav.address,
                        "are let through unscanned (CLAMAV_FAIL_OPEN)" if clamav.fail_open else "get 503")
    return create_plugin_manager(DEFAULT_PLUGINS, env=env, extra_plugins=extra_plugins)


def create_server(address: str, pm: pluggy.PluginManager | None = None,
                  settings: Settings | None = None) -> tuple[grpc.Server, int]:
    """A validator server bound to ``address`` (port 0 picks a free port), not yet started."""
    settings = settings or Settings.from_env()
    pm = pm or create_plugins()
    servicer = ValidatorServicer(pm, build_policy(pm, settings, DEFAULT_PLUGINS), settings)
    server, port = build_server(
        address,
        lambda s: validator_pb2_grpc.add_ValidatorServicer_to_server(servicer, s),
        [SERVICE_NAME],
        max_workers=settings.workers + SPARE_THREADS,
        max_connection_age=settings.max_connection_age,
        metrics=metrics.GRPC,
        limits=Limits(frozenset({f"/{SERVICE_NAME}/Validate", f"/{SERVICE_NAME}/Check"}), settings.workers,
                      settings.stream_idle_timeout, settings.max_call_time),
        tls=settings.tls,
    )
    # clamd down makes the Validator service NOT_SERVING (not the server's ""), until it answers.
    server.clamd_watch = watch_clamd(pm.get_plugins(), server, SERVICE_NAME)
    return server, port


def serve(env=None) -> None:
    env = os.environ if env is None else env
    configure_logging(env.get("LOG_LEVEL", "INFO"))
    settings = Settings.from_env(env)
    listen = listen_address(env, "VALIDATOR_LISTEN", settings.address)
    if settings.processes > 1:
        # Prometheus scrapes the parent, which adds up every process's metrics.
        serve_metrics(shared_registry(os.getpid), settings.metrics_port, metrics_host(listen),
                      "VALIDATOR_METRICS_PORT")
        sys.exit(serve_children(settings.processes, listen, "VALIDATOR_PROCESSES",
                                lambda: _serve_one(listen, settings)))
    # Prometheus scrapes this process on the gRPC interface, its own port.
    serve_metrics(metrics.REGISTRY, settings.metrics_port, metrics_host(listen), "VALIDATOR_METRICS_PORT")
    _serve_one(listen, settings)


def _serve_one(listen: str, settings: Settings) -> None:
    server, _ = create_server(listen, settings=settings)
    serve_until_signalled(server, settings.grace)

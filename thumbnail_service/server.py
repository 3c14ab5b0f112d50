"""Builds and runs the thumbnail gRPC server."""
from __future__ import annotations

import os
import sys

import grpc
import pluggy

from protos.admission import Limits
from protos.metrics import metrics_host, serve_metrics
from protos.processes import serve_children, shared_registry
from protos.plugins import create_plugin_manager
from protos.serving import SPARE_THREADS, build_server, configure_logging, listen_address, serve_until_signalled
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc
from thumbnail_service import metrics
from thumbnail_service.config import Settings
from thumbnail_service.renderers import DEFAULT_PLUGINS
from thumbnail_service.servicer import ThumbnailServicer

SERVICE_NAME = thumbnail_pb2.DESCRIPTOR.services_by_name["Thumbnail"].full_name
# Render calls in flight per render slot: one rendering while another is still arriving.
CALLS_PER_RENDER = 2


def create_plugins(env=None, extra_plugins=()) -> pluggy.PluginManager:
    return create_plugin_manager(DEFAULT_PLUGINS, env=env, extra_plugins=extra_plugins)


def create_server(address: str, pm: pluggy.PluginManager | None = None,
                  settings: Settings | None = None) -> tuple[grpc.Server, int]:
    """A thumbnail server bound to ``address`` (port 0 picks a free port), not yet started."""
    settings = settings or Settings.from_env()
    servicer = ThumbnailServicer(pm or create_plugins(), settings, DEFAULT_PLUGINS)
    return build_server(
        address,
        lambda s: thumbnail_pb2_grpc.add_ThumbnailServicer_to_server(servicer, s),
        [SERVICE_NAME],
        max_workers=settings.workers * CALLS_PER_RENDER + SPARE_THREADS,
        max_connection_age=settings.max_connection_age,
        metrics=metrics.GRPC,
        # Calls in flight, receiving or rendering: a caller that opens Render streams and sends
        # nothing holds at most these, never the threads health checks need. The renders
        # themselves (processes) are the servicer's own slots, THUMBNAIL_WORKERS.
        limits=Limits(frozenset({f"/{SERVICE_NAME}/Render", f"/{SERVICE_NAME}/Transform"}), settings.workers * CALLS_PER_RENDER,
                      settings.stream_idle_timeout, settings.max_call_time),
        tls=settings.tls,
    )


def serve(env=None) -> None:
    env = os.environ if env is None else env
    configure_logging(env.get("LOG_LEVEL", "INFO"))
    settings = Settings.from_env(env)
    listen = listen_address(env, "THUMBNAIL_LISTEN", settings.address)
    if settings.processes > 1:
        # Prometheus scrapes the parent, which adds up every process's metrics.
        serve_metrics(shared_registry(os.getpid), settings.metrics_port, metrics_host(listen),
                      "THUMBNAIL_METRICS_PORT")
        sys.exit(serve_children(settings.processes, listen, "THUMBNAIL_PROCESSES",
                                lambda: _serve_one(listen, settings)))
    # Prometheus scrapes this process on the gRPC interface, its own port.
    serve_metrics(metrics.REGISTRY, settings.metrics_port, metrics_host(listen), "THUMBNAIL_METRICS_PORT")
    _serve_one(listen, settings)


def _serve_one(listen: str, settings: Settings) -> None:
    server, _ = create_server(listen, settings=settings)
    serve_until_signalled(server, settings.grace)

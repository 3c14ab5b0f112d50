"""Serve the gateway with gunicorn (GATEWAY_WORKERS threaded worker processes),
configured from the environment.

The worker (``gateway.serving.worker.GatewayWorker``) is gunicorn's ``gthread``
with deadlines and limits for slow and abusive clients; what several of them
share is in ``gateway.serving.processes``. Only the standard library and
``gateway.config`` (and protos.processes) are imported at the top: the metrics
mode must be chosen before prometheus_client is imported (``main``).
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import resource

from gateway import config
from gateway.serving import processes
from protos.processes import prepare_metrics, remove_metrics_dir

# mallopt's parameter number for the arena cap (glibc's malloc.h).
M_ARENA_MAX = -8


def gateway_server(settings: dict):
    """The gunicorn application; its class is made here so that gunicorn (and through it
    the gateway) is imported only after ``processes.prepare_metrics``."""
    from gunicorn.app.base import BaseApplication

    from gateway import create_app
    from gateway.background import take_turns
    from gateway.events import dispatch as events
    from gateway.serving.worker import GatewayWorker
    from gateway.storage import reconcile

    class GatewayServer(BaseApplication):
        def load_config(self):
            s = settings
            self.cfg.set("bind", f"{s['GATEWAY_HOST']}:{s['GATEWAY_PORT']}")
            self.cfg.set("worker_class", GatewayWorker)
            self.cfg.set("workers", s["GATEWAY_WORKERS"])
            self.cfg.set("threads", s["GATEWAY_THREADS"])
            self.cfg.set("worker_connections", s["GATEWAY_CONNECTIONS"])
            self.cfg.set("accesslog", "-")
            self.cfg.set("limit_request_line", s["MAX_REQUEST_LINE"])
            self.cfg.set("limit_request_fields", s["MAX_HEADER_COUNT"])
            self.cfg.set("limit_request_field_size", s["MAX_HEADER_SIZE"])
            self.cfg.set("child_exit", processes.worker_exited)

        def load(self):
            if settings["GATEWAY_WORKERS"] > 1:
                take_turns(processes.BackgroundTurn(settings["DATA_DIR"]))
            app = create_app()
            reconcile.start(app)
            events.start(app)
            return app

    return GatewayServer()


def limit_malloc_arenas(env=os.environ) -> bool:
    """Cap glibc's malloc arenas at 2 unless the operator chose (MALLOC_ARENA_MAX).

    glibc gives threads arenas of their own, up to 8 per core, and each keeps
    what it once held: the worker's RSS crept ~10 MiB over its first requests
    as new threads took them, whatever their size. Python's small objects do
    not come from malloc and the GIL serialises the rest, so two arenas cost no
    speed. Set before gunicorn forks, so the worker inherits it."""
    if env.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, 2))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to cap
        return False


# Descriptors the gateway needs besides its client connections: the database,
# gRPC channels, files being read or written, logs.
OTHER_DESCRIPTORS = 256


def raise_open_files_limit(connections: int) -> int:
    """Raise the soft limit on open files to what GATEWAY_CONNECTIONS needs, as far
    as the hard limit allows, and return it. Many systems start services at 1024,
    below the default 1000 connections plus everything else; the worker inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + OTHER_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def main() -> None:
    settings = config.from_env()
    atexit.register(remove_metrics_dir, prepare_metrics(settings["GATEWAY_WORKERS"]), os.getpid())

    from gateway.events import dispatch as events
    from gateway.storage.s3 import S3Storage
    from protos.serving import configure_logging

    # The gateway's own lines (its plugins at start-up, stored and refused files...) beside
    # gunicorn's: the same format and LOG_LEVEL as the gRPC services'.
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    limit_malloc_arenas()
    raise_open_files_limit(settings["GATEWAY_CONNECTIONS"])
    config.check_exposure(settings)
    if settings["STORAGE"] == "s3":
        S3Storage.from_config(settings)  # a missing bucket stops us here, in one sentence, before any worker
    events.plugin_manager(settings)  # so does a plugin that cannot be loaded (a worker would be restarted for ever)
    gateway_server(settings).run()


if __name__ == "__main__":
    main()

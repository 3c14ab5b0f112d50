"""Thumbnail settings, all from environment variables (see the README table)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from protos.serving import env_int
from protos.tls import ServerTls


@dataclass(frozen=True)
class Settings:
    address: str = "127.0.0.1:50052"
    # Longest side of a thumbnail, in pixels.
    size: int = 200
    # Largest file the service will take in; larger is RESOURCE_EXHAUSTED.
    max_input: int = 100 * 1024 * 1024
    # Images with more pixels are refused (Pillow's Image.MAX_IMAGE_PIXELS).
    max_pixels: int = 89_478_485
    # Renders at once, each a child process of its own; a Render call beyond them is
    # UNAVAILABLE at once (retry shortly). The gRPC server has a few threads more, so
    # health checks, reflection and GetRenderers answer whatever the renders do.
    workers: int = 2
    # What one render may take (thumbnail_service/isolation.py): CPU seconds and bytes of
    # memory. Over it is RESOURCE_EXHAUSTED for that file, never retried. A genuine 5000x5000
    # image takes at most ~2 s and ~450 MiB (a lossless WebP), so these leave room.
    render_cpu: int = 4
    render_memory: int = 512 * 1024 * 1024
    grace: float = 10.0
    # Processes serving the one port (SO_REUSEPORT, protos/processes.py), each with its own
    # GIL and its own work slots; 1: this process serves, as before.
    processes: int = 1
    # Seconds before a client connection is asked to reconnect (0: never). gRPC
    # clients resolve DNS again only when a connection ends, so this bounds how
    # long new replicas wait for their share of the calls.
    max_connection_age: int = 60
    # A request stream whose caller sends nothing this long while the server waits for it
    # is cut (0: never); the gateway keeps its own streams alive while an upload arrives.
    stream_idle_timeout: int = 60
    # The longest a work call may last (0: no limit): the gateway's UPLOAD_TIMEOUT's default.
    max_call_time: int = 3600
    # The Prometheus endpoint (http://<listen host>:<port>/metrics); 0: none.
    metrics_port: int = 9102
    # GRPC_TLS_CERT/_KEY (and _CA for mutual TLS); None: plaintext.
    tls: ServerTls | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            address=env.get("THUMBNAIL_ADDR", cls.address),
            size=env_int(env, "THUMBNAIL_SIZE", cls.size),
            max_input=env_int(env, "THUMBNAIL_MAX_INPUT", cls.max_input),
            max_pixels=env_int(env, "THUMBNAIL_MAX_PIXELS", cls.max_pixels),
            workers=env_int(env, "THUMBNAIL_WORKERS", cls.workers, minimum=1),
            render_cpu=env_int(env, "THUMBNAIL_RENDER_CPU", cls.render_cpu, minimum=1),
            # Below this no genuine image renders at all: a typo, said at start-up.
            render_memory=env_int(env, "THUMBNAIL_RENDER_MEMORY", cls.render_memory, minimum=16 * 1024 * 1024),
            grace=float(env_int(env, "SHUTDOWN_GRACE", int(cls.grace))),
            processes=env_int(env, "THUMBNAIL_PROCESSES", cls.processes, minimum=1),
            max_connection_age=env_int(env, "GRPC_MAX_CONNECTION_AGE", cls.max_connection_age),
            stream_idle_timeout=env_int(env, "GRPC_STREAM_IDLE_TIMEOUT", cls.stream_idle_timeout, minimum=0),
            max_call_time=env_int(env, "GRPC_MAX_CALL_TIME", cls.max_call_time, minimum=0),
            metrics_port=env_int(env, "THUMBNAIL_METRICS_PORT", cls.metrics_port),
            tls=ServerTls.from_env(env, who="the thumbnail service"),
        )

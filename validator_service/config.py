"""Validator settings, all from environment variables (see the README table)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from protos.serving import env_int
from protos.tls import ServerTls


@dataclass(frozen=True)
class Settings:
    address: str = "127.0.0.1:50051"
    max_file_size: int = 50 * 1024 * 1024
    max_image_dimension: int = 5000
    # How much of the head any rule may pull before the verdict.
    max_head: int = 1024 * 1024
    # Callers stream the head while their upload still arrives, so a call can
    # hold a thread for the whole transfer: threads mostly wait, so have many.
    workers: int = 64
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
    metrics_port: int = 9101
    # GRPC_TLS_CERT/_KEY (and _CA for mutual TLS); None: plaintext.
    tls: ServerTls | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            address=env.get("VALIDATOR_ADDR", cls.address),
            max_file_size=env_int(env, "MAX_FILE_SIZE", cls.max_file_size),
            max_image_dimension=env_int(env, "MAX_IMAGE_DIMENSION", cls.max_image_dimension),
            max_head=env_int(env, "VALIDATOR_MAX_HEAD", cls.max_head),
            workers=env_int(env, "VALIDATOR_WORKERS", cls.workers),
            grace=float(env_int(env, "SHUTDOWN_GRACE", int(cls.grace))),
            processes=env_int(env, "VALIDATOR_PROCESSES", cls.processes, minimum=1),
            max_connection_age=env_int(env, "GRPC_MAX_CONNECTION_AGE", cls.max_connection_age),
            stream_idle_timeout=env_int(env, "GRPC_STREAM_IDLE_TIMEOUT", cls.stream_idle_timeout, minimum=0),
            max_call_time=env_int(env, "GRPC_MAX_CALL_TIME", cls.max_call_time, minimum=0),
            metrics_port=env_int(env, "VALIDATOR_METRICS_PORT", cls.metrics_port),
            tls=ServerTls.from_env(env, who="the validator"),
        )

"""Services run as real processes, the way `make run` starts them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.tls import ClientTls, open_channel

ROOT = Path(__file__).resolve().parent.parent


def wait_serving(address: str, timeout: float = 20.0, service: str = "", tls: ClientTls | None = None) -> None:
    deadline = time.monotonic() + timeout
    with open_channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not report SERVING within {timeout}s")
            time.sleep(0.1)


def terminate(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, and SIGKILL if it has not gone within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def service_process(module: str, addr_var: str, port: int, extra_env: dict | None = None,
                    host: str = "127.0.0.1", log: Path | None = None, tls: ClientTls | None = None):
    """Run ``python -m module`` listening on ``host:port``; yields the Popen once it is SERVING
    (asked over TLS with ``tls``, for a service given GRPC_TLS_* settings in ``extra_env``).

    Its output goes to ``log`` when given (a file the test can read while it
    runs), else to a pipe."""
    # The metrics endpoints are off unless asked for: their fixed default ports would clash
    # between processes (tests/test_metrics.py gives them free ports).
    env = {**os.environ, addr_var: f"{host}:{port}", "PYTHONUNBUFFERED": "1", "VALIDATOR_METRICS_PORT": "0",
           "THUMBNAIL_METRICS_PORT": "0", **(extra_env or {})}
    output = open(log, "w") if log is not None else subprocess.PIPE
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env,
                            stdout=output, stderr=subprocess.STDOUT, text=True)
    try:
        wait_serving(f"{host}:{port}", tls=tls)
        yield proc
    finally:
        terminate(proc)
        (proc.stdout or output).close()

"""The gRPC services on several processes (VALIDATOR_PROCESSES, THUMBNAIL_PROCESSES):
children sharing one port with SO_REUSEPORT, every one of them serving, one
metrics endpoint adding them up, a dead child replaced, SIGTERM stopping all,
and a clear sentence where the address cannot be shared.

Real `python -m validator_service` / `python -m thumbnail_service` processes.
"""
from __future__ import annotations

import glob
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.mmap_dict import MmapedDict

from tests.conftest import free_port, render, validate
from tests.processes import ROOT, service_process, terminate

pytestmark = pytest.mark.timeout(120)
CALLS = "upload_grpc_server_calls_total"


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def calls_by(metrics_dir, pid: int) -> float:
    """Calls process ``pid`` counted, from its own file."""
    path = os.path.join(metrics_dir, f"counter_{pid}.db")
    if not os.path.exists(path):
        return 0
    return sum(item[1] for item in MmapedDict.read_all_values_from_file(path) if f'"{CALLS}"' in item[0])


def health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:  # a connection of its own: the kernel picks a process
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=5).status


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def counted(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def wait_for(condition, seconds: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds} s")


def test_validator_processes_share_the_port_and_the_metrics(tmp_path):
    port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    env = {"VALIDATOR_PROCESSES": "2", "VALIDATOR_METRICS_PORT": str(metrics_port),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    with service_process("validator_service", "VALIDATOR_ADDR", port, env) as proc:
        pids = wait_for(lambda: len(children(proc.pid)) == 2 and children(proc.pid), what="two processes")
        made = 0
        # New connections go to either process: call until both have answered some.
        while made < 400 and not all(calls_by(tmp_path / "metrics", pid) for pid in pids):
            assert health(address, "upload.v1.Validator") == health_pb2.HealthCheckResponse.SERVING
            made += 1
        assert all(calls_by(tmp_path / "metrics", pid) for pid in pids)
        # A real verdict from whichever process takes the connection.
        with grpc.insecure_channel(address) as channel:
            verdict = validate(channel, "notes.txt", b"plain words for the validator\n")
        assert verdict.accepted and verdict.detected_type == "text/plain"
        text = scrape(metrics_port)
        # The parent's endpoint adds up both processes' calls (the scrape sees those made so far).
        assert counted(text, CALLS + '{code="OK",method="grpc.health.v1.Health/Check"') == made + 1  # + the start's
        assert counted(text, CALLS + '{code="OK",method="upload.v1.Validator/Validate"') == 1
        assert counted(text, "process_resident_memory_bytes") > 0
        assert "upload_validator_clamd_up" not in text  # no CLAMD_ADDRESS: no gauge reading "down"

        # A child killed is replaced, and the port keeps answering meanwhile.
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: len(children(proc.pid)) == 2 and pids[0] not in children(proc.pid), what="a replacement")
        for _ in range(10):
            assert health(address) == health_pb2.HealthCheckResponse.SERVING
        last = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    for pid in last:  # the children went with it
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_thumbnail_processes_render(tmp_path):
    port = free_port()
    made_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "upload-metrics-*")))
    with service_process("thumbnail_service", "THUMBNAIL_ADDR", port, {"THUMBNAIL_PROCESSES": "2"}) as proc:
        wait_for(lambda: len(children(proc.pid)) == 2, what="two processes")
        # A metrics directory of its own while it runs (none was given)...
        assert len(set(glob.glob(os.path.join(tempfile.gettempdir(), "upload-metrics-*"))) - made_before) == 1
        picture = io.BytesIO()
        Image.new("RGB", (640, 480), "teal").save(picture, "PNG")
        for _ in range(4):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                thumbnail = render(channel, picture.getvalue(), "image/png")
            assert thumbnail.width == 200 and thumbnail.height == 150
        terminate(proc)
        assert proc.returncode == 0
    # ...removed when it stops.
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "upload-metrics-*"))) - made_before == set()


def run_until_exit(module: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_several_processes_need_a_fixed_port():
    done = run_until_exit("validator_service", {"VALIDATOR_ADDR": "127.0.0.1:0", "VALIDATOR_PROCESSES": "2",
                                                "VALIDATOR_METRICS_PORT": "0"})
    assert done.returncode != 0
    assert "VALIDATOR_PROCESSES above 1 needs a TCP address with a fixed port" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_another_program_holds_stops_the_service_with_a_sentence():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()  # no SO_REUSEPORT: nobody may share it
    try:
        port = holder.getsockname()[1]
        done = run_until_exit("thumbnail_service", {"THUMBNAIL_ADDR": f"127.0.0.1:{port}",
                                                    "THUMBNAIL_PROCESSES": "2", "THUMBNAIL_METRICS_PORT": "0"})
    finally:
        holder.close()
    assert done.returncode != 0
    assert f"Cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_processes_must_be_one_or_more():
    done = run_until_exit("validator_service", {"VALIDATOR_PROCESSES": "0", "VALIDATOR_METRICS_PORT": "0"})
    assert done.returncode != 0 and "VALIDATOR_PROCESSES must be at least 1" in done.stderr

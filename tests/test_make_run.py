"""`make run`'s process set: honcho starts all three from the Procfile and
one Ctrl-C stops them all."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import free_port
from tests.processes import ROOT


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_procfile_starts_all_three_and_ctrl_c_stops_them(tmp_path):
    gateway = free_port()
    metrics = {"validator": free_port(), "thumbnail": free_port()}
    env = {
        **os.environ,
        "GATEWAY_PORT": str(gateway),
        # Never the developer's ./data: the gateway reconciles its data folder at start-up.
        "DATA_DIR": str(tmp_path / "data"),
        "VALIDATOR_ADDR": f"127.0.0.1:{free_port()}",
        "THUMBNAIL_ADDR": f"127.0.0.1:{free_port()}",
        # Their defaults (9101, 9102) may be taken on a machine running tests side by side.
        "VALIDATOR_METRICS_PORT": str(metrics["validator"]),
        "THUMBNAIL_METRICS_PORT": str(metrics["thumbnail"]),
    }
    honcho = Path(sys.executable).parent / "honcho"
    proc = subprocess.Popen([str(honcho), "start", "-f", "Procfile"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        status, body = 0, {}
        while time.monotonic() < deadline:
            try:
                status, body = get(f"http://127.0.0.1:{gateway}/readyz")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.3)
        assert status == 200, body
        assert body["services"] == {"validator": "SERVING", "thumbnail": "SERVING"}
        # Each process serves its Prometheus metrics.
        for service, port in metrics.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
                assert f'service="{service}"' in response.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway}/metrics", timeout=3) as response:
            assert "upload_service_up" in response.read().decode()
        # Ctrl-C in a terminal signals the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        output = proc.stdout.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for name in ("validator.1", "thumbnail.1", "gateway.1"):
        assert f"{name} stopped" in output, output

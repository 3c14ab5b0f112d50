"""What every benchmark area shares: service subprocesses, statistics, tables."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
KIB = 1024
MIB = 1024 * 1024

# Health says SERVING only once the port is bound and the servicers are in.
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Service:
    """One service (`python -m <module>`) in its own process on a free port.

    A subprocess rather than an in-process server so that every measurement
    pays for real gRPC transport and the server's RSS is its own. ``root`` is
    the source tree it runs from (another commit's, extracted elsewhere, to
    measure before against after); the working tree by default.
    """

    def __init__(self, module: str, addr_var: str, service_name: str, log_path: Path,
                 env: dict[str, str] | None = None, root: Path = ROOT):
        self.module = module
        self.service_name = service_name
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = log_path
        child_env = dict(os.environ)
        # A bind address left in the caller's environment would override ours.
        for var in ("VALIDATOR_LISTEN", "THUMBNAIL_LISTEN"):
            child_env.pop(var, None)
        # No metrics endpoint: its fixed default port would clash between benches run side by side.
        # The working directory and the head of PYTHONPATH name ``root``: both come before the
        # editable install's finder, so another tree's modules are the ones imported.
        python_path = os.pathsep.join([str(root), *filter(None, [child_env.get("PYTHONPATH")])])
        child_env.update({addr_var: self.address, "SHUTDOWN_GRACE": "1", "VALIDATOR_METRICS_PORT": "0",
                          "THUMBNAIL_METRICS_PORT": "0", "PYTHONPATH": python_path, **(env or {})})
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module], cwd=root, env=child_env,
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.channel = grpc.insecure_channel(self.address)
        try:
            self._wait_serving()
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_serving(self) -> None:
        stub = health_pb2_grpc.HealthStub(self.channel)
        request = health_pb2.HealthCheckRequest(service=self.service_name)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.process.returncode}; "
                                   f"see {self.log_path}")
            try:
                if stub.Check(request, timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.module} not SERVING after {START_TIMEOUT:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        self.channel.close()
        stop_process(self.process, timeout=10)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def percentile(values, p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default). With ~20
    samples p99 is close to the worst one: read it as 'the slow tail'."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    rank = (len(xs) - 1) * p / 100
    lo = int(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (rank - lo)


def summary_ms(seconds: list[float]) -> dict:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(percentile(ms, 50), 3), "p99_ms": round(percentile(ms, 99), 3),
            "n": len(ms), "samples_ms": [round(x, 3) for x in ms]}


def fmt_bytes(n: float) -> str:
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n >= KIB:
        return f"{n / KIB:.1f} KiB"
    return f"{int(n)} B"


def fmt_ms(ms: float) -> str:
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def met(ok: bool | None) -> str:
    return "-" if ok is None else "yes" if ok else "NO"


@dataclass
class Section:
    """One area's results: a table to print and the data for results.json.
    A row's goal is met unless its 'met' cell says NO."""
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def unmet(self) -> list[str]:
        col = self.headers.index("met") if "met" in self.headers else None
        if col is None:
            return []
        area = self.title.split(":")[0].split(" (")[0]
        return [f"{area}: {row[0]}" for row in self.rows if row[col] == "NO"]


def render_table(section: Section) -> str:
    cells = [section.headers, *section.rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(section.headers))]
    # Numbers read best right-aligned; the first column is always a label.
    def line(row):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()
    rule = "-" * len(line(section.headers))
    out = [section.title, rule, line(section.headers), rule, *(line(r) for r in section.rows), rule]
    out += [f"  {note}" for note in section.notes]
    return "\n".join(out)

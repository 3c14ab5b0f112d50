"""Where one small upload's CPU goes (issue 19): the gateway (one worker), the validator and
the thumbnail service under wrk's load of one kind of file, each process sampled at once.

    python -m bench.profile [--kind text|jpeg] [--seconds 12]      (make profile)

For each process: its CPU per upload (user+sys, children it reaped included: the thumbnail
service's render processes); where that time goes by library (``perf record``, when perf is
installed: libmagic, the Python interpreter, the kernel...); and where the time spent running
Python code (holding the GIL) goes by part of the work (``py-spy record --gil``: each sample is
charged to the innermost frame that names a part, table PARTS). The two samplers see
different things: py-spy only the threads holding the GIL, perf every thread. So the parts are
scaled to the Python share of the process's CPU, and the rest is shown by library.
"""
from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import KIB, Service
from bench.load import THREADS, Wrk, jpeg_640x480, multipart
from bench.thumbnails import SERVICE_NAME as THUMBNAIL_SERVICE
from bench.upload import cpu_seconds, curl_upload, family_cpu_seconds, start_gateway, write_text
from bench.validator import SERVICE_NAME as VALIDATOR_SERVICE

# (part, substrings of a frame "function (file:line)"): the first part any frame of a sample
# names, from the innermost frame out, takes the sample.
PARTS = [
    ("logging (access log, call log)", ("logging/__init__.py", "glogging.py")),
    ("hashing (sha256)", ("ingest/hashing.py", "hashlib")),
    ("SQLite and SQLAlchemy (the record)", ("sqlalchemy/", "sqlite3", "gateway/metadata/")),
    ("JSON (answer, audit)", ("json/", "json_format.py", "http/records.py")),
    ("metrics (prometheus_client)", ("prometheus_client/", "gateway/metrics.py", "protos/metrics.py")),
    ("gRPC client (Check, Render)", ("grpc/_channel.py", "grpc/_interceptor.py", "ingest/calls.py",
                                     "ingest/services.py", "grpc/_common.py")),
    ("gRPC server (call handling)", ("grpc/_server.py", "protos/serving.py", "protos/admission.py")),
    ("libmagic (python-magic)", ("magic/__init__.py", "validator_service/libmagic.py")),
    ("validation rules", ("validator_service/rules/", "validator_service/pipeline.py",
                          "validator_service/servicer.py", "validator_service/fileview.py")),
    ("rendering (Pillow, render process)", ("PIL/", "thumbnail_service/isolation.py", "thumbnail_service/renderers")),
    ("multipart parsing", ("ingest/multipart.py", "ingest/body.py")),
    ("file writes (temp file, rename)", ("gateway/storage/", "protos/streaming.py")),
    ("upload pipeline (names, checks)", ("gateway/ingest/",)),
    ("HTTP parsing and connections", ("gateway/serving/", "gunicorn/")),
    ("Flask and werkzeug (routing, request)", ("flask/", "werkzeug/", "gateway/http/", "gateway/auth/")),
]
OTHER = "other Python"


def charge(stack: list[str]) -> str:
    for frame in reversed(stack):  # innermost first
        for part, marks in PARTS:
            if any(mark in frame for mark in marks):
                return part
    return OTHER


def py_spy_parts(raw: Path) -> tuple[collections.Counter, int]:
    parts, total = collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first names the process
        parts[charge(frames)] += int(count)
        total += int(count)
    return parts, total


def perf_libraries(data: Path) -> dict[str, float]:
    """Share of the process's samples by library (perf report --sort dso)."""
    out = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso", "--stdio"],
                         capture_output=True, text=True, timeout=120).stdout
    shares = {}
    for line in out.splitlines():
        if line.startswith("#") or "%" not in line:
            continue
        share, _, dso = line.strip().partition("%")
        try:
            shares[dso.strip()] = float(share) / 100
        except ValueError:
            continue
    return shares


def profile(kind: str, seconds: int, workdir: Path) -> str:
    if kind == "text":
        sample = write_text(workdir / "small.txt", 10 * KIB)
        body = multipart(sample, "text/plain")
    else:
        sample = workdir / "photo.jpg"
        sample.write_bytes(jpeg_640x480())
        body = multipart(sample, "image/jpeg")
    wrk = Wrk(workdir, *body)
    have_perf = shutil.which("perf") is not None
    spy = Path(sys.executable).with_name("py-spy")
    with Service("validator_service", "VALIDATOR_ADDR", VALIDATOR_SERVICE, workdir / "validator.log") as validator, \
            Service("thumbnail_service", "THUMBNAIL_ADDR", THUMBNAIL_SERVICE, workdir / "thumbnail.log") as thumbs, \
            start_gateway(validator, thumbs, workdir / "data", workdir / "gateway.log",
                          GATEWAY_THREADS=str(THREADS)) as gateway:
        for _ in range(5):
            curl_upload(gateway.url, sample, sample.name)
        processes = {"gateway": gateway.worker_pid(), "validator": validator.pid, "thumbnail": thumbs.pid}
        samplers = []
        for name, pid in processes.items():
            samplers.append(subprocess.Popen([str(spy), "record", "--gil", "-r", "100", "-d", str(seconds - 2),
                                              "-f", "raw", "-o", str(workdir / f"{name}.spy"), "--pid", str(pid)],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if have_perf:
                samplers.append(subprocess.Popen(["perf", "record", "-F", "499", "-o", str(workdir / f"{name}.perf"),
                                                  "-p", str(pid), "--", "sleep", str(seconds - 2)],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        before = {name: (family_cpu_seconds(pid), cpu_seconds(pid)) for name, pid in processes.items()}
        result = wrk.run(gateway.url, 8, seconds)
        time.sleep(1)  # the last renders end
        used = {name: (family_cpu_seconds(pid) - before[name][0], cpu_seconds(pid) - before[name][1])
                for name, pid in processes.items()}
        for sampler in samplers:
            sampler.wait(timeout=60)
    uploads = result["requests"]
    lines = [f"{kind}: {result['uploads_per_s']:.0f} uploads/s, {uploads} uploads in {seconds} s, "
             f"8 connections (wrk); the gateway with one worker, py-spy and perf sampling beside it",
             "", "| process | part | CPU ms per upload |", "|---|---|---|"]
    for name, pid in processes.items():
        family_ms, total_ms = (1000 * seconds_used / max(uploads, 1) for seconds_used in used[name])
        lines.append(f"| {name} | **all** | **{family_ms:.2f}** |")
        if family_ms - total_ms >= 0.05:
            lines.append(f"| {name} | child processes (a render process per thumbnail) | {family_ms - total_ms:.2f} |")
        if total_ms < 0.05:
            continue
        python_share = 1.0
        if have_perf and (workdir / f"{name}.perf").exists():
            libraries = perf_libraries(workdir / f"{name}.perf")
            python_share = sum(v for k, v in libraries.items() if "libpython" in k) or 1.0
            for library, share in sorted(libraries.items(), key=lambda kv: -kv[1]):
                if "libpython" not in library and share * total_ms >= 0.05:
                    lines.append(f"| {name} | native: {library} | {share * total_ms:.2f} |")
        spy_file = workdir / f"{name}.spy"
        if spy_file.exists():
            parts, total = py_spy_parts(spy_file)
            for part, count in parts.most_common():
                ms = python_share * total_ms * count / max(total, 1)
                if ms >= 0.02:
                    lines.append(f"| {name} | Python: {part} | {ms:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=("text", "jpeg"), action="append",
                        help="10 KiB text or a 640x480 JPEG (default: both)")
    parser.add_argument("--seconds", type=int, default=12)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="upload-profile-") as tmp:
        for kind in args.kind or ("text", "jpeg"):
            workdir = Path(tmp) / kind
            workdir.mkdir()
            print(profile(kind, args.seconds, workdir), flush=True)
            print()


if __name__ == "__main__":
    main()

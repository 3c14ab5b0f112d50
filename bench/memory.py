"""Thumbnail service peak memory: the server's RSS high-water mark while it
refuses a pixel flood and while it thumbnails a 50 MP JPEG."""
from __future__ import annotations

from pathlib import Path

import grpc
from PIL import Image

from bench.common import MIB, Section, Service, fmt_bytes, met
from bench.images import write_jpeg
from bench.thumbnails import SERVICE_NAME, render_via_service
from protos.upload.v1 import thumbnail_pb2_grpc
from tests.images import png_header_only

GOAL_BYTES = 200 * MIB
# Pillow's default guard (89.5 MP): large enough for the 50 MP photo, and the
# 3.6 GP flood is far past it.
MAX_PIXELS = "89478485"


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _warm_up(stub, workdir: Path) -> None:
    """One small call per decoder, so imports, thread pools and Pillow plugins
    are in the baseline rather than in the scenario's peak."""
    for fmt, mime in (("JPEG", "image/jpeg"), ("PNG", "image/png")):
        path = workdir / f"warm.{fmt.lower()}"
        Image.effect_noise((640, 480), 40).convert("RGB").save(path, fmt)
        render_via_service(stub, path, mime)


def _measure(path: Path, mime: str, workdir: Path) -> dict:
    log = workdir / "memory.log"
    with Service("thumbnail_service", "THUMBNAIL_ADDR", SERVICE_NAME, log,
                 env={"THUMBNAIL_MAX_PIXELS": MAX_PIXELS}) as svc:
        stub = thumbnail_pb2_grpc.ThumbnailStub(svc.channel)
        _warm_up(stub, workdir)
        baseline = status_kib(svc.pid, "VmHWM")
        try:
            reply = render_via_service(stub, path, mime)
            outcome = f"OK {reply.width}x{reply.height}"
        except grpc.RpcError as exc:
            outcome = exc.code().name
        return {"outcome": outcome, "baseline_hwm": baseline,
                "peak_hwm": status_kib(svc.pid, "VmHWM"), "rss_after": status_kib(svc.pid, "VmRSS")}


def run(workdir: Path, quick: bool) -> list[Section]:
    # A fresh process per round: VmHWM never goes down, so rounds cannot share one.
    rounds = 1 if quick else 3
    flood = workdir / "flood_60000x60000.png"
    flood.write_bytes(png_header_only(60000, 60000))
    # The 50 MP photo stays full size in --quick: the goal is about that size.
    photo = write_jpeg(workdir / "photo_8660x5774.jpg", 8660, 5774)
    scenarios = (
        ("refuse 60000x60000 PNG (flood)", flood, "image/png", "RESOURCE_EXHAUSTED"),
        ("thumbnail 50 MP JPEG 8660x5774", photo, "image/jpeg", "OK"),
    )
    rows, data = [], []
    for label, path, mime, expected in scenarios:
        runs = [_measure(path, mime, workdir) for _ in range(rounds)]
        peak = sorted(r["peak_hwm"] for r in runs)[len(runs) // 2]
        base = sorted(r["baseline_hwm"] for r in runs)[len(runs) // 2]
        worst = max(r["peak_hwm"] for r in runs)
        outcome = runs[-1]["outcome"]
        data.append({"scenario": label, "file_size": path.stat().st_size, "runs": runs,
                     "peak_hwm_median": peak, "baseline_hwm_median": base})
        rows.append([label, fmt_bytes(path.stat().st_size), outcome, fmt_bytes(base), fmt_bytes(peak),
                     fmt_bytes(peak - base), fmt_bytes(worst), "peak < 200 MiB",
                     met(worst < GOAL_BYTES and outcome.startswith(expected))])
    return [Section(
        f"Thumbnail service peak memory (VmHWM of a fresh server per run, {rounds} run(s), median)",
        ["scenario", "file", "outcome", "baseline", "peak", "peak - baseline", "worst peak", "goal", "met"],
        rows,
        notes=["baseline: VmHWM after one small JPEG and one small PNG warm-up call",
               f"THUMBNAIL_MAX_PIXELS={MAX_PIXELS}"],
        data={"rounds": rounds, "scenarios": data},
    )]

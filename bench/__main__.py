"""Entry point: run the chosen areas, print their tables, write results.json."""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import magic
import PIL
import pyvips

import bench
from bench import growth, grpc_load, load, memory, thumbnails, tus, upload, validator, whole_file
from bench.common import ROOT, render_table

AREAS = {"validator": validator, "thumbnail": thumbnails, "memory": memory, "upload": upload, "tus": tus,
         "growth": growth, "load": load, "grpc": grpc_load, "whole_file": whole_file}
OUT = Path(__file__).parent / "out" / "results.json"


def environment(args) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick, "only": args.only,
        "commit": commit, "cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "grpcio": grpc.__version__, "pillow": PIL.__version__,
        "libvips": ".".join(str(pyvips.version(i)) for i in range(3)), "libmagic": magic.version(),
    }


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of worker counts, got {text!r}") from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"worker counts are 1 or more, got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=bench.__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller files")
    parser.add_argument("--only", choices=sorted(AREAS), help="run one area")
    parser.add_argument("--workers", type=_counts, default=(1, 2, 4), metavar="N,N,...",
                        help="GATEWAY_WORKERS for the load area's scaling curve (default 1,2,4; on a larger "
                             "machine e.g. 1,2,4,8,16)")
    args = parser.parse_args()

    env = environment(args)
    print(f"bench: {env['cpus']} CPUs, Python {env['python']}, Pillow {env['pillow']}, "
          f"libvips {env['libvips']}, libmagic {env['libmagic']}, commit {env['commit'] or '?'}"
          + (" (quick)" if args.quick else ""), flush=True)
    results, unmet = {"environment": env, "areas": {}}, []
    started = time.perf_counter()
    # Big generated files live only here; nothing is left behind in the repo.
    with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
        for name, module in AREAS.items():
            if args.only and name != args.only:
                continue
            area_started = time.perf_counter()
            extra = {"workers": args.workers} if module is load else {}
            sections = module.run(Path(tmp), args.quick, **extra)
            seconds = time.perf_counter() - area_started
            for section in sections:
                print("\n" + render_table(section), flush=True)
                unmet += section.unmet()
            results["areas"][name] = {"seconds": round(seconds, 1),
                                      "sections": [{"title": s.title, "headers": s.headers, "rows": s.rows,
                                                    "data": s.data} for s in sections]}
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["goals_not_met"] = unmet

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{len(unmet)} goal(s) not met" + "".join(f"\n  - {u}" for u in unmet))
    print(f"done in {results['seconds']:.0f}s; results in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

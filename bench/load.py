"""Many uploads at once, through the real gateway (gunicorn, one gthread
worker, GATEWAY_THREADS threads) and real validator and thumbnail services:
10 KiB uploads per second under wrk against the tutorial Flask app and a
body-draining app with the same threads; how uploads/s grow with concurrency
(plotted to bench/concurrency.png); and a mixed burst of concurrent uploads
whose stored bytes are checked against what was sent (bench/load_mixed.py)."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

from bench import load_mixed
from bench.common import KIB, Section, Service, fmt_ms, free_port, met, percentile
from bench.thumbnails import SERVICE_NAME as THUMBNAIL_SERVICE
from bench.upload import HttpServer, curl_upload, family_cpu_seconds, start_gateway, write_text
from bench.validator import SERVICE_NAME as VALIDATOR_SERVICE

THREADS = 16  # GATEWAY_THREADS' default; the anchors get the same
SMALL = 10 * KIB
GOAL_VS_PLAIN = 3.0
PLOT = Path(__file__).parent / "concurrency.png"

# wrk sends the same multipart body again and again on kept-alive connections.
# Non-2xx are counted in Lua: wrk's own "status" error counts only >= 400.
WRK_LUA = """
local f = assert(io.open("%(body)s", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "multipart/form-data; boundary=%(boundary)s"
non2xx = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "non2xx": %%d, '
    .. '"socket_errors": %%d, "timeouts": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, bad, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def jpeg_640x480() -> bytes:
    """A photo-like 640x480 JPEG (gradients and noise: not a flat colour), ~50 KB."""
    import io

    from PIL import Image

    im = Image.merge("RGB", [Image.linear_gradient("L").resize((640, 480)),
                             Image.effect_noise((640, 480), 40), Image.linear_gradient("L").rotate(90).resize((640, 480))])
    out = io.BytesIO()
    im.save(out, "JPEG", quality=85)
    return out.getvalue()


def multipart(path: Path, content_type: str) -> tuple[bytes, str]:
    """One `file` part, as a browser or curl -F would send it."""
    boundary = "----bench" + secrets.token_hex(12)
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), boundary


class Wrk:
    """wrk (one thread: the other core is for the servers) posting one body."""

    def __init__(self, workdir: Path, body: bytes, boundary: str):
        self.body_path = workdir / "wrk-body.bin"
        self.body_path.write_bytes(body)
        self.script = workdir / "upload.lua"
        self.script.write_text(WRK_LUA % {"body": self.body_path, "boundary": boundary})

    def run(self, url: str, connections: int, seconds: int) -> dict:
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                "-s", str(self.script), url + "/upload"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
        if out.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout}")
        r = json.loads(line.removeprefix("WRKJSON "))
        ok = r["requests"] - r["non2xx"]
        return {"uploads_per_s": ok / (r["duration_us"] / 1e6), "requests": r["requests"],
                "non2xx": r["non2xx"], "socket_errors": r["socket_errors"], "timeouts": r["timeouts"],
                "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000}


class Target:
    """A server to load, and the processes whose CPU its uploads cost."""

    def __init__(self, label: str, short: str, server: HttpServer, pids: list[int]):
        self.label, self.short, self.server, self.pids = label, short, server, pids

    def once(self, wrk: Wrk, connections: int, seconds: int) -> dict:
        os.sync()  # nobody pays for the writeback of the round before
        before = [family_cpu_seconds(p) for p in self.pids]
        result = wrk.run(self.server.url, connections, seconds)
        used = [family_cpu_seconds(p) - b for p, b in zip(self.pids, before)]
        result["cpu_ms_per_upload"] = 1000 * sum(used) / max(result["requests"], 1)
        result["cpu_cores"] = [u / seconds for u in used]  # each process, in cores
        return result


def _med(rounds: list[dict], key: str) -> float:
    return percentile([r[key] for r in rounds], 50)


def _warm(targets: list[Target], small: Path) -> None:
    """First requests pay for imports, the policy fetch and gRPC connections."""
    for target in targets:
        for _ in range(3):
            _, code, _ = curl_upload(target.server.url, small, small.name)
            if code != 201:
                raise RuntimeError(f"{target.label}: HTTP {code} warming up; see {target.server.log_path}")


def _small_files(targets: list[Target], wrk: Wrk, rounds: int, seconds: int) -> Section:
    samples: dict[str, list[dict]] = {t.short: [] for t in targets}
    load_before = os.getloadavg()[0]
    for _ in range(rounds):
        for target in targets:  # interleaved: drift and noise hit all alike
            samples[target.short].append(target.once(wrk, 8, seconds))
    load_after = os.getloadavg()[0]
    gw = samples["gateway"]
    rows, data = [], {}
    for target in targets:
        rs = samples[target.short]
        rates = [r["uploads_per_s"] for r in rs]
        # Paired: each round's gateway against the same round's anchor.
        ratios = [g["uploads_per_s"] / r["uploads_per_s"] for g, r in zip(gw, rs)]
        ratio = percentile(ratios, 50)
        bad = sum(r["non2xx"] + r["socket_errors"] + r["timeouts"] for r in rs)
        if target.short == "gateway":
            shown, goal, ok = "-", "0 non-2xx", bad == 0
        elif target.short == "plain":
            shown, goal, ok = f"{ratio:.2f}", f">= {GOAL_VS_PLAIN:g}x", ratio >= GOAL_VS_PLAIN
        else:
            shown, goal, ok = f"{ratio:.2f}", "-", None
        rows.append([f"{target.label}, 10 KiB, c=8", str(len(rs)), f"{percentile(rates, 50):.0f}",
                     f"{min(rates):.0f}-{max(rates):.0f}", fmt_ms(_med(rs, "p50_ms")), fmt_ms(_med(rs, "p99_ms")),
                     f"{_med(rs, 'cpu_ms_per_upload'):.2f}", str(bad), shown, goal, met(ok)])
        data[target.short] = {"uploads_per_s": round(percentile(rates, 50), 1), "bad_responses": bad,
                              "gateway_over_this": round(ratio, 3), "rounds": rs}
    return Section(
        f"Load, small files: 10 KiB multipart POST /upload, 8 connections, wrk "
        f"({rounds} rounds of {seconds} s, median)",
        ["target", "rounds", "uploads/s", "range/s", "p50 ms", "p99 ms", "CPU ms/up", "non-2xx", "gateway / this",
         "goal", "met"], rows,
        notes=[f"all three: gunicorn, one worker (GATEWAY_WORKERS=1), gthread, {THREADS} threads; wrk -t1 -c8 on "
               "kept-alive connections",
               "non-2xx: responses outside 200-299 plus wrk's socket errors and timeouts, all rounds added up",
               "gateway / this: median of each round's paired ratio (targets interleaved round by round)",
               "CPU ms/up: user+sys of the server processes per request (gateway: worker + validator)",
               "plain Flask: bench/plain_flask.py, request.files['file'].save(); drain only: bench/drain_app.py, "
               "reads the body and answers 201 (no parsing, no disk)",
               "the file is text (small.txt): the validator runs libmagic's text analysis on it",
               f"1-min load average {load_before:.1f} before, {load_after:.1f} after ({os.cpu_count()} CPUs; "
               "wrk, the servers and the validator share them)"],
        data={"file_size": SMALL, "connections": 8, "seconds": seconds, "load_before": load_before,
              "load_after": load_after, "targets": data},
    )


# Issue 19's goals against the seed tutorial's app (bench/seed_app.py), uploads/s: gateway / seed.
SEED_GOALS = {"text": 1.2, "jpeg": 2.0}


def _seed_anchor(gateway: Target, seed: Target, wrks: dict[str, "Wrk"], rounds: int, seconds: int) -> Section:
    """The gateway beside the seed tutorial's app, both kinds of small file, rounds interleaved."""
    samples = {(kind, t.short): [] for kind in wrks for t in (gateway, seed)}
    for _ in range(rounds):
        for kind, wrk in wrks.items():
            for target in (gateway, seed):
                samples[(kind, target.short)].append(target.once(wrk, 8, seconds))
    rows, data = [], {}
    for kind in wrks:
        gw, sd = samples[(kind, "gateway")], samples[(kind, "seed")]
        ratio = percentile([g["uploads_per_s"] / s["uploads_per_s"] for g, s in zip(gw, sd)], 50)
        p99_ok = _med(gw, "p99_ms") <= _med(sd, "p99_ms")
        for target, rs in (("gateway", gw), ("seed app", sd)):
            bad = sum(r["non2xx"] + r["socket_errors"] + r["timeouts"] for r in rs)
            is_gw = target == "gateway"
            rows.append([f"{target}, {kind}", str(len(rs)), f"{_med(rs, 'uploads_per_s'):.0f}",
                         fmt_ms(_med(rs, "p50_ms")), fmt_ms(_med(rs, "p99_ms")), f"{_med(rs, 'cpu_ms_per_upload'):.2f}",
                         str(bad), f"{ratio:.2f}" if is_gw else "-",
                         f">= {SEED_GOALS[kind]:g}x, p99 <= seed's" if is_gw else "-",
                         met(ratio >= SEED_GOALS[kind] and p99_ok and bad == 0) if is_gw else "-"])
        data[kind] = {"gateway_over_seed": round(ratio, 3), "gateway_p99_ms": round(_med(gw, "p99_ms"), 2),
                      "seed_p99_ms": round(_med(sd, "p99_ms"), 2), "gateway": gw, "seed": sd}
    return Section(
        f"Load, small files against the seed tutorial's app: 10 KiB text and a 640x480 JPEG, 8 connections, wrk "
        f"({rounds} rounds of {seconds} s, median)",
        ["target, file", "rounds", "uploads/s", "p50 ms", "p99 ms", "CPU ms/up", "non-2xx", "gateway / seed",
         "goal", "met"], rows,
        notes=["seed app: bench/seed_app.py, Flask's upload pattern with the tutorial's checks (werkzeug form, "
               "save, python-magic on the saved file, a 200x200 Pillow thumbnail inline), gunicorn with one gthread "
               f"worker per core ({os.cpu_count()}) x 4 threads",
               f"gateway: as make run serves it (GATEWAY_WORKERS={os.cpu_count()}, one per core; GATEWAY_THREADS="
               f"{THREADS}), with the validator and the thumbnail service (the request waits for the thumbnail, "
               "as the seed's does)",
               "CPU ms/up: user+sys per request of the gateway's workers, the validator and the thumbnail service "
               "with its render children / of every seed worker",
               "gateway / seed: median of each round's paired ratio of uploads/s (issue 19's goals)"],
        data={"connections": 8, "seconds": seconds, "kinds": data},
    )


def _scaling(gateways: dict[int, Target], wrk: Wrk, rounds: int, seconds: int) -> Section:
    """uploads/s and CPU per upload at each GATEWAY_WORKERS, rounds interleaved."""
    samples: dict[int, list[dict]] = {w: [] for w in gateways}
    connections = 2 * THREADS  # enough to keep the largest number of workers busy here
    for _ in range(rounds):
        for w, target in gateways.items():
            samples[w].append(target.once(wrk, connections, seconds))
    rows, data = [], {}
    base = _med(samples[min(gateways)], "uploads_per_s")
    for w, rs in samples.items():
        rate = _med(rs, "uploads_per_s")
        bad = sum(r["non2xx"] + r["socket_errors"] + r["timeouts"] for r in rs)
        cores = percentile([sum(r["cpu_cores"]) for r in rs], 50)
        rows.append([str(w), str(len(rs)), f"{rate:.0f}", f"{rate / base:.2f}", fmt_ms(_med(rs, "p50_ms")),
                     fmt_ms(_med(rs, "p99_ms")), f"{_med(rs, 'cpu_ms_per_upload'):.2f}", f"{cores:.2f}", str(bad)])
        data[str(w)] = {"uploads_per_s": round(rate, 1), "p99_ms": round(_med(rs, "p99_ms"), 2),
                        "cpu_ms_per_upload": round(_med(rs, "cpu_ms_per_upload"), 3), "cores_busy": round(cores, 2),
                        "bad_responses": bad, "rounds": rs}
    return Section(
        f"Load, scaling: 10 KiB uploads at GATEWAY_WORKERS={', '.join(map(str, gateways))}, {connections} "
        f"connections, wrk ({rounds} rounds of {seconds} s, median; {os.cpu_count()} CPUs)",
        ["workers", "rounds", "uploads/s", "x of 1", "p50 ms", "p99 ms", "CPU ms/up", "cores busy", "non-2xx"], rows,
        notes=["CPU ms/up and cores busy: the gateway's workers and the validator together (wrk not counted)",
               "on a machine with more cores: make bench BENCH_ARGS=\"--only load --workers 1,2,4,8,16\""],
        data={"connections": connections, "seconds": seconds, "workers": data},
    )


def _concurrency(gateway: Target, wrk: Wrk, levels: tuple[int, ...], rounds: int, seconds: int) -> Section:
    samples: dict[int, list[dict]] = {c: [] for c in levels}
    for _ in range(rounds):
        for c in levels:
            samples[c].append(gateway.once(wrk, c, seconds))
    rows, data = [], {}
    base = percentile([r["uploads_per_s"] for r in samples[levels[0]]], 50)
    for c, rs in samples.items():
        rate = _med(rs, "uploads_per_s")
        cores = [percentile([r["cpu_cores"][i] for r in rs], 50) for i in range(2)]
        bad = sum(r["non2xx"] + r["socket_errors"] + r["timeouts"] for r in rs)
        rows.append([str(c), str(len(rs)), f"{rate:.0f}", f"{rate / base:.2f}", fmt_ms(_med(rs, "p50_ms")),
                     fmt_ms(_med(rs, "p99_ms")), f"{cores[0]:.2f}", f"{cores[1]:.2f}", str(bad)])
        data[str(c)] = {"uploads_per_s": round(rate, 1), "p50_ms": round(_med(rs, "p50_ms"), 2),
                        "p99_ms": round(_med(rs, "p99_ms"), 2), "gateway_cores": round(cores[0], 2),
                        "validator_cores": round(cores[1], 2), "bad_responses": bad, "rounds": rs}
    _plot(data)
    return Section(
        f"Load, concurrency: gateway, 10 KiB uploads at 1-{levels[-1]} connections, wrk ({rounds} rounds of "
        f"{seconds} s, median)",
        ["connections", "rounds", "uploads/s", "x of c=1", "p50 ms", "p99 ms", "gateway cores", "validator cores",
         "non-2xx"], rows,
        notes=[f"levels interleaved round by round; GATEWAY_THREADS={THREADS}: beyond it requests wait for a thread",
               "cores: CPU time of the gateway worker / the validator over the round's wall time (2 = both cores)",
               f"plot: {PLOT.relative_to(PLOT.parent.parent)}"],
        data={"levels": data, "plot": str(PLOT.relative_to(PLOT.parent.parent))},
    )


def _plot(data: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")  # no display here, and none needed for a PNG
    import matplotlib.pyplot as plt

    levels = [int(c) for c in data]
    fig, rate_ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    rate_ax.plot(levels, [data[str(c)]["uploads_per_s"] for c in levels], "o-", color="tab:blue",
                 label="uploads/s")
    rate_ax.set_xscale("log", base=2)
    rate_ax.set_xticks(levels, [str(c) for c in levels])
    rate_ax.set_xlabel("concurrent connections (wrk)")
    rate_ax.set_ylabel("uploads/s (10 KiB)", color="tab:blue")
    rate_ax.set_ylim(bottom=0)
    ms_ax = rate_ax.twinx()
    for key, style in (("p50_ms", "s--"), ("p99_ms", "^:")):
        ms_ax.plot(levels, [data[str(c)][key] for c in levels], style, color="tab:red", label=key[:3] + " latency")
    ms_ax.set_ylabel("latency, ms", color="tab:red")
    ms_ax.set_ylim(bottom=0)
    lines = rate_ax.get_legend_handles_labels()[0] + ms_ax.get_legend_handles_labels()[0]
    rate_ax.legend(lines, [line.get_label() for line in lines], loc="upper left")
    rate_ax.set_title(f"Gateway POST /upload, 10 KiB files, GATEWAY_THREADS={THREADS}")
    fig.tight_layout()
    fig.savefig(PLOT)
    plt.close(fig)


def run(workdir: Path, quick: bool, workers: tuple[int, ...] = (1, 2, 4)) -> list[Section]:
    rounds, seconds = (2, 1) if quick else (5, 4)
    sweep_rounds, sweep_seconds = (2, 1) if quick else (3, 3)
    here = workdir / "load"
    here.mkdir(exist_ok=True)
    small = write_text(here / "small.txt", SMALL)
    wrk = Wrk(here, *multipart(small, "text/plain"))
    photo = here / "photo.jpg"
    photo.write_bytes(jpeg_640x480())
    (here / "jpeg").mkdir()
    jpeg_wrk = Wrk(here / "jpeg", *multipart(photo, "image/jpeg"))

    cores = os.cpu_count() or 1
    with Service("validator_service", "VALIDATOR_ADDR", VALIDATOR_SERVICE, here / "validator.log") as validator, \
            Service("thumbnail_service", "THUMBNAIL_ADDR", THUMBNAIL_SERVICE, here / "thumbnail.log") as thumbnailer, \
            ExitStack() as more:
        plain_port, drain_port, seed_port = free_port(), free_port(), free_port()
        threads = ["--threads", str(THREADS)]
        # The same gateway with more workers: for the curve, and make run's default (one per core).
        scaled = {w: more.enter_context(start_gateway(
                      validator, thumbnailer, here / f"gateway-data-{w}", here / f"gateway-{w}.log",
                      GATEWAY_THREADS=str(THREADS), GATEWAY_WORKERS=str(w)))
                  for w in sorted({*workers, cores} - {1})}
        with start_gateway(validator, thumbnailer, here / "gateway-data", here / "gateway.log",
                           GATEWAY_THREADS=str(THREADS)) as gateway, \
                HttpServer("plain Flask", [sys.executable, "-m", "bench.plain_flask", "--port", str(plain_port),
                                           *threads], here / "plain_flask.log",
                           {"UPLOAD_DIR": str(here / "plain"), "TMPDIR": str(here)}, port=plain_port) as plain, \
                HttpServer("drain only", [sys.executable, "-m", "bench.drain_app", "--port", str(drain_port),
                                          *threads], here / "drain.log", port=drain_port) as drain, \
                HttpServer("seed app", [sys.executable, "-m", "bench.seed_app", "--port", str(seed_port)],
                           here / "seed_app.log", {"UPLOAD_DIR": str(here / "seed"), "TMPDIR": str(here)},
                           port=seed_port) as seed_server:
            gw = Target("gateway", "gateway", gateway, [gateway.worker_pid(), validator.pid])
            seed = Target("seed app", "seed", seed_server, seed_server.worker_pids())
            by_workers = {1: gw} | {w: Target(f"gateway x{w}", f"gateway{w}", server,
                                              [*server.worker_pids(), validator.pid]) for w, server in scaled.items()}
            as_run = scaled.get(cores, gateway)
            as_run = Target("gateway", "gateway", as_run, [*as_run.worker_pids(), validator.pid, thumbnailer.pid])
            targets = [gw, Target("plain Flask", "plain", plain, [plain.worker_pid()]),
                       Target("drain only", "drain", drain, [drain.worker_pid()])]
            _warm(targets, small)
            small_files = _small_files(targets, wrk, rounds, seconds)
            _warm([seed, *by_workers.values()], small)
            against_seed = _seed_anchor(as_run, seed, {"text": wrk, "jpeg": jpeg_wrk}, rounds, seconds)
            scaling = _scaling({w: by_workers[w] for w in workers}, wrk, rounds, seconds)
            concurrency = _concurrency(gw, wrk, (1, 8, 32), sweep_rounds, sweep_seconds)
            mixed = load_mixed.run(here, gateway, THREADS, quick)
    shutil.rmtree(here)
    return [small_files, against_seed, scaling, concurrency, mixed]

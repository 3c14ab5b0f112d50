"""How the gateway's cost grows with file size (1, 16, 64, 512 MiB): throughput,
worker CPU per MiB and the worker's peak-RSS growth over its RSS after a 1 KiB
upload, for POST /upload (curl -F) and tus (one PATCH, and the page's 8 MiB
PATCHes), with a fresh gateway per protocol, plus control gateways given as
many 1 MiB uploads (RSS also creeps with request count). The goal is a flat
curve: memory that does not scale with the upload and CPU per MiB that stays
put, so time grows linearly. Plots: bench/growth-throughput.png, growth-rss.png."""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from itertools import accumulate
from pathlib import Path

from bench import plots
from bench.common import KIB, MIB, ROOT, Section, Service, fmt_bytes, met, percentile
from bench.memory import status_kib
from bench.thumbnails import SERVICE_NAME as THUMBNAIL_SERVICE
from bench.tus import CHUNK, GatewayTus, sha256_of
from bench.upload import LIMIT, MB, Copy, Curl, Target, start_gateway, write_text
from bench.validator import SERVICE_NAME as VALIDATOR_SERVICE

GOAL_GROWTH = 16 * MIB  # peak RSS over the RSS after a 1 KiB upload, at every size
GOAL_SAME = 2 * MIB  # the largest size may add at most this over the one before it
# CPU s/MiB at the largest size at most this factor of the one before. One-sided:
# a fixed per-request cost makes s/MiB fall as files grow (a line with an
# intercept is still linear); only a rise means cost grows faster than size.
GOAL_CPU_RATIO = 1.5
PLOT_DIR = Path(__file__).parent
# (label, short, tus chunk): "post" has no chunk (curl -F); tus None = one PATCH
# (tus-js-client's default), CHUNK = what the upload page sends (GET /policy).
POST = "post"
PROTOCOLS = (("POST /upload (curl -F)", POST, None),
             ("tus, 1 PATCH", "tus1", None),
             ("tus, 8 MiB PATCHes", "tus8", CHUNK))


def _median(xs: list[float]) -> float:
    return percentile(xs, 50)


def _mib(n: int) -> str:
    """RSS in MiB with two decimals (negative too): fmt_bytes's one decimal
    would print 16.04 MiB as '16.0 MiB' next to a goal of <= 16.0 MiB."""
    return f"{n / MIB:.2f} MiB"


def reset_hwm(pid: int) -> None:
    """Set VmHWM back to the current VmRSS (proc(5), clear_refs "5"). Without
    it the baseline is the worker's start-up peak (imports), ~16 MiB above its
    RSS after the first upload, and growth below that gap would read as 0 B."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def process_cpu(pid: int) -> float:
    """On-CPU seconds of all threads of ``pid``, ended ones included, in ns
    resolution: the kernel's process CPU clock (clock_getcpuclockid(3),
    CPUCLOCK_SCHED), readable for any process. /proc/<pid>/stat counts 10 ms
    ticks, too coarse for a 16 MiB upload (~30 ms); summing the live threads'
    schedstat misses the gateway's per-upload sha256 thread, gone by then."""
    return time.clock_gettime(((~pid) << 3) | 2)


def _once(target: Target, path: Path) -> tuple[float, float]:
    """(wall s, CPU s): the target's own upload and checks, with the worker's
    CPU from its process clock rather than the target's tick count."""
    if not hasattr(target, "pid"):  # cp: getrusage of the child is precise already
        return target.once(path)
    before = process_cpu(target.pid)
    wall, _ = target.once(path)
    return wall, process_cpu(target.pid) - before


@contextmanager
def _gateways(validator: Service, thumbnailer: Service, up: Path, tag: str, digests: dict):
    """A fresh gateway per protocol, all up at once (VmHWM only means something
    for a worker that has done nothing else); yields one Target per protocol."""
    servers, targets = [], []
    try:
        for label, short, chunk in PROTOCOLS:
            data_dir = up / f"{tag}-{short}"
            servers.append(start_gateway(validator, thumbnailer, data_dir, up / f"{tag}-{short}.log"))
            if short == POST:
                targets.append(Curl(label, short, servers[-1], data_dir / "files", gunicorn=True))
            else:
                targets.append(GatewayTus(label, short, servers[-1], data_dir / "files", chunk, digests))
        yield targets
    finally:
        # SIGTERM to all first: a gateway takes ~1 s to stop gracefully, one after another adds up.
        for server in servers:
            server.process.terminate()
        for server in servers:
            server.stop()


def _baseline(workers: list[Target], small: Path) -> tuple[dict, dict]:
    """One 1 KiB upload each (imports, connections), then VmHWM reset to the
    current RSS: returns (start-up peaks, baselines)."""
    for target in workers:
        target.once(small)
    startup = {t.short: status_kib(t.pid, "VmHWM") for t in workers}
    for target in workers:
        reset_hwm(target.pid)
    return startup, {t.short: status_kib(t.pid, "VmHWM") for t in workers}


def _measure(targets: list[Target], small: Path, files: dict[int, Path], rounds: dict[int, int]) -> dict:
    """Baseline: VmHWM reset after one 1 KiB upload per gateway; then the sizes in
    ascending order, targets interleaved round by round so drift (writeback,
    other load) hits every protocol alike. VmHWM is read after each size's
    rounds: it never goes down, so it is the peak of everything so far."""
    startup, base = _baseline([t for t in targets if hasattr(t, "pid")], small)
    out = {t.short: {} for t in targets}
    for size, path in files.items():
        samples = {t.short: [] for t in targets}
        for _ in range(rounds[size]):
            for target in targets:
                os.sync()  # no upload pays for the writeback of the one before it
                samples[target.short].append(_once(target, path))
        for target in targets:
            wall = [w for w, _ in samples[target.short]]
            cpu = [c for _, c in samples[target.short]]
            row = out[target.short][size] = {
                "p50_s": round(_median(wall), 4), "mb_per_s": round(size / MB / _median(wall), 1),
                "cpu_p50_s": round(_median(cpu), 4), "cpu_s_per_mib": round(_median(cpu) / (size / MIB), 5),
                "samples_s": [round(w, 4) for w in wall], "cpu_samples_s": [round(c, 4) for c in cpu]}
            if target.short in base:
                hwm = status_kib(target.pid, "VmHWM")
                row.update(vm_hwm=hwm, vm_rss=status_kib(target.pid, "VmRSS"), rss_growth=hwm - base[target.short],
                           over_startup_peak=max(0, hwm - startup[target.short]))
    return {"baseline_hwm": base, "startup_hwm": startup, "series": out}


def _control(targets: list[Target], small: Path, one_mib: Path, rounds: dict[int, int]) -> dict:
    """Fresh gateways given as many uploads as the measured run, all 1 MiB, VmHWM
    read at the same counts: a worker's RSS creeps over its first tens of
    requests whatever their size, and this says how much of the growth is that."""
    _, base = _baseline(targets, small)
    out, done = {t.short: {} for t in targets}, 0
    for size, count in zip(rounds, accumulate(rounds.values())):
        for _ in range(count - done):
            for target in targets:
                target.once(one_mib)
        done = count
        for target in targets:
            out[target.short][size] = status_kib(target.pid, "VmHWM") - base[target.short]
    return out


def _curve_section(result: dict, rounds: dict[int, int], load: tuple[float, float]) -> Section:
    rows = []
    labels = {"cp": "cp (same disk, anchor)", **{short: label for label, short, _ in PROTOCOLS}}
    for short, per in result["series"].items():
        for size, r in per.items():
            ts = r["samples_s"]
            rows.append([f"{labels[short]}, {fmt_bytes(size)}", str(rounds[size]), f"{r['p50_s']:.3f}",
                         f"{min(ts):.3f}-{max(ts):.3f}", f"{r['mb_per_s']:.0f}",
                         f"{r['cpu_s_per_mib'] * 1000:.1f}",
                         _mib(r["rss_growth"]) if "rss_growth" in r else "-",
                         _mib(r["over_startup_peak"]) if "rss_growth" in r else "-",
                         _mib(r["control_growth"]) if "rss_growth" in r else "-"])
    base = ", ".join(f"{labels[s]} {fmt_bytes(b)} (start-up peak {fmt_bytes(result['startup_hwm'][s])})"
                     for s, b in result["baseline_hwm"].items())
    return Section(
        "Growth with file size: throughput, gateway worker CPU and peak RSS (median of rounds)",
        ["protocol, file", "rounds", "p50 s", "range s", "MB/s", "CPU ms/MiB", "RSS growth",
         "over start-up peak", "1 MiB control"], rows,
        notes=["MB = 10^6 bytes; p50/range: wall time until curl exits (POST) or the last PATCH's 204 (tus)",
               "CPU ms/MiB: on-CPU time of the gunicorn worker, all threads (its process CPU clock, ns; "
               "cp: getrusage) over the upload, median, per MiB; tus includes the small GET /files/<id> "
               "check; at 1 MiB the per-request cost dominates, so compare the large sizes",
               "RSS growth: worker VmHWM after this size's rounds minus the baseline: VmHWM reset to VmRSS "
               "(clear_refs) after one 1 KiB upload; a fresh gateway per protocol (all three up at once, "
               "sharing one validator and thumbnailer); the goals use this column",
               "over start-up peak: the same VmHWM minus the worker's peak before the reset (imports), "
               "0 B unless an upload went above it: blind to growth smaller than that gap",
               "1 MiB control: RSS growth of another fresh gateway after as many uploads (counting all "
               "rounds so far), all of 1 MiB: growth that matches it comes from request count, not file size",
               f"baseline: {base}",
               "tus: the record's sha256 and size are checked after each upload, outside the clock; "
               "stored files deleted and os.sync() run between uploads, outside the clock",
               f"1-min load average {load[0]:.1f} before, {load[1]:.1f} after "
               f"({os.cpu_count()} CPUs; above ~1.5 other work is competing and wall times are noisy)"],
        data={"rounds": {str(k): v for k, v in rounds.items()}, "load_before": load[0], "load_after": load[1],
              "baseline_hwm": result["baseline_hwm"],
              "startup_hwm": result["startup_hwm"],
              "series": {short: {str(size): r for size, r in per.items()}
                         for short, per in result["series"].items()}},
    )


def _goal_section(result: dict, sizes: list[int]) -> Section:
    """The verdict per protocol: flat memory, constant CPU per MiB; the
    throughput ratio is shown for reading, without a goal (the disk sets it)."""
    big, prev = sizes[-1], sizes[-2]
    big_s, prev_s = fmt_bytes(big), fmt_bytes(prev)
    rows, data = [], {}
    for label, short, _ in PROTOCOLS:
        per = result["series"][short]
        worst = max(per, key=lambda s: per[s]["rss_growth"])
        step = per[big]["rss_growth"] - per[prev]["rss_growth"]
        control_worst = max(r["control_growth"] for r in per.values())
        control_step = per[big]["control_growth"] - per[prev]["control_growth"]
        cpu_ratio = per[big]["cpu_s_per_mib"] / per[prev]["cpu_s_per_mib"]
        mbps_ratio = per[big]["mb_per_s"] / per[prev]["mb_per_s"]
        data[short] = {"max_rss_growth": per[worst]["rss_growth"], "max_rss_growth_at": worst,
                       "rss_step": step, "control_max_growth": control_worst, "control_step": control_step,
                       "cpu_ratio": round(cpu_ratio, 3), "mb_per_s_ratio": round(mbps_ratio, 3)}
        rows += [
            [f"{label}: peak RSS growth, any size",
             f"{_mib(per[worst]['rss_growth'])} at {fmt_bytes(worst)} (control {_mib(control_worst)})",
             f"<= {_mib(GOAL_GROWTH)}", met(per[worst]["rss_growth"] <= GOAL_GROWTH)],
            [f"{label}: RSS growth {big_s} minus {prev_s}", f"{_mib(step)} (control {_mib(control_step)})",
             f"<= {_mib(GOAL_SAME)}", met(step <= GOAL_SAME)],
            [f"{label}: CPU s/MiB {big_s} / {prev_s}",
             f"{cpu_ratio:.2f}x ({per[prev]['cpu_s_per_mib'] * 1000:.2f} -> {per[big]['cpu_s_per_mib'] * 1000:.2f} ms)",
             f"<= {GOAL_CPU_RATIO:g}x", met(cpu_ratio <= GOAL_CPU_RATIO)],
            [f"{label}: MB/s {big_s} / {prev_s}", f"{mbps_ratio:.2f}x", "-", "-"],
        ]
    return Section(
        f"Growth goals: a flat curve from {prev_s} to {big_s}",
        ["check", "value", "goal", "met"], rows,
        notes=[f"compared: the two largest sizes measured ({prev_s}, {big_s}); --quick stops at 64 MiB",
               "control: the same figure for the 1 MiB control gateways (same number of uploads); the goals "
               "judge the measured run alone",
               "CPU goal is one-sided: a fixed per-request cost makes s/MiB fall with size; only a rise "
               "says cost grows faster than the file",
               "VmHWM never goes down, so the largest size's growth includes every earlier peak"],
        data={"compared": [prev, big], "protocols": data},
    )


def _plot(result: dict) -> list[str]:
    labels = {"cp": "cp (same disk)", **{short: label for label, short, _ in PROTOCOLS}}
    # One colour per series in both charts (matplotlib's default cycle, by position).
    colors = {label: f"C{i}" for i, label in enumerate(labels.values())}
    mbps = {labels[s]: [(size, r["mb_per_s"]) for size, r in per.items()] for s, per in result["series"].items()}
    rss, dashed = {}, []
    for short, per in result["series"].items():
        if short != "cp":
            rss[labels[short]] = [(size, r["rss_growth"] / MIB) for size, r in per.items()]
            control = f"{labels[short]}, 1 MiB control"  # dashed, in its protocol's colour
            rss[control] = [(size, r["control_growth"] / MIB) for size, r in per.items()]
            colors[control] = colors[labels[short]]
            dashed.append(control)
    written = [plots.throughput(PLOT_DIR / "growth-throughput.png", mbps, dashed=(labels["cp"],), colors=colors),
               plots.rss_growth(PLOT_DIR / "growth-rss.png", rss, GOAL_GROWTH / MIB, dashed=tuple(dashed),
                                colors=colors)]
    return [str(p.relative_to(ROOT)) for p in written]


def run(workdir: Path, quick: bool) -> list[Section]:
    sizes = [MIB, 16 * MIB, 64 * MIB] + ([] if quick else [512 * MIB])
    rounds = {s: 2 for s in sizes} if quick else {MIB: 9, 16 * MIB: 7, 64 * MIB: 7, 512 * MIB: 4}
    up = workdir / "growth"
    up.mkdir(exist_ok=True)
    small = write_text(up / "small.txt", KIB)
    files = {size: write_text(up / f"big-{size // MIB}m.txt", size) for size in sizes}
    digests = {p: sha256_of(p) for p in (small, *files.values())}  # once, outside any timing
    cp_dir = up / "cp"
    cp_dir.mkdir()

    with Service("validator_service", "VALIDATOR_ADDR", VALIDATOR_SERVICE, up / "validator.log",
                 env={"MAX_FILE_SIZE": str(LIMIT)}) as validator, \
            Service("thumbnail_service", "THUMBNAIL_ADDR", THUMBNAIL_SERVICE, up / "thumbnail.log") as thumbnailer:
        with _gateways(validator, thumbnailer, up, "gateway", digests) as targets:
            load_before = os.getloadavg()[0]
            result = _measure([Copy(cp_dir), *targets], small, files, rounds)
            load_after = os.getloadavg()[0]
        with _gateways(validator, thumbnailer, up, "control", digests) as targets:
            control = _control(targets, small, files[MIB], rounds)
    for short, per in control.items():
        for size, growth in per.items():
            result["series"][short][size]["control_growth"] = growth
    curve = _curve_section(result, rounds, (load_before, load_after))
    goals = _goal_section(result, sizes)
    curve.data["plots"] = _plot(result)
    curve.notes.append("plots: " + ", ".join(curve.data["plots"]))
    shutil.rmtree(up)
    return [curve, goals]

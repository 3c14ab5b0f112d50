"""Gateway POST /upload over real HTTP, served as `make run` serves it
(`python -m gateway`: gunicorn, one gthread worker): curl throughput against
cp, a minimal body-to-file server and the tutorial Flask app on the same
files and disk; the worker's peak memory; how soon a renamed executable is
refused."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.common import KIB, MIB, ROOT, Section, Service, fmt_bytes, free_port, met, percentile, stop_process
from bench.memory import status_kib
from bench.thumbnails import SERVICE_NAME as THUMBNAIL_SERVICE
from bench.validator import SERVICE_NAME as VALIDATOR_SERVICE
from tests.samples import MZ_HEADER, TEXT

GIB = 1024 * MIB
LIMIT = GIB  # MAX_FILE_SIZE for gateway and validator: room for the 512 MiB file
MB = 1_000_000  # throughput is in MB/s, 10^6 bytes
GOAL_VS_MINIMAL = 0.8
GOAL_VS_PLAIN = 4.0
GOAL_GROWTH = 16 * MIB
# "The same at 64 and 512 MiB": 8x the bytes may add at most this much peak.
GOAL_SAME = 2 * MIB
GOAL_REFUSAL = 0.05
START_TIMEOUT = 30.0


class HttpServer:
    """An HTTP server subprocess on a free port, ready once GET /readyz is 200."""

    def __init__(self, label: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 port: int | None = None):
        self.label = label
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                        stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.label}: /readyz not 200 after {START_TIMEOUT:.0f}s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        """Every gunicorn worker: the children of the arbiter we started (the seed app runs several)."""
        pid = self.process.pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]

    def worker_pid(self) -> int:
        """gunicorn's one worker: the child of the arbiter we started."""
        pid = self.process.pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        if len(children) != 1:
            raise RuntimeError(f"{self.label}: expected one gunicorn worker, found {children}")
        return int(children[0])

    def stop(self) -> None:
        stop_process(self.process, timeout=15)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads: CPU it spent, whatever else ran."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def family_cpu_seconds(pid: int) -> float:
    """CPU of a process and every process under it, those it reaped included (the thumbnail
    service's fork server, and the render children that server reaps)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(child) for child in f.read().split()]
    except OSError:  # gone meanwhile
        return 0.0
    own = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(family_cpu_seconds(child) for child in children)


def curl_upload(url: str, path: Path, name: str) -> tuple[float, int, int]:
    """The brief's command (plus -w to read the status): seconds until curl
    exits, the HTTP status, and how many bytes curl sent."""
    argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
            "-F", f"file=@{path};filename={name}", f"{url}/upload"]
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    code, _, sent = result.stdout.strip().partition(" ")
    return elapsed, int(code or 0), int(float(sent or 0))


def empty_dir(folder: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove every file below ``folder`` (the stored uploads), keeping the tree."""
    for dirpath, _, names in os.walk(folder):
        for name in names:
            if name not in keep:
                os.unlink(os.path.join(dirpath, name))


def files_below(folder: Path) -> list[str]:
    return [n for _, _, names in os.walk(folder) for n in names]


def write_text(path: Path, size: int) -> Path:
    block = (TEXT * 2000).encode()
    with open(path, "wb") as out:
        left = size
        while left > 0:
            left -= out.write(block[:left])
    return path


def write_renamed_exe(path: Path, size: int) -> Path:
    """A DOS/PE header padded with zeros to 64 KiB, then random bytes."""
    with open(path, "wb") as out:
        head = MZ_HEADER.ljust(64 * KIB, b"\0")
        out.write(head)
        left = size - len(head)
        while left > 0:
            left -= out.write(os.urandom(min(4 * MIB, left)))
    return path


def start_gateway(validator: Service, thumbnailer: Service, data_dir: Path, log: Path,
                  **settings: str) -> HttpServer:
    port = free_port()
    # One worker unless asked: most areas measure one process's memory and CPU against an
    # anchor that is one process too; bench/load.py asks for make run's default beside the seed app.
    env = {"GATEWAY_WORKERS": "1"} | settings | {
        "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port), "DATA_DIR": str(data_dir), "DATABASE_URL": "",
        "VALIDATOR_ADDR": validator.address, "THUMBNAIL_ADDR": thumbnailer.address,
        "MAX_FILE_SIZE": str(LIMIT), "MAX_REQUEST_SIZE": str(LIMIT + MIB)}
    return HttpServer("gateway", [sys.executable, "-m", "gateway"], log, env, port)


class Target:
    """One way to get the file onto the disk: ``once(path)`` -> (wall seconds,
    CPU seconds of the process doing the writing)."""

    def __init__(self, label: str, short: str):
        self.label, self.short = label, short

    def once(self, path: Path) -> tuple[float, float]:
        raise NotImplementedError


class Copy(Target):
    def __init__(self, dest_dir: Path):
        super().__init__("cp (same disk)", "cp")
        self.dest_dir = dest_dir

    def once(self, path: Path) -> tuple[float, float]:
        dest = self.dest_dir / path.name
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(["cp", str(path), str(dest)], check=True)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        dest.unlink()
        return elapsed, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


class Curl(Target):
    def __init__(self, label: str, short: str, server: HttpServer, stored: Path, gunicorn: bool):
        super().__init__(label, short)
        self.server, self.stored = server, stored
        # gunicorn's worker does the work; the minimal server is one process.
        self.pid = server.worker_pid() if gunicorn else server.process.pid

    def once(self, path: Path) -> tuple[float, float]:
        cpu = cpu_seconds(self.pid)
        elapsed, code, _ = curl_upload(self.server.url, path, "big.txt")
        cpu = cpu_seconds(self.pid) - cpu
        if code != 201:
            raise RuntimeError(f"{self.label}: HTTP {code} for {path.name}; see {self.server.log_path}")
        empty_dir(self.stored)
        return elapsed, cpu


def _median(xs: list[float]) -> float:
    return percentile(xs, 50)


def _throughput(targets: list[Target], files: dict[int, Path], rounds: dict[int, int]) -> tuple[Section, dict]:
    samples: dict[int, dict[str, list[tuple[float, float]]]] = {}
    load_before = os.getloadavg()[0]
    for size, path in files.items():
        per = samples[size] = {t.short: [] for t in targets}
        for _ in range(rounds[size]):
            for target in targets:  # interleaved, so drift (writeback, noise) hits all alike
                # No target pays for the writeback of the one before it.
                os.sync()
                per[target.short].append(target.once(path))
    load_after = os.getloadavg()[0]

    goals = {"minimal": (GOAL_VS_MINIMAL, f">= {GOAL_VS_MINIMAL}"), "plain": (GOAL_VS_PLAIN, f">= {GOAL_VS_PLAIN:g}x")}
    rows, data = [], {}
    for size, per in samples.items():
        wall = {short: [w for w, _ in xs] for short, xs in per.items()}
        cpu = {short: [c for _, c in xs] for short, xs in per.items()}
        mbps = {short: size / MB / _median(ts) for short, ts in wall.items()}
        data[size] = {short: {"p50_s": round(_median(wall[short]), 3), "mb_per_s": round(mbps[short], 1),
                              "cpu_p50_s": round(_median(cpu[short]), 3),
                              "samples_s": [round(t, 3) for t in wall[short]],
                              "cpu_samples_s": [round(t, 3) for t in cpu[short]]} for short in per}
        for target in targets:
            ts = wall[target.short]
            ratio = mbps["gateway"] / mbps[target.short]
            goal, text = goals.get(target.short, (None, "-"))
            if target.short != "gateway":
                data[size][f"gateway/{target.short}"] = round(ratio, 3)
            rows.append([f"{target.label}, {fmt_bytes(size)}", str(len(ts)), f"{_median(ts):.2f}",
                         f"{min(ts):.2f}-{max(ts):.2f}", f"{mbps[target.short]:.0f}",
                         f"{_median(cpu[target.short]):.2f}",
                         "-" if target.short == "gateway" else f"{ratio:.2f}", text,
                         met(None if goal is None else ratio >= goal)])
    section = Section(
        "Upload throughput: curl -F file=@big.txt to POST /upload (text file, median of rounds)",
        ["target, file", "rounds", "p50 s", "range s", "MB/s", "CPU s", "gateway / this", "goal", "met"],
        rows,
        notes=["MB = 10^6 bytes; p50/range: wall time until curl (or cp) exits, process start included",
               "CPU s: user+sys of the process that writes the file (gunicorn worker, minimal server, cp), median",
               "targets interleaved round by round; stored files deleted after each round; "
               "os.sync() before each timed upload",
               "minimal: bench/minimal_server.py, http.server copying the raw body in 256 KiB reads",
               "minimal +sha256: the same, also hashing every byte before the 201 (the contract's record "
               "carries the sha256, so any conforming server pays this; no goal)",
               "minimal +sha256+fsync: the same, also hashing every byte and fsyncing before the 201 "
               "(compare with the gateway started with UPLOAD_FSYNC=on, which does the same; no goal)",
               "gateway: default settings (UPLOAD_FSYNC off, like the anchors: bytes reach the disk "
               "through the page cache)",
               "plain Flask: bench/plain_flask.py, request.files['file'].save() under gunicorn gthread",
               f"1-min load average {load_before:.1f} before, {load_after:.1f} after "
               f"({os.cpu_count()} CPUs; above ~1.5 other work is competing and wall times are noisy)"],
        data={"rounds": {str(k): v for k, v in rounds.items()}, "load_before": load_before,
              "load_after": load_after, "sizes": {str(k): v for k, v in data.items()}},
    )
    return section, {size: data[size]["gateway"]["p50_s"] for size in data}


def _memory(validator: Service, thumbnailer: Service, workdir: Path, small: Path,
            files: dict[int, Path]) -> Section:
    data_dir = workdir / "gateway-memory-data"
    rows, data = [], []
    with start_gateway(validator, thumbnailer, data_dir, workdir / "gateway-memory.log") as gateway:
        worker = gateway.worker_pid()
        steps = [small, *files.values()]
        base = None
        for path in steps:
            _, code, _ = curl_upload(gateway.url, path, "big.txt")
            if code != 201:
                raise RuntimeError(f"gateway: HTTP {code} for {path.name}; see {gateway.log_path}")
            hwm, rss = status_kib(worker, "VmHWM"), status_kib(worker, "VmRSS")
            empty_dir(data_dir / "files")
            size = path.stat().st_size
            data.append({"upload": size, "vm_hwm": hwm, "vm_rss": rss})
            if base is None:
                base = hwm
                rows.append([f"after a {fmt_bytes(size)} upload (baseline)", fmt_bytes(hwm), "-",
                             fmt_bytes(rss), "-", "-"])
                continue
            growth = hwm - base
            previous = data[-2]["vm_hwm"] - base if len(data) > 2 else None
            ok = growth <= _growth_limit(previous)
            goal = f"growth <= {fmt_bytes(GOAL_GROWTH)}" + (
                f", <= {fmt_bytes(GOAL_SAME)} over previous" if previous is not None else "")
            rows.append([f"after a {fmt_bytes(size)} upload", fmt_bytes(hwm), fmt_bytes(growth),
                         fmt_bytes(rss), goal, met(ok)])
    return Section(
        "Upload memory: gateway worker (pid of the gunicorn child) peak RSS, fresh gateway, uploads in order",
        ["step", "VmHWM", "growth", "VmRSS", "goal", "met"], rows,
        notes=["VmHWM never goes down: each row's growth is over the baseline, after all uploads so far"],
        data={"steps": data},
    )


def _growth_limit(previous: int | None) -> int:
    """The most peak growth that meets the goal: 16 MiB, and no more than
    GOAL_SAME over the growth after the previous (smaller) upload."""
    if previous is None:
        return GOAL_GROWTH
    return min(GOAL_GROWTH, previous + GOAL_SAME)


def _refusal(gateway: HttpServer, data_dir: Path, exe: Path, small: Path, accepted_s: float,
             rounds: int) -> Section:
    runs, floor = [], []
    for _ in range(rounds):
        elapsed, code, sent = curl_upload(gateway.url, exe, "holiday.jpg")
        leftovers = files_below(data_dir / "files")
        runs.append({"seconds": elapsed, "status": code, "curl_sent": sent, "leftover_files": len(leftovers)})
        empty_dir(data_dir / "files")
        floor.append(curl_upload(gateway.url, small, "small.txt")[0])
        empty_dir(data_dir / "files")
    secs = _median([r["seconds"] for r in runs])
    sent = int(_median([r["curl_sent"] for r in runs]))
    statuses = sorted({r["status"] for r in runs})
    leftover = max(r["leftover_files"] for r in runs)
    size = exe.stat().st_size
    ratio = secs / accepted_s
    ok = statuses == [415] and ratio <= GOAL_REFUSAL and leftover == 0
    rows = [
        [f"accepted big.txt, {fmt_bytes(size)}", "201", f"{accepted_s:.3f}", fmt_bytes(size), "-", "-", "-"],
        [f"refused holiday.jpg (PE), {fmt_bytes(size)}", ",".join(map(str, statuses)), f"{secs:.3f}",
         fmt_bytes(sent), f"{ratio:.1%}", f"415 in <= {GOAL_REFUSAL:.0%} of accepted", met(ok)],
        [f"floor: accepted small.txt, {fmt_bytes(small.stat().st_size)}", "201", f"{_median(floor):.3f}",
         fmt_bytes(small.stat().st_size), f"{_median(floor) / accepted_s:.1%}", "-", "-"],
    ]
    return Section(
        f"Upload early refusal: a renamed executable vs an accepted file of the same size ({rounds} rounds, median)",
        ["upload", "status", "p50 s", "curl sent", "of accepted", "goal", "met"], rows,
        notes=["accepted: the gateway's median from the throughput table",
               "curl sent: curl's %{size_upload} when it exited (median)",
               "floor: the quickest any upload can be answered (curl start, connection, validator call)",
               f"files left in DATA_DIR after a refusal: {leftover}"],
        data={"size": size, "accepted_p50_s": accepted_s, "refused_p50_s": round(secs, 3),
              "floor_p50_s": round(_median(floor), 4), "ratio": round(ratio, 4), "runs": runs},
    )


def run(workdir: Path, quick: bool) -> list[Section]:
    sizes = (64 * MIB,) if quick else (64 * MIB, 512 * MIB)
    rounds = {64 * MIB: 3} if quick else {64 * MIB: 7, 512 * MIB: 5}
    refusal_rounds = 3 if quick else 5
    up = workdir / "upload"
    up.mkdir(exist_ok=True)
    small = write_text(up / "small.txt", KIB)
    files = {size: write_text(up / f"big-{size // MIB}m.txt", size) for size in sizes}
    exe = write_renamed_exe(up / "holiday.jpg", sizes[-1])

    with Service("validator_service", "VALIDATOR_ADDR", VALIDATOR_SERVICE, up / "validator.log",
                 env={"MAX_FILE_SIZE": str(LIMIT)}) as validator, \
            Service("thumbnail_service", "THUMBNAIL_ADDR", THUMBNAIL_SERVICE, up / "thumbnail.log") as thumbnailer:
        data_dir, fsync_dir = up / "gateway-data", up / "gateway-fsync-data"
        minimal_dir, hashing_dir, durable_dir, plain_dir, plain_tmp, cp_dir = (
            up / n for n in ("minimal", "minimal-sha256", "minimal-durable", "plain", "plain-tmp", "cp"))
        for d in (cp_dir, plain_tmp):
            d.mkdir(exist_ok=True)
        minimal_port, hashing_port, durable_port, plain_port = free_port(), free_port(), free_port(), free_port()
        minimal_argv = [sys.executable, "-m", "bench.minimal_server", "--port"]
        with HttpServer("minimal server", [*minimal_argv, str(minimal_port), "--dir", str(minimal_dir)],
                        up / "minimal.log", port=minimal_port) as minimal, \
                HttpServer("minimal +sha256", [*minimal_argv, str(hashing_port), "--dir", str(hashing_dir),
                                               "--sha256"], up / "minimal-sha256.log", port=hashing_port) as hashing, \
                HttpServer("minimal +sha256+fsync", [*minimal_argv, str(durable_port), "--dir", str(durable_dir),
                                                     "--sha256", "--fsync"],
                           up / "minimal-durable.log", port=durable_port) as durable, \
                HttpServer("plain Flask", [sys.executable, "-m", "bench.plain_flask", "--port", str(plain_port)],
                           up / "plain_flask.log", {"UPLOAD_DIR": str(plain_dir), "TMPDIR": str(plain_tmp)},
                           port=plain_port) as plain, \
                start_gateway(validator, thumbnailer, data_dir, up / "gateway.log") as gateway, \
                start_gateway(validator, thumbnailer, fsync_dir, up / "gateway-fsync.log",
                              UPLOAD_FSYNC="on") as gateway_fsync:
            targets = [Copy(cp_dir),
                       Curl("minimal server", "minimal", minimal, minimal_dir, gunicorn=False),
                       Curl("minimal +sha256", "hashing", hashing, hashing_dir, gunicorn=False),
                       Curl("minimal +sha256+fsync", "durable", durable, durable_dir, gunicorn=False),
                       Curl("plain Flask", "plain", plain, plain_dir, gunicorn=True),
                       Curl("gateway", "gateway", gateway, data_dir / "files", gunicorn=True),
                       Curl("gateway UPLOAD_FSYNC=on", "gateway_fsync", gateway_fsync, fsync_dir / "files",
                            gunicorn=True)]
            for target in targets[1:]:  # first requests pay for imports and connections
                target.once(small)
            throughput, gateway_p50 = _throughput(targets, files, rounds)
            refusal = _refusal(gateway, data_dir, exe, small, gateway_p50[sizes[-1]], refusal_rounds)
        memory = _memory(validator, thumbnailer, up, small, files)
    shutil.rmtree(up)
    return [throughput, memory, refusal]

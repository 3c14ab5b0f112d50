"""Gateway tus uploads (/tus/) over real HTTP, served as `make run` serves it:
one client streaming the file as one PATCH (tus-js-client's default
chunkSize=Infinity) and in 8 MiB PATCHes, against cp, POST /upload with curl
and @tus/server + @tus/file-store (Node) driven by the same client code; the
worker's peak memory across a large tus upload."""
from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import KIB, MIB, Section, Service, fmt_bytes, free_port, met, percentile
from bench.memory import status_kib
from bench.thumbnails import SERVICE_NAME as THUMBNAIL_SERVICE
from bench.upload import (LIMIT, MB, Copy, Curl, HttpServer, Target, cpu_seconds, empty_dir, start_gateway,
                          write_text)
from bench.validator import SERVICE_NAME as VALIDATOR_SERVICE

GOAL_VS_CP = 0.5
GOAL_VS_NODE = 4.0
GOAL_GROWTH = 16 * MIB
CHUNK = 8 * MIB  # the gateway's advertised tus chunk size (GET /policy)
PIECE = 256 * KIB  # the client sends the body in pieces of this size, read from the file
NODE_SRC = Path(__file__).parent / "tus_node"
NODE_DIR = Path(__file__).parent / "out" / "tus_node"  # gitignored: node_modules lives here
NAME = "big.txt"


def install_node_server() -> Path:
    """Copy bench/tus_node/ (pinned package.json, its lock, server.mjs) to
    bench/out/tus_node/ and npm install there; returns the server script."""
    if not (shutil.which("node") and shutil.which("npm")):
        raise RuntimeError("tus: node and npm are needed for the @tus/server baseline")
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json", "server.mjs"):
        shutil.copyfile(NODE_SRC / name, NODE_DIR / name)
    result = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"tus: npm install failed in {NODE_DIR}:\n{result.stderr[-2000:]}")
    return NODE_DIR / "server.mjs"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


class TusClient:
    """A tus 1.0.0 client on one keep-alive connection (http.client): POST to
    create, then PATCHes whose bodies are read from the file in 256 KiB pieces
    straight into the socket, so the client is never the bottleneck."""

    def __init__(self, url: str, endpoint: str):
        parts = urlsplit(url)
        self.host, self.port, self.endpoint = parts.hostname, parts.port, endpoint
        self._buffer = memoryview(bytearray(PIECE))

    def upload(self, path: Path, chunk: int | None) -> http.client.HTTPResponse:
        """Create and send the whole file (one PATCH, or PATCHes of ``chunk``
        bytes); returns the last PATCH's response (its body read)."""
        size = path.stat().st_size
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            metadata = "filename " + base64.b64encode(NAME.encode()).decode()
            reply = self._request(conn, "POST", self.endpoint,
                                  {"Upload-Length": str(size), "Upload-Metadata": metadata, "Content-Length": "0"})
            if reply.status != 201:
                raise RuntimeError(f"tus create: HTTP {reply.status} {reply.read()[:200]!r}")
            location = urlsplit(reply.getheader("Location")).path
            offset = 0
            with open(path, "rb", buffering=0) as f:
                while True:
                    count = size - offset if chunk is None else min(chunk, size - offset)
                    reply = self._patch(conn, location, f, offset, count)
                    if reply.status != 204:
                        raise RuntimeError(f"tus PATCH at {offset}: HTTP {reply.status} {reply.read()[:300]!r}")
                    offset = int(reply.getheader("Upload-Offset"))
                    if offset >= size:
                        return reply
        finally:
            conn.close()

    @staticmethod
    def _request(conn, method: str, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        conn.request(method, url, headers={"Tus-Resumable": "1.0.0", **headers})
        reply = conn.getresponse()
        reply.read()
        return reply

    def _patch(self, conn, url: str, f, offset: int, count: int) -> http.client.HTTPResponse:
        conn.putrequest("PATCH", url, skip_accept_encoding=True)
        for name, value in (("Tus-Resumable", "1.0.0"), ("Content-Type", "application/offset+octet-stream"),
                            ("Upload-Offset", str(offset)), ("Content-Length", str(count))):
            conn.putheader(name, value)
        conn.endheaders()
        f.seek(offset)
        left = count
        while left:
            n = f.readinto(self._buffer[:min(PIECE, left)])
            if not n:
                raise RuntimeError(f"{f.name} ended {left} bytes early")
            conn.sock.sendall(self._buffer[:n])
            left -= n
        reply = conn.getresponse()
        reply.read()
        return reply


class GatewayTus(Target):
    """The gateway's /tus/: the final 204 must carry Upload-File-Id, and the
    record's sha256 must be the file's (checked after the clock stops)."""

    def __init__(self, label: str, short: str, gateway: HttpServer, stored: Path, chunk: int | None,
                 digests: dict[Path, str]):
        super().__init__(label, short)
        self.gateway, self.stored, self.chunk, self.digests = gateway, stored, chunk, digests
        self.client = TusClient(gateway.url, "/tus/")
        self.pid = gateway.worker_pid()

    def once(self, path: Path) -> tuple[float, float]:
        cpu = cpu_seconds(self.pid)
        elapsed, reply = _timed(lambda: self.client.upload(path, self.chunk))
        cpu = cpu_seconds(self.pid) - cpu
        file_id = reply.getheader("Upload-File-Id")
        if not file_id:
            raise RuntimeError(f"{self.label}: final 204 without Upload-File-Id; see {self.gateway.log_path}")
        conn = http.client.HTTPConnection("127.0.0.1", self.gateway.port, timeout=30)
        conn.request("GET", f"/files/{file_id}")
        record = json.loads(conn.getresponse().read())
        conn.close()
        if record.get("sha256") != self.digests[path] or record.get("size") != path.stat().st_size:
            raise RuntimeError(f"{self.label}: record {file_id} has sha256 {record.get('sha256')}, "
                               f"size {record.get('size')}; the file's are {self.digests[path]}, {path.stat().st_size}")
        empty_dir(self.stored)
        return elapsed, cpu


class NodeTus(Target):
    """@tus/server with a FileStore: the stored file's sha256 must be the file's."""

    def __init__(self, label: str, short: str, server: HttpServer, directory: Path, chunk: int | None,
                 digests: dict[Path, str]):
        super().__init__(label, short)
        self.server, self.directory, self.chunk, self.digests = server, directory, chunk, digests
        self.client = TusClient(server.url, "/files")

    def once(self, path: Path) -> tuple[float, float]:
        pid = self.server.process.pid
        cpu = cpu_seconds(pid)
        elapsed, reply = _timed(lambda: self.client.upload(path, self.chunk))
        cpu = cpu_seconds(pid) - cpu
        stored = [p for p in self.directory.iterdir() if p.suffix != ".json"]
        if len(stored) != 1 or sha256_of(stored[0]) != self.digests[path]:
            raise RuntimeError(f"{self.label}: stored {[p.name for p in stored]} does not match {path.name}; "
                               f"see {self.server.log_path}")
        empty_dir(self.directory)
        return elapsed, cpu


def _timed(call):
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def _median(xs: list[float]) -> float:
    return percentile(xs, 50)


# Each row's comparison: (ratio label, numerator, denominator, goal).
COMPARE = {
    "tus1": ("-", None, None, None),
    "tus8": ("tus 8 MiB / tus 1 PATCH", "tus8", "tus1", None),
    "cp": ("tus 1 PATCH / cp", "tus1", "cp", GOAL_VS_CP),
    "curl": ("tus 1 PATCH / POST /upload", "tus1", "curl", None),
    "node1": ("tus 1 PATCH / @tus 1 PATCH", "tus1", "node1", GOAL_VS_NODE),
    "node8": ("tus 8 MiB / @tus 8 MiB", "tus8", "node8", GOAL_VS_NODE),
}


def _throughput(targets: list[Target], path: Path, rounds: int) -> Section:
    size = path.stat().st_size
    samples: dict[str, list[tuple[float, float]]] = {t.short: [] for t in targets}
    load_before = os.getloadavg()[0]
    for _ in range(rounds):
        for target in targets:  # interleaved, so drift (writeback, noise) hits all alike
            samples[target.short].append(target.once(path))
    load_after = os.getloadavg()[0]

    wall = {short: [w for w, _ in xs] for short, xs in samples.items()}
    cpu = {short: [c for _, c in xs] for short, xs in samples.items()}
    mbps = {short: size / MB / _median(ts) for short, ts in wall.items()}
    data = {short: {"p50_s": round(_median(wall[short]), 3), "mb_per_s": round(mbps[short], 1),
                    "cpu_p50_s": round(_median(cpu[short]), 3), "samples_s": [round(t, 3) for t in wall[short]],
                    "cpu_samples_s": [round(t, 3) for t in cpu[short]]} for short in samples}
    rows = []
    for target in targets:
        ts = wall[target.short]
        label, num, den, goal = COMPARE[target.short]
        ratio = mbps[num] / mbps[den] if num else None
        if ratio is not None:
            data[f"{num}/{den}"] = round(ratio, 3)
        goal_text = "-" if goal is None else f">= {goal:g}" + ("x" if goal > 1 else "")
        rows.append([f"{target.label}, {fmt_bytes(size)}", str(len(ts)), f"{_median(ts):.2f}",
                     f"{min(ts):.2f}-{max(ts):.2f}", f"{mbps[target.short]:.0f}", f"{_median(cpu[target.short]):.2f}",
                     label, "-" if ratio is None else f"{ratio:.2f}", goal_text,
                     met(None if goal is None else ratio >= goal)])
    return Section(
        "tus throughput: one client on loopback, the same text file to each target (median of rounds)",
        ["target, file", "rounds", "p50 s", "range s", "MB/s", "CPU s", "ratio", "value", "goal", "met"],
        rows,
        notes=["MB = 10^6 bytes; tus: wall time from the creating POST to the last PATCH's 204, one keep-alive "
               "connection (http.client), body read from the file in 256 KiB pieces into the socket",
               "gateway tus: final 204 must carry Upload-File-Id and GET /files/<id> the file's sha256 "
               "(checked after the clock stops)",
               f"@tus/server: bench/tus_node/server.mjs ({_node_versions()}); stored file's sha256 checked "
               "after the clock stops; its FileStore does not fsync, hash or validate",
               "POST /upload: curl -F file=@big.txt as in the upload area; cp: cp on the same disk "
               "(a page-cache copy, no fsync)",
               "CPU s: user+sys of the process that writes the file (gunicorn worker, node, cp), median",
               "targets interleaved round by round; stored files deleted after each round",
               f"1-min load average {load_before:.1f} before, {load_after:.1f} after ({os.cpu_count()} CPUs)"],
        data={"size": size, "rounds": rounds, "load_before": load_before, "load_after": load_after,
              "targets": data},
    )


def _node_versions() -> str:
    """The installed @tus packages and node, as the note on the table says them."""
    names = ["@tus/server", "@tus/file-store"]
    installed = [f"{n} {json.loads((NODE_DIR / 'node_modules' / n / 'package.json').read_text())['version']}"
                 for n in names]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return ", ".join([*installed, f"node {node}"])


def _memory(validator: Service, thumbnailer: Service, workdir: Path, small: Path, big: Path,
            digests: dict[Path, str]) -> Section:
    """Per client mode, a fresh gateway: VmHWM after a small tus upload (the
    baseline), then after the big one."""
    rows, data = [], []
    for chunk, how in ((None, "one PATCH"), (CHUNK, "8 MiB PATCHes")):
        short = "one" if chunk is None else "chunks"
        data_dir = workdir / f"gateway-memory-{short}"
        with start_gateway(validator, thumbnailer, data_dir, workdir / f"gateway-memory-{short}.log") as gateway:
            target = GatewayTus("gateway tus", "tus", gateway, data_dir / "files", chunk, digests)
            steps = []
            for path in (small, big):
                target.once(path)
                steps.append({"upload": path.stat().st_size, "vm_hwm": status_kib(target.pid, "VmHWM"),
                              "vm_rss": status_kib(target.pid, "VmRSS")})
        base, after = steps
        growth = after["vm_hwm"] - base["vm_hwm"]
        data.append({"mode": how, "chunk": chunk, "steps": steps, "growth": growth})
        rows.append([f"{fmt_bytes(base['upload'])} tus upload, {how} (baseline)", fmt_bytes(base["vm_hwm"]), "-",
                     fmt_bytes(base["vm_rss"]), "-", "-"])
        rows.append([f"then {fmt_bytes(after['upload'])} tus upload, {how}", fmt_bytes(after["vm_hwm"]),
                     fmt_bytes(growth), fmt_bytes(after["vm_rss"]), f"growth <= {fmt_bytes(GOAL_GROWTH)}",
                     met(growth <= GOAL_GROWTH)])
    return Section(
        "tus memory: gateway worker (pid of the gunicorn child) peak RSS, a fresh gateway per client mode",
        ["step", "VmHWM", "growth", "VmRSS", "goal", "met"], rows,
        notes=["growth: VmHWM after the big upload minus VmHWM after the small one, same worker"],
        data={"modes": data},
    )


def run(workdir: Path, quick: bool) -> list[Section]:
    size = 64 * MIB if quick else 512 * MIB
    rounds = 3 if quick else 5
    up = workdir / "tus"
    up.mkdir(exist_ok=True)
    small = write_text(up / "small.txt", KIB)
    big = write_text(up / f"big-{size // MIB}m.txt", size)
    digests = {p: sha256_of(p) for p in (small, big)}  # once, outside any timing
    server_script = install_node_server()

    with Service("validator_service", "VALIDATOR_ADDR", VALIDATOR_SERVICE, up / "validator.log",
                 env={"MAX_FILE_SIZE": str(LIMIT)}) as validator, \
            Service("thumbnail_service", "THUMBNAIL_ADDR", THUMBNAIL_SERVICE, up / "thumbnail.log") as thumbnailer:
        data_dir, node_dir, cp_dir = up / "gateway-data", up / "node-files", up / "cp"
        for d in (node_dir, cp_dir):
            d.mkdir(exist_ok=True)
        node_port = free_port()
        with start_gateway(validator, thumbnailer, data_dir, up / "gateway.log") as gateway, \
                HttpServer("@tus/server", ["node", str(server_script), "--port", str(node_port),
                                           "--dir", str(node_dir)], up / "node.log", port=node_port) as node:
            stored = data_dir / "files"
            targets = [Copy(cp_dir),
                       GatewayTus("gateway tus, 1 PATCH", "tus1", gateway, stored, None, digests),
                       GatewayTus("gateway tus, 8 MiB PATCHes", "tus8", gateway, stored, CHUNK, digests),
                       Curl("gateway POST /upload (curl -F)", "curl", gateway, stored, gunicorn=True),
                       NodeTus("@tus/server, 1 PATCH", "node1", node, node_dir, None, digests),
                       NodeTus("@tus/server, 8 MiB PATCHes", "node8", node, node_dir, CHUNK, digests)]
            for target in targets[1:]:  # first requests pay for imports and connections
                target.once(small)
            throughput = _throughput(targets, big, rounds)
        memory = _memory(validator, thumbnailer, up, small, big, digests)
    shutil.rmtree(up)
    return [throughput, memory]

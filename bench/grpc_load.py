"""The gRPC services under load, before and after issue 16's admission control:
how fast health checks answer while every work slot of a service is held, and
how a burst of 200 calls at once is served.

"Before" is commit 88171a4 (the parent of 3575f89, where issue 16's work
starts), taken out of git into the bench's scratch directory with its protos
generated there; "after" is the working tree. Both run as subprocesses with the
same Python and the same settings, a fresh server for every measurement, before
and after in turn, and both are called by the same client code from the wire:
generic calls by method path carrying bytes serialized from the working tree's
messages (the wire format did not change), so nothing here depends on either
tree's Python API.
"""
from __future__ import annotations

import io
import math
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from bench.common import ROOT, Section, Service, fmt_ms
from bench.images import photo_like

# The one import of generated code here: only to build request bytes.
from protos.upload.v1 import common_pb2, thumbnail_pb2, validator_pb2

BEFORE = "88171a4"
VALIDATOR, THUMBNAIL = "upload.v1.Validator", "upload.v1.Thumbnail"
VALIDATE, CHECK, RENDER = f"/{VALIDATOR}/Validate", f"/{VALIDATOR}/Check", f"/{THUMBNAIL}/Render"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"

# Both versions run with these, whatever the caller's environment says (the defaults).
SETTINGS = {"VALIDATOR_WORKERS": "64", "THUMBNAIL_WORKERS": "2", "GRPC_STREAM_IDLE_TIMEOUT": "60",
            "GRPC_MAX_CALL_TIME": "3600", "GRPC_MAX_CONNECTION_AGE": "60", "LOG_LEVEL": "INFO"}
# The working tree's work slots for these settings: Validate and Check take one of
# VALIDATOR_WORKERS; Render calls in flight are at most 2 x THUMBNAIL_WORKERS.
SLOTS = {"validator": 64, "thumbnail": 4}
EXTRA_STALLS = 16  # stalled streams beyond the slots: the surplus a hostile caller adds

HEALTH_EVERY = 0.05  # a probe every 50 ms...
HEALTH_DEADLINE = 1.0  # ...each with a 1 s deadline
LOAD_THREADS = {"validator": 4, "thumbnail": 2}  # callers of real work during the saturation
LOAD_DEADLINE = {"validator": 1.0, "thumbnail": 5.0}
LOAD_BACKOFF = 0.05  # a load caller refused waits this long before its next call ("retry shortly")
RESTALL_EVERY = 0.2  # the staller opens again every stalled stream that ended, this often
BURST = 200
BURST_DEADLINE = 10.0
BURST_PAUSE = 1.0  # between two bursts on one server
IMAGE_SIDE = 64  # the burst's and the load's image: a small PNG


# --- requests, as bytes on the wire ---------------------------------------------------------

@dataclass(frozen=True)
class Work:
    """One service's work call, as the wire sees it."""
    kind: str  # "validator" / "thumbnail"
    module: str
    addr_var: str
    service: str
    method: str
    streaming: bool
    request: bytes | list[bytes]  # a unary request, or a stream's messages
    stall_first: bytes | None  # what a stalled stream sends before going silent (None: nothing)
    stall_method: str


def _png() -> bytes:
    out = io.BytesIO()
    photo_like(IMAGE_SIDE, IMAGE_SIDE).save(out, "PNG")
    return out.getvalue()


def _info(name: str, size: int):
    return common_pb2.FileInfo(original_name=name, declared_size=size)


def validator_work(png: bytes) -> Work:
    check = validator_pb2.CheckRequest(info=_info("small.png", len(png)), head=png, size=len(png))
    # A Validate stream that declares a 10 MiB upload, sends its FileInfo and then nothing.
    stall = validator_pb2.ValidateRequest(info=_info("stalled.png", 10 * 1024 * 1024))
    return Work("validator", "validator_service", "VALIDATOR_ADDR", VALIDATOR, CHECK, False,
                check.SerializeToString(), stall.SerializeToString(), VALIDATE)


def thumbnail_work(png: bytes, stall_after_options: bool) -> Work:
    options = thumbnail_pb2.RenderOptions(info=_info("small.png", len(png)), mime_type="image/png")
    messages = [thumbnail_pb2.RenderRequest(options=options).SerializeToString(),
                thumbnail_pb2.RenderRequest(chunk=png).SerializeToString()]
    return Work("thumbnail", "thumbnail_service", "THUMBNAIL_ADDR", THUMBNAIL, RENDER, True,
                messages, messages[0] if stall_after_options else None, RENDER)


def _channel(address: str) -> grpc.Channel:
    # A connection of its own: gRPC otherwise shares one between channels with the same
    # target, and the prober, the load and the stalled streams are different callers.
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    grpc.channel_ready_future(channel).result(timeout=10)
    return channel


def _caller(channel: grpc.Channel, work: Work):
    """The work call, bytes in and out (no serializer: gRPC passes bytes as they are)."""
    if work.streaming:
        call = channel.stream_unary(work.method)
        return lambda timeout: call(iter(work.request), timeout=timeout)
    call = channel.unary_unary(work.method)
    return lambda timeout: call(work.request, timeout=timeout)


# --- the two trees ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Version:
    label: str  # "before" / "after"
    commit: str
    root: Path


def _short_head() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, check=False,
                          text=True).stdout.strip() or "?"


def before_tree(workdir: Path) -> Path:
    """Commit BEFORE's files with their protos generated, in ``workdir``."""
    tree = workdir / f"before-{BEFORE}"
    if (tree / ".ready").exists():
        return tree
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", BEFORE], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    protos = sorted(str(p.relative_to(tree)) for p in tree.glob("protos/**/*.proto"))
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--python_out=.", "--pyi_out=.",
                    "--grpc_python_out=.", *protos], cwd=tree, check=True)
    # The services must import that tree's modules, not the working tree's (installed editable).
    where = subprocess.run(
        [sys.executable, "-c", "import protos.serving, validator_service.server, thumbnail_service.server as t;"
                               "print(protos.serving.__file__); print(t.__file__)"],
        cwd=tree, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True)
    for line in where.stdout.split():
        if not Path(line).resolve().is_relative_to(tree.resolve()):
            raise RuntimeError(f"the {BEFORE} tree imports {line}, outside {tree}")
    (tree / ".ready").touch()
    return tree


def _start(version: Version, work: Work, workdir: Path, what: str) -> Service:
    log = workdir / f"grpc-{version.label}-{work.kind}-{what}.log"
    return Service(work.module, work.addr_var, work.service, log, env=SETTINGS, root=version.root)


# --- health while saturated -------------------------------------------------------------------

class Stalls:
    """``count`` streams of the service's stall method, opened and left silent after
    ``work.stall_first`` (or before any message); every one that ends (refused, cut)
    is opened again within RESTALL_EVERY, as a hostile or broken caller would."""

    def __init__(self, address: str, work: Work, count: int):
        self.channel = _channel(address)
        self.call = self.channel.stream_unary(work.stall_method)
        self.first = work.stall_first
        self.count = count
        self.closing = threading.Event()  # the keeper stops opening streams again
        self.halt = threading.Event()  # the stalled streams' messages end
        self.ended: Counter[str] = Counter()
        self.live: list[tuple[float, grpc.Future]] = []  # (opened at, call)
        self.thread = threading.Thread(target=self._keep, name="stalls", daemon=True)

    def _messages(self):
        if self.first is not None:
            yield self.first
        self.halt.wait()

    def _open(self) -> tuple[float, grpc.Future]:
        return time.monotonic(), self.call.future(self._messages())  # no deadline: such callers set none

    def start(self) -> None:
        self.live = [self._open() for _ in range(self.count)]
        self.thread.start()

    def _keep(self) -> None:
        while not self.closing.wait(RESTALL_EVERY):
            for i, (_, call) in enumerate(self.live):
                if call.done():
                    self.ended[_code(call)] += 1
                    self.live[i] = self._open()

    def stop(self) -> dict:
        # The keeper first, so that it neither counts nor reopens the streams cancelled here.
        self.closing.set()
        self.thread.join()
        # Held: still open a second after it was opened (one opened again just now may yet be refused).
        now = time.monotonic()
        held = sum(not call.done() and now - opened >= 1.0 for opened, call in self.live)
        for _, call in self.live:
            call.cancel()
        self.halt.set()
        self.channel.close()
        return {"count": self.count, "held_at_end": held, "ended": dict(self.ended)}


class Load:
    """Threads calling the real work call in a loop, each call with a deadline; a
    caller refused waits LOAD_BACKOFF before its next call."""

    def __init__(self, address: str, work: Work, threads: int, deadline: float):
        self.channel = _channel(address)
        self.call = _caller(self.channel, work)
        self.deadline = deadline
        self.halt = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.ok_seconds: list[float] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, name=f"load-{i}", daemon=True) for i in range(threads)]

    def _run(self) -> None:
        while not self.halt.is_set():
            started = time.perf_counter()
            try:
                self.call(self.deadline)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            with self.lock:
                self.outcomes[code] += 1
                if code == "OK":
                    self.ok_seconds.append(time.perf_counter() - started)
            if code != "OK":
                self.halt.wait(LOAD_BACKOFF)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> dict:
        self.halt.set()
        for thread in self.threads:
            thread.join(timeout=self.deadline + 5)
        self.channel.close()
        return {"threads": len(self.threads), "deadline_s": self.deadline, "outcomes": dict(self.outcomes),
                "ok_p50_ms": _ms(_pct(self.ok_seconds, 50)), "ok_p99_ms": _ms(_pct(self.ok_seconds, 99))}


def probe_health(address: str, service: str, seconds: float) -> list[tuple[float, str]]:
    """Health/Check every HEALTH_EVERY s for ``seconds``, on schedule whatever the
    answers do, each with HEALTH_DEADLINE: (seconds to the answer, outcome) each,
    the outcome SERVING or what went wrong."""
    channel = _channel(address)
    check = channel.unary_unary(HEALTH_CHECK, request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                response_deserializer=health_pb2.HealthCheckResponse.FromString)
    request = health_pb2.HealthCheckRequest(service=service)
    n = max(1, round(seconds / HEALTH_EVERY))
    results: list[tuple[float, str] | None] = [None] * n
    finished = threading.Semaphore(0)

    def done(i: int, sent: float, call: grpc.Future) -> None:
        elapsed = time.perf_counter() - sent
        code = _code(call)
        if code == "OK":
            status = call.result().status
            code = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        results[i] = (elapsed, code)
        finished.release()

    start = time.perf_counter()
    for i in range(n):
        time.sleep(max(0.0, start + i * HEALTH_EVERY - time.perf_counter()))
        sent = time.perf_counter()
        check.future(request, timeout=HEALTH_DEADLINE).add_done_callback(
            lambda call, i=i, sent=sent: done(i, sent, call))
    for _ in range(n):
        if not finished.acquire(timeout=HEALTH_DEADLINE + 10):
            raise RuntimeError("a health probe never ended, past its deadline")
    channel.close()
    return results  # type: ignore[return-value]


def _probe_summary(results: list[tuple[float, str]]) -> dict:
    """A probe that did not answer SERVING counts as never answering (inf): that is
    what a prober makes of it, whether it timed out or was refused at once."""
    seconds = [s if code == "SERVING" else math.inf for s, code in results]
    codes = Counter(code for _, code in results)
    return {"n": len(results), "outcomes": dict(codes),
            "p50_ms": _ms(_pct(seconds, 50)), "p99_ms": _ms(_pct(seconds, 99)), "max_ms": _ms(max(seconds)),
            "samples": [[round(s * 1000, 2), code] for s, code in results]}


def saturated(version: Version, work: Work, workdir: Path, seconds: float) -> dict:
    stalls_n = SLOTS[work.kind] + EXTRA_STALLS
    what = "health-" + ("stall-after-first" if work.stall_first is not None else "stall-before-first")
    with _start(version, work, workdir, what) as svc:
        with _channel(svc.address) as warm:
            _caller(warm, work)(30.0)  # the first call (the thumbnail's fork server, libmagic) is slow
        idle = _probe_summary(probe_health(svc.address, work.service, max(1.0, seconds / 4)))
        stalls = Stalls(svc.address, work, stalls_n)
        stalls.start()
        time.sleep(1.0)  # every stalled stream has reached the server
        load = Load(svc.address, work, LOAD_THREADS[work.kind], LOAD_DEADLINE[work.kind])
        load.start()
        under = _probe_summary(probe_health(svc.address, work.service, seconds))
        load_result = load.stop()
        stall_result = stalls.stop()
    return {"version": version.label, "commit": version.commit, "service": work.kind,
            "stall_first_message": work.stall_first is not None, "seconds": seconds,
            "idle": idle, "saturated": under, "load": load_result, "stalls": stall_result}


# --- a burst of calls at once -----------------------------------------------------------------

def burst_once(channel: grpc.Channel, work: Work) -> dict:
    """BURST calls at once on one connection (as one gateway process sends them),
    each with BURST_DEADLINE: BURST threads, each making one blocking call, released
    together by a barrier. (Futures issued from one thread spread a burst of client
    streams over half a second, a thread started per call; grpc.aio starts them in
    milliseconds but reports a stream the server refused before the client had sent
    all of it as INTERNAL "Internal error from Core", not the server's code:
    grpc/grpc#36066.)"""
    call = _caller(channel, work)
    barrier = threading.Barrier(BURST + 1)
    outcomes: list[tuple[float, float, str] | None] = [None] * BURST

    def one(i: int) -> None:
        barrier.wait()
        sent = time.perf_counter()
        try:
            call(BURST_DEADLINE)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        outcomes[i] = (sent, time.perf_counter() - sent, code)

    threads = [threading.Thread(target=one, args=(i,), name=f"burst-{i}", daemon=True) for i in range(BURST)]
    for thread in threads:
        thread.start()
    barrier.wait()
    first = time.perf_counter()
    for thread in threads:
        thread.join(timeout=BURST_DEADLINE + 10)
        if thread.is_alive():
            raise RuntimeError("a call of the burst never ended, past its deadline")
    every = time.perf_counter() - first
    by_code: dict[str, list[float]] = {}
    for _, seconds, code in outcomes:  # type: ignore[misc]
        by_code.setdefault(code, []).append(seconds)
    starts = [o[0] for o in outcomes]  # type: ignore[index]
    refused = by_code.get("UNAVAILABLE", []) + by_code.get("RESOURCE_EXHAUSTED", [])
    return {
        "calls": BURST, "counts": {code: len(s) for code, s in by_code.items()},
        "started_within_ms": _ms(max(starts) - min(starts)), "all_done_ms": _ms(every),
        "ok_p50_ms": _ms(_pct(by_code.get("OK", []), 50)), "ok_p99_ms": _ms(_pct(by_code.get("OK", []), 99)),
        "refused_p50_ms": _ms(_pct(refused, 50)), "refused_p99_ms": _ms(_pct(refused, 99)),
        "per_code_ms": {code: {"p50": _ms(_pct(s, 50)), "p99": _ms(_pct(s, 99)), "max": _ms(max(s))}
                        for code, s in by_code.items()},
    }


def bursts(version: Version, work: Work, workdir: Path, rounds: int) -> list[dict]:
    results = []
    with _start(version, work, workdir, "burst") as svc:
        channel = _channel(svc.address)
        _caller(channel, work)(30.0)  # warm: the connection, the fork server, libmagic
        for round_ in range(rounds):
            if round_:
                time.sleep(BURST_PAUSE)
            results.append({"version": version.label, "commit": version.commit, "service": work.kind,
                            "round": round_ + 1, **burst_once(channel, work)})
        channel.close()
    return results


# --- helpers, tables --------------------------------------------------------------------------

def _code(call: grpc.Future) -> str:
    if call.cancelled():
        return "CANCELLED"
    code = call.code()
    return code.name if code is not None else "?"


def _pct(values: list[float], p: float) -> float:
    """Percentile, interpolated between closest ranks (bench.common.percentile) but
    inf-safe: a rank that reaches a failure is a failure. nan for no values."""
    xs = sorted(values)
    if not xs:
        return math.nan
    rank = (len(xs) - 1) * p / 100
    lo = int(rank)
    hi = min(lo + 1, len(xs) - 1)
    frac = rank - lo
    if frac == 0 or xs[hi] == xs[lo]:
        return xs[lo]
    if math.isinf(xs[hi]):
        return math.inf
    return xs[lo] + (xs[hi] - xs[lo]) * frac


def _ms(seconds: float) -> float | None:
    """Milliseconds for results.json; None for nothing measured (nan) or never answered (inf)."""
    return None if math.isnan(seconds) or math.isinf(seconds) else round(seconds * 1000, 2)


def _cell(ms: float | None, absent: str = "-") -> str:
    return absent if ms is None else fmt_ms(ms)


def _counts(counter: dict[str, int], order=("OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")) -> str:
    names = {"RESOURCE_EXHAUSTED": "RES_EXH", "DEADLINE_EXCEEDED": "DEADLINE", "UNAVAILABLE": "UNAVAIL"}
    keys = [k for k in order if k in counter] + sorted(k for k in counter if k not in order)
    return ", ".join(f"{names.get(k, k)} {counter[k]}" for k in keys) or "-"


def _health_section(results: list[dict], seconds: float) -> Section:
    rows = []
    for r in results:
        sat, stalls = r["saturated"], r["stalls"]
        outcomes = sat["outcomes"]
        missed = outcomes.get("DEADLINE_EXCEEDED", 0)
        other = {k: v for k, v in outcomes.items() if k not in ("SERVING", "DEADLINE_EXCEEDED")}
        kind = "after first msg" if r["stall_first_message"] else "before any msg"
        rows.append([
            f"{r['service']}, {stalls['count']} stalled {kind}", f"{r['version']} {r['commit']}",
            f"{outcomes.get('SERVING', 0)}/{sat['n']}", str(missed), _counts(other),
            _cell(sat["p50_ms"], "failed"), _cell(sat["p99_ms"], "failed"), _cell(sat["max_ms"], "failed"),
            _cell(r["idle"]["p99_ms"], "failed"),
            f"{stalls['held_at_end']} held, {sum(stalls['ended'].values())} ended", _counts(r["load"]["outcomes"]),
        ])
    return Section(
        f"gRPC health while saturated: Health/Check every {HEALTH_EVERY * 1000:.0f} ms for {seconds:g} s, "
        f"{HEALTH_DEADLINE:g} s deadline (before {BEFORE} vs after)",
        ["service, stalled streams", "version", "SERVING", "missed", "refused", "p50 ms", "p99 ms", "max ms",
         "idle p99", "stalled streams", "work calls meanwhile"],
        rows,
        notes=[f"stalled: slots + {EXTRA_STALLS} streams (validator: Validate, its FileInfo sent; thumbnail: "
               "Render, nothing sent or its options sent) left silent, every one that ends opened again "
               f"within {RESTALL_EVERY * 1000:.0f} ms; held: open for 1 s or more at the end of the run; "
               "ended: refused or cut meanwhile (results.json has their codes)",
               f"work calls meanwhile: {LOAD_THREADS['validator']} threads calling Check "
               f"({LOAD_DEADLINE['validator']:g} s deadline) / {LOAD_THREADS['thumbnail']} calling Render of a "
               f"{IMAGE_SIDE}x{IMAGE_SIDE} PNG ({LOAD_DEADLINE['thumbnail']:g} s), "
               f"{LOAD_BACKOFF * 1000:.0f} ms pause after a failure; outcomes by code",
               "SERVING: probes answered SERVING within the deadline; missed: DEADLINE_EXCEEDED; refused: "
               "other codes; p50/p99/max count every probe that did not answer SERVING as 'failed' (never answered)",
               "idle p99: the same probes on the same server just before the stalls, no load",
               "one connection each for the prober, the work calls and the stalled streams; client and server "
               "share the machine's cores"],
        data={"results": results},
    )


def _burst_section(results: list[dict]) -> Section:
    rows = []
    for r in results:
        counts = r["counts"]
        other = {k: v for k, v in counts.items()
                 if k not in ("OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")}
        rows.append([
            f"{r['service']} {'Render' if r['service'] == 'thumbnail' else 'Check'} #{r['round']}",
            f"{r['version']} {r['commit']}", str(counts.get("OK", 0)), str(counts.get("UNAVAILABLE", 0)),
            str(counts.get("RESOURCE_EXHAUSTED", 0)), str(counts.get("DEADLINE_EXCEEDED", 0)), _counts(other),
            _cell(r["ok_p50_ms"]), _cell(r["ok_p99_ms"]), _cell(r["refused_p50_ms"]), _cell(r["refused_p99_ms"]),
            _cell(r["all_done_ms"]),
        ])
    return Section(
        f"gRPC burst: {BURST} calls at once, {BURST_DEADLINE:g} s deadline each (before {BEFORE} vs after)",
        ["call #burst", "version", "OK", "UNAVAIL", "RES_EXH", "DEADLINE", "other", "OK p50", "OK p99",
         "refused p50", "refused p99", "all done"],
        rows,
        notes=[f"Check: a {IMAGE_SIDE}x{IMAGE_SIDE} PNG as head (the gateway's usual call); Render: the same "
               "PNG, options then one chunk",
               f"{BURST} threads released by a barrier, one blocking call each, on one connection; all started "
               "within started_within_ms (results.json, ~10 ms); each timed from its own start; ms",
               "refused p50/p99: how fast UNAVAILABLE and RESOURCE_EXHAUSTED came, together (results.json "
               "has each code apart); all done: until the last call of the burst ended",
               f"a fresh server per version, warmed by one call; bursts {BURST_PAUSE:g} s apart"],
        data={"results": results},
    )


def run(workdir: Path, quick: bool) -> list[Section]:
    seconds = 4.0 if quick else 10.0
    rounds = 1 if quick else 3
    versions = [Version("after", _short_head(), ROOT)]
    try:
        versions.insert(0, Version("before", BEFORE, before_tree(workdir)))
    except (OSError, subprocess.CalledProcessError) as exc:  # no git, or a clone without that commit
        print(f"grpc: commit {BEFORE} cannot be built here ({exc}); measuring the working tree alone", flush=True)
    png = _png()
    stalled_workloads = [validator_work(png), thumbnail_work(png, stall_after_options=False),
                         thumbnail_work(png, stall_after_options=True)]
    health = [saturated(v, work, workdir, seconds) for work in stalled_workloads for v in versions]
    burst = [r for work in (validator_work(png), thumbnail_work(png, False)) for v in versions
             for r in bursts(v, work, workdir, rounds)]
    return [_health_section(health, seconds), _burst_section(burst)]

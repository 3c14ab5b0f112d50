"""Several processes of one server, and the metrics they share.

A Python process does its Python work on one core at a time (the GIL). The
gateway runs several gunicorn workers (GATEWAY_WORKERS); a gRPC service runs
several processes on one port (VALIDATOR_PROCESSES, THUMBNAIL_PROCESSES), as
grpc's multiprocessing example does: the parent reserves the port, then forks
children that each build their own server on it with SO_REUSEPORT, and the
kernel spreads new connections over them. The parent never touches gRPC (a
process that has started gRPC cannot fork safely); it restarts a child that
dies, stops them all on SIGTERM, and serves the metrics.

Metrics: prometheus_client's multiprocess mode. Each process writes its values
to files in PROMETHEUS_MULTIPROC_DIR, and a scrape adds them up. The mode is
chosen when prometheus_client is first imported, so ``prepare_metrics`` runs
before anything imports it.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable

log = logging.getLogger("upload.processes")

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
# A child that exits with an error within this many seconds of its start failed to start (an
# address in use, a plugin that cannot load): starting it again would fail the same way, so the
# server stops. One killed by a signal is started again.
STARTUP = 5.0


def prepare_metrics(processes: int, env=os.environ) -> str | None:
    """With several processes, point prometheus_client at a directory for all their
    metrics; returns a directory made here (to remove at exit), else None."""
    if processes <= 1:
        return None
    if "prometheus_client" in sys.modules and env.get(METRICS_DIR) is None:
        raise RuntimeError("prometheus_client was imported before the metrics directory was chosen")
    if env.get(METRICS_DIR):
        # The operator's own (e.g. a tmpfs): last run's files would add to this run's counts.
        os.makedirs(env[METRICS_DIR], exist_ok=True)
        for name in os.listdir(env[METRICS_DIR]):
            if name.endswith(".db"):
                os.unlink(os.path.join(env[METRICS_DIR], name))
        return None
    made = tempfile.mkdtemp(prefix="upload-metrics-")
    env[METRICS_DIR] = made
    return made


def remove_metrics_dir(made: str | None, owner: int) -> None:
    """At exit of the parent (``owner``), never of a child: gunicorn's workers leave by
    sys.exit, which runs the same atexit handlers, while the others still write there."""
    if made and os.getpid() == owner:
        shutil.rmtree(made, ignore_errors=True)


def mark_dead(pid: int) -> None:
    """A dead process's gauges stop counting (its counters stay in the sums)."""
    if os.environ.get(METRICS_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:  # not Linux
        return []


class ProcessFamily:
    """process_* (CPU, memory, open files) of a parent and its children added up; the
    start time and the open-files limit are the parent's."""

    KEPT = {"process_start_time_seconds", "process_max_fds"}

    def __init__(self, parent: Callable[[], int]):
        self.parent = parent

    def collect(self):
        from prometheus_client import ProcessCollector

        parent = self.parent()
        families = {}
        for pid in [parent, *children_of(parent)]:
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                kept = families.setdefault(family.name, family)
                if kept is not family and family.samples and kept.name not in self.KEPT:
                    kept.samples[0] = kept.samples[0]._replace(value=kept.samples[0].value + family.samples[0].value)
        return list(families.values())


def shared_registry(parent: Callable[[], int]):
    """What a scrape serves with several processes: every process's files added up, plus
    the family's process_* and python_info."""
    from prometheus_client import CollectorRegistry, PlatformCollector, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.environ[METRICS_DIR])
    registry.register(ProcessFamily(parent))
    PlatformCollector(registry=registry)
    return registry


def reserve_port(address: str, setting: str) -> socket.socket:
    """Hold ``address`` (host:port) with SO_REUSEPORT so that nobody else takes the port
    while the children bind it too (they listen; this socket never does)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or int(port) == 0 or address.startswith(("unix:", "dns:")):
        raise SystemExit(f"{setting} above 1 needs a TCP address with a fixed port (host:port), got {address!r}.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host or "0.0.0.0", int(port)))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"Cannot listen on {address}: {exc.strerror or exc}.") from None
    return sock


def serve_children(count: int, address: str, setting: str, serve_child: Callable[[], None]) -> int:
    """Fork ``count`` children that each run ``serve_child()`` (which binds ``address`` with
    SO_REUSEPORT and serves until SIGTERM); keep ``count`` running until SIGTERM or SIGINT,
    which is passed on to them; returns the exit status for the parent."""
    reservation = reserve_port(address, setting)
    children: dict[int, float] = {}
    stopping: list[int] = []

    def start() -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            reservation.close()
            code = 0
            try:
                serve_child()
            except SystemExit as exc:
                if exc.code not in (None, 0):
                    print(exc.code, file=sys.stderr, flush=True)
                    code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("the server process failed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = time.monotonic()

    def stop(signum, _frame) -> None:
        stopping.append(signum)
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(count):
        start()
    log.info("serving on %s with %d processes: %s", address, count, ", ".join(map(str, children)))
    status = 0
    while children:
        pid, wait_status = os.wait()
        started = children.pop(pid, None)
        if started is None:
            continue
        mark_dead(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            continue
        if time.monotonic() - started < STARTUP and code > 0:  # its own exit, not a signal
            log.error("server process %d could not start (exit status %s); stopping", pid, code)
            status = 1
            stop(signal.SIGTERM, None)
            continue
        log.warning("server process %d exited (status %s); starting another", pid, code)
        start()
    reservation.close()
    return status

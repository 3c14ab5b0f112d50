"""Several gunicorn worker processes (GATEWAY_WORKERS), and what they share.

Each worker has its own GIL, so with one per core every core does the
gateway's Python work. What would otherwise be per process is shared:

- metrics: prometheus_client's multiprocess mode. Every worker writes its
  counters to files in one directory (PROMETHEUS_MULTIPROC_DIR, a temporary one
  made here unless the operator set it), and ``GET /metrics``, whichever worker
  answers it, adds them all up. The mode is chosen when prometheus_client is
  first imported, so ``prepare_metrics`` runs before anything imports it;
- background work (the thumbnail retry, the file and tus reapers, reconcile):
  done by one worker at a time, the one holding an flock on a file in DATA_DIR
  (``BackgroundTurn``). When it dies the kernel drops its lock and another worker
  takes the next round. Event delivery runs in every worker: each event is
  claimed in the database, and the worker that wrote it is woken at once;
- rate limits: one set of counters for all workers (``gateway/http/limits.py``);
- tus uploads: already locked across processes (an flock per upload, or the
  database's lock on S3).

One worker (GATEWAY_WORKERS=1) is served exactly as before: nothing here runs.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
BACKGROUND_LOCK = ".gateway-background.lock"


def prepare_metrics(workers: int, env=os.environ) -> str | None:
    """With several workers, point prometheus_client at a directory for every
    worker's metrics; returns a directory made here (to remove at exit), else None.
    Must run before prometheus_client is imported: it reads the setting once."""
    if workers <= 1:
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
    made = tempfile.mkdtemp(prefix="upload-gateway-metrics-")
    env[METRICS_DIR] = made
    return made


def remove_metrics_dir(made: str | None, owner: int) -> None:
    """At exit of the gunicorn master (``owner``), never of a worker: workers leave by
    sys.exit, which runs the same atexit handlers, while the others still write there."""
    if made and os.getpid() == owner:
        shutil.rmtree(made, ignore_errors=True)


def worker_exited(server, worker) -> None:
    """gunicorn's child_exit: a dead worker's gauges stop counting (its counters stay)."""
    if os.environ.get(METRICS_DIR):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


class BackgroundTurn:
    """Whether this process does the background work now: it holds an flock on
    DATA_DIR/.gateway-background.lock, taken without waiting. Asked before each
    round, so a worker that was not the one takes over within a round of the
    holder's death (the kernel releases a dead process's flock)."""

    def __init__(self, data_dir: str):
        self.path = os.path.join(data_dir, BACKGROUND_LOCK)
        self._fd: int | None = None
        self._pid: int | None = None

    def __call__(self) -> bool:
        if self._pid != os.getpid():
            # Opened in the gunicorn master, inherited by a fork: the lock must be this process's own.
            self._fd, self._pid = None, os.getpid()
        if self._fd is not None:
            return True
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

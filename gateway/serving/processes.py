"""Several gunicorn worker processes (GATEWAY_WORKERS), and what they share.

Each worker has its own GIL, so with one per core every core does the
gateway's Python work. What would otherwise be per process is shared:

- metrics: prometheus_client's multiprocess mode. Every worker writes its
  counters to files in one directory (PROMETHEUS_MULTIPROC_DIR, a temporary one
  made by ``protos.processes.prepare_metrics`` unless the operator set it), and
  ``GET /metrics``, whichever worker answers it, adds them all up;
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

from protos.processes import mark_dead

BACKGROUND_LOCK = ".gateway-background.lock"


def worker_exited(server, worker) -> None:
    """gunicorn's child_exit: a dead worker's gauges stop counting (its counters stay)."""
    mark_dead(worker.pid)


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

"""Periodic work in a daemon thread (thumbnail retries, reaping).

With several gateway worker processes one of them does it at a time:
``take_turns(turn)`` (gateway/serving/processes.py) makes every round ask
``turn()`` first. Without it (one process, tests) every round runs."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("upload.gateway")

_turn: Callable[[], bool] | None = None


def take_turns(turn: Callable[[], bool] | None) -> None:
    """From now on, a round of background work runs only where ``turn()`` is true."""
    global _turn
    _turn = turn


def my_turn() -> bool:
    """Whether this process does background work now."""
    return _turn is None or _turn()


class Periodic:
    """Calls ``work()`` every ``interval`` seconds until stopped; an exception
    is logged and the next round still comes."""

    def __init__(self, name: str, interval: float, work: Callable[[], object]):
        self.name = name
        self.interval = interval
        self.work = work
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if my_turn():
                    self.work()
            except Exception:
                log.exception("%s failed; trying again in %.0fs", self.name, self.interval)

    def start(self) -> "Periodic":
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

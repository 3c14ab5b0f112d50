"""clamd's state in the validator's gRPC health: while the ClamAV rule is loaded, a
thread PINGs clamd every CHECK_INTERVAL seconds and sets the Validator service's
status (``upload.v1.Validator``) to NOT_SERVING while clamd does not answer, and to
SERVING again when it does; ``upload_validator_clamd_up`` follows it (1/0).

Only the service's own name changes. The server's status (service ``""``) stays
SERVING, since it is what liveness probes ask: restarting the validator does not
bring clamd back. With CLAMAV_FAIL_OPEN on, the status stays SERVING (files are
let through while clamd is down, so the validator still serves); the gauge still
says clamd is down.
"""
from __future__ import annotations

import logging
import threading
import weakref

import grpc
from grpc_health.v1 import health_pb2

from validator_service.metrics import clamd_up
from validator_service.rules.clamav import ClamAV

log = logging.getLogger("upload.validator.clamav")

# Seconds between PINGs: a dead clamd shows in the health check within this (plus
# CLAMD_TIMEOUT when clamd hangs rather than refuses), and a PING is cheap for clamd.
CHECK_INTERVAL = 2.0

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ClamdWatch:
    """PINGs clamd for as long as ``server`` runs, and reports what it finds as
    ``service``'s health status on ``server.health_servicer``."""

    def __init__(self, clamav: ClamAV, server: grpc.Server, service: str, interval: float = CHECK_INTERVAL):
        self.clamav = clamav
        # Weakly: a server created and never started (its stop() never ends wait_for_termination)
        # is let go, and the watch ends with it.
        self._server = weakref.ref(server)
        self.service = service
        self.interval = interval
        self.up: bool | None = None
        self.thread = threading.Thread(target=self._run, name="clamd-watch", daemon=True)

    def start(self) -> ClamdWatch:
        clamd_up()
        self.thread.start()
        return self

    @property
    def server(self) -> grpc.Server | None:
        return self._server()

    def check(self) -> bool:
        up = self.clamav.ping()
        clamd_up().set(1 if up else 0)
        if up != self.up:
            if not up:
                log.warning("clamd does not answer PING at %s: %s", self.clamav.address,
                            "uploads pass unscanned while it is down (CLAMAV_FAIL_OPEN)" if self.clamav.fail_open
                            else f"{self.service} reports NOT_SERVING and uploads get 503 until it does")
            elif self.up is not None:
                log.info("clamd answers PING again at %s", self.clamav.address)
            self.up = up
        # After a graceful stop began, the servicer ignores this: NOT_SERVING stays.
        if (server := self.server) is not None:
            server.health_servicer.set(self.service, SERVING if up or self.clamav.fail_open else NOT_SERVING)
        return up

    def _run(self) -> None:
        # wait_for_termination returns False once the server has stopped (True: the time ran
        # out), so the thread ends with the server, whoever stops it, with nothing to call.
        while True:
            try:
                self.check()
            except Exception:  # the watch must outlive a surprise; the next round tries again
                log.exception("checking clamd failed")
            server = self.server
            if server is None or not server.wait_for_termination(self.interval):
                return
            del server  # not held between rounds


def watch_clamd(plugins, server: grpc.Server, service: str) -> ClamdWatch | None:
    """Start watching the clamd of the ClamAV rule among ``plugins``, if one is loaded."""
    for plugin in plugins:
        if isinstance(plugin, ClamAV):
            return ClamdWatch(plugin, server, service).start()
    return None

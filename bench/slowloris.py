"""Silent and trickling connections against the real gateway (issue 15): how
long /healthz and /readyz take while SILENT connections have sent one byte and
stopped, and TRICKLING ones send one header byte a second. Like a real
attacker, every connection the gateway closes is opened again at once.

    python -m bench.slowloris [--silent 200] [--trickle 100] [--seconds 60]

Not part of `make bench` (it waits through whole header timeouts on purpose)."""
from __future__ import annotations

import argparse
import http.client
import socket
import tempfile
import threading
import time
from pathlib import Path

from bench.common import Service
from bench.thumbnails import SERVICE_NAME as THUMBNAIL_SERVICE
from bench.upload import start_gateway
from bench.validator import SERVICE_NAME as VALIDATOR_SERVICE

PROBE_TIMEOUT = 90.0


class Attack(threading.Thread):
    """Holds ``silent`` + ``trickle`` connections open, reopening any the gateway closes."""

    def __init__(self, port: int, silent: int, trickle: int):
        super().__init__(daemon=True)
        self.port = port
        self.kinds = ["silent"] * silent + ["trickle"] * trickle
        self.socks: list[socket.socket | None] = [None] * len(self.kinds)
        self.reopened = 0
        self.halt = threading.Event()

    def _open(self, i: int) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(b"G" if self.kinds[i] == "silent" else b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sock.setblocking(False)
        self.socks[i] = sock

    def run(self) -> None:
        for i in range(len(self.kinds)):
            self._open(i)
        while not self.halt.wait(1.0):
            for i, sock in enumerate(self.socks):
                try:
                    if sock.recv(4096) == b"":  # closed (or answered 408, then closed)
                        raise ConnectionError
                except BlockingIOError:
                    pass
                except OSError:
                    sock.close()
                    self._open(i)
                    self.reopened += 1
                    continue
                if self.kinds[i] == "trickle":
                    try:
                        sock.send(b"X")
                    except OSError:
                        pass  # seen as closed on the next round
        for sock in self.socks:
            sock.close()


def probe(port: int, path: str) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
    except (OSError, http.client.HTTPException):
        return float("inf")
    finally:
        conn.close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slowloris", description=__doc__.split("\n")[0])
    parser.add_argument("--silent", type=int, default=200)
    parser.add_argument("--trickle", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to probe under attack")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="upload-bench-") as tmp:
        work = Path(tmp)
        with Service("validator_service", "VALIDATOR_ADDR", VALIDATOR_SERVICE, work / "validator.log") as validator, \
                Service("thumbnail_service", "THUMBNAIL_ADDR", THUMBNAIL_SERVICE, work / "thumbnail.log") as thumbs, \
                start_gateway(validator, thumbs, work / "data", work / "gateway.log") as gateway:
            attack = Attack(gateway.port, args.silent, args.trickle)
            attack.start()
            time.sleep(2)  # every attacking connection is open
            timings: dict[str, list[float]] = {"/healthz": [], "/readyz": []}
            ends = time.monotonic() + args.seconds
            while time.monotonic() < ends:
                for path, seconds in timings.items():
                    seconds.append(probe(gateway.port, path))
                time.sleep(0.5)
            attack.halt.set()
            attack.join(timeout=30)
    print(f"{args.silent} silent + {args.trickle} trickling connections for {args.seconds:.0f} s "
          f"({attack.reopened} reopened after the gateway closed them); probes in turn, each waits up to "
          f"{PROBE_TIMEOUT:.0f} s:")
    for path, seconds in timings.items():
        failed = sum(s == float("inf") for s in seconds)
        ordered = sorted(seconds)
        print(f"  {path}: n={len(seconds)} p50={ms(ordered[len(ordered) // 2])} max={ms(ordered[-1])}"
              + (f" ({failed} got no answer)" if failed else ""))


def ms(seconds: float) -> str:
    return f"no answer within {PROBE_TIMEOUT:.0f} s" if seconds == float("inf") else f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    main()

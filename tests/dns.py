"""A real DNS server for tests (dnslib, UDP on a free loopback port) whose
answers a test can change while it runs: the way a Kubernetes headless Service
or compose's DNS gives one name the address of every replica.

gRPC's default resolver (c-ares) queries it when the target names it as the
authority: ``dns://127.0.0.1:<port>/validator.test:50051``.
"""
from __future__ import annotations

import threading

from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class Zone(BaseResolver):
    def __init__(self):
        self._lock = threading.Lock()
        self._names: dict[str, list[str]] = {}
        self.queries = 0

    def set(self, name: str, addresses: list[str]) -> None:
        with self._lock:
            self._names[name.rstrip(".")] = list(addresses)

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        with self._lock:
            self.queries += 1
            addresses = self._names.get(name, []) if request.q.qtype == QTYPE.A else []
        for address in addresses:
            # TTL 1: nothing between gRPC and this server should keep an old answer.
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


class LocalDNS:
    def __init__(self):
        self.zone = Zone()
        self._server = DNSServer(self.zone, port=0, address="127.0.0.1",
                                 logger=DNSLogger(logf=lambda _line: None))
        self._server.start_thread()
        self.port = self._server.server.server_address[1]

    def target(self, name: str, port: int) -> str:
        """A gRPC target that resolves ``name`` through this server."""
        return f"dns://127.0.0.1:{self.port}/{name}:{port}"

    def stop(self) -> None:
        self._server.stop()

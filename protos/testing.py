"""What the testing kit shares between the services (validator_service/testing.py,
thumbnail_service/testing.py) and this project's own tests: a started gRPC server and a
channel to it, and a fixture's start-what-the-test-asks, stop-it-all-at-the-end."""
from __future__ import annotations

from collections.abc import Callable, Iterator


class Running:
    """``server`` (not yet started, bound to ``port`` of 127.0.0.1) started, and a channel to it."""

    def __init__(self, server, port: int):
        import grpc

        self.server = server
        self.address = f"127.0.0.1:{port}"
        server.start()
        self.channel = grpc.insecure_channel(self.address)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(None)


def starting(make: Callable[[tuple, dict], Running]) -> Iterator[Callable[..., Running]]:
    """A fixture's body: yields ``start(*plugins, env=None)``, which makes a Running with
    ``make(plugins, env)``; every one started is closed when the test ends."""
    started: list[Running] = []

    def start(*plugins, env: dict | None = None) -> Running:
        running = make(plugins, dict(env or {}))
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()

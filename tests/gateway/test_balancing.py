"""Several replicas of the validator behind one DNS name.

The gateway's channel resolves the name (through a real DNS server, tests/dns.py)
and balances calls round-robin over every address; a replica that dies is left
out, and one added later is found once the servers' connections age out
(GRPC_MAX_CONNECTION_AGE). The replicas are real `python -m validator_service`
processes on 127.0.0.1, 127.0.0.2 and 127.0.0.3, all on one port, as pods behind
a headless Service are.
"""
from __future__ import annotations

import io
import time

import pytest

from tests.conftest import free_port
from tests.dns import LocalDNS
from tests.processes import service_process

NAME = "validator.test"


@pytest.fixture
def dns():
    server = LocalDNS()
    yield server
    server.stop()


def calls(log) -> int:
    """Validator calls a replica has answered, from its per-call log lines."""
    return log.read_text().count("rpc /upload.v1.Validator/")


def upload(client, i: int):
    return client.post("/upload", data={"file": (io.BytesIO(b"replica test %d\n" % i), f"n{i}.txt")},
                       content_type="multipart/form-data")


def replica(tmp_path, host: str, port: int, **env):
    return service_process("validator_service", "VALIDATOR_ADDR", port, host=host,
                           log=tmp_path / f"validator-{host}.log", extra_env=env)


def test_calls_are_spread_over_every_replica_and_keep_working_when_one_dies(make_app, tmp_path, dns):
    port = free_port()
    with replica(tmp_path, "127.0.0.1", port), replica(tmp_path, "127.0.0.2", port) as second:
        dns.zone.set(NAME, ["127.0.0.1", "127.0.0.2"])
        client = make_app(VALIDATOR_ADDR=dns.target(NAME, port)).test_client()
        logs = [tmp_path / "validator-127.0.0.1.log", tmp_path / "validator-127.0.0.2.log"]

        for i in range(20):
            assert upload(client, i).status_code == 201
        # Round robin alternates once both connections are up; the first call or
        # two may go to whichever connected first.
        assert calls(logs[0]) >= 7 and calls(logs[1]) >= 7, (calls(logs[0]), calls(logs[1]))

        second.kill()
        second.wait()
        before = calls(logs[0])
        for i in range(20, 40):
            response = upload(client, i)
            assert response.status_code == 201, response.get_json()
        assert calls(logs[0]) >= before + 20


def test_a_replica_added_behind_the_name_gets_calls_once_connections_age_out(make_app, tmp_path, dns):
    port = free_port()
    with replica(tmp_path, "127.0.0.1", port, GRPC_MAX_CONNECTION_AGE="1"):
        dns.zone.set(NAME, ["127.0.0.1"])
        client = make_app(VALIDATOR_ADDR=dns.target(NAME, port)).test_client()
        assert upload(client, 0).status_code == 201

        with replica(tmp_path, "127.0.0.3", port, GRPC_MAX_CONNECTION_AGE="1"):
            dns.zone.set(NAME, ["127.0.0.1", "127.0.0.3"])
            added = tmp_path / "validator-127.0.0.3.log"
            deadline = time.monotonic() + 30
            i = 1
            # The first connection's GOAWAY after 1 s makes the channel ask DNS again.
            while calls(added) == 0 and time.monotonic() < deadline:
                assert upload(client, i).status_code == 201
                i += 1
                time.sleep(0.1)
            assert calls(added) > 0, f"the added replica got no call in {i} uploads"

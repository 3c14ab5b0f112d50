"""clamd's state in the validator's gRPC health (validator_service/rules/clamav_health.py),
against a real clamd (tests/clamd.py) and a real server, asked with grpc.health.v1."""
from __future__ import annotations

import time

from grpc_health.v1 import health_pb2, health_pb2_grpc

from validator_service import metrics
from validator_service.server import SERVICE_NAME, create_plugins

# The watch PINGs every CHECK_INTERVAL (2 s): a change shows well within this.
WITHIN = 15.0


def status(channel, service: str = SERVICE_NAME) -> str:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def wait_for(predicate, what: str, timeout: float = WITHIN):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"not {what} within {timeout:.0f} s"
        time.sleep(0.1)
    return value


def clamd_up() -> float | None:
    return metrics.REGISTRY.get_sample_value("upload_validator_clamd_up")


def scanning(start_validator, address: str, **env):
    return start_validator(pm=create_plugins(env={"CLAMD_ADDRESS": address, **env}))


def test_clamd_down_makes_the_validator_service_not_serving_and_back_while_the_server_stays_serving(
        start_validator, own_clamd):
    clamd = own_clamd()
    running = scanning(start_validator, clamd.unix)
    wait_for(lambda: running.server.clamd_watch.up is True, "clamd seen up")
    assert status(running.channel) == "SERVING" and clamd_up() == 1

    clamd.kill()
    wait_for(lambda: status(running.channel) == "NOT_SERVING", "NOT_SERVING after clamd was killed")
    # The server itself stays SERVING: liveness probes ask "", and a restart would not bring clamd back.
    assert status(running.channel, "") == "SERVING"
    assert clamd_up() == 0

    clamd.start()
    wait_for(lambda: status(running.channel) == "SERVING", "SERVING once clamd answers again")
    assert clamd_up() == 1


def test_a_validator_started_while_clamd_is_down_is_not_serving_over_tcp_too(start_validator, own_clamd):
    clamd = own_clamd()
    clamd.kill()
    running = scanning(start_validator, clamd.tcp)
    wait_for(lambda: status(running.channel) == "NOT_SERVING", "NOT_SERVING with clamd down at start")
    assert status(running.channel, "") == "SERVING"
    clamd.start()
    wait_for(lambda: status(running.channel) == "SERVING", "SERVING once clamd is up")


def test_failing_open_the_validator_service_stays_serving_with_clamd_down(start_validator, own_clamd):
    clamd = own_clamd()
    running = scanning(start_validator, clamd.unix, CLAMAV_FAIL_OPEN="on")
    watch = running.server.clamd_watch
    wait_for(lambda: watch.up is True, "clamd seen up")
    clamd.kill()
    # The watch has seen clamd down (and says so in the gauge), yet files still pass: SERVING.
    wait_for(lambda: watch.up is False, "clamd seen down")
    assert clamd_up() == 0
    assert status(running.channel) == "SERVING"
    assert status(running.channel, "") == "SERVING"


def test_the_watch_stops_with_the_server(start_validator, clamd):
    running = scanning(start_validator, clamd.unix)
    watch = running.server.clamd_watch
    assert watch.thread.is_alive()
    running.close()
    watch.thread.join(timeout=WITHIN)
    assert not watch.thread.is_alive()


def test_the_watch_ends_with_a_server_that_was_never_started(clamd):
    # stop() on a server never started does not end wait_for_termination: the watch held the
    # server and pinged clamd every 2 s for the life of the process.
    import gc

    from validator_service.server import create_server

    server, _ = create_server("127.0.0.1:0", pm=create_plugins(env={"CLAMD_ADDRESS": clamd.unix}))
    watch = server.clamd_watch
    server.stop(None)
    del server
    gc.collect()
    watch.thread.join(timeout=WITHIN)
    assert not watch.thread.is_alive()


def test_without_clamd_address_nothing_is_watched(validator):
    assert validator.server.clamd_watch is None
    assert status(validator.channel) == "SERVING"

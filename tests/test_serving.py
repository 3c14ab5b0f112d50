"""What both gRPC servers share: health, reflection, bounded concurrency,
a log line per call and a graceful stop."""
from __future__ import annotations

import logging
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from protos.serving import listen_address
from protos.streaming import file_info, validate_requests
from protos.upload.v1 import validator_pb2_grpc
from tests.conftest import free_port
from tests.processes import service_process
from validator_service.config import Settings

SERVICES = {"validator": "upload.v1.Validator", "thumbnail": "upload.v1.Thumbnail"}


@pytest.fixture(params=["validator", "thumbnail"])
def running(request, validator, thumbnailer):
    return request.param, {"validator": validator, "thumbnail": thumbnailer}[request.param]


def test_health_reports_serving_overall_and_per_service(running):
    name, server = running
    stub = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", SERVICES[name]):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_health_of_an_unknown_service_is_not_found(running):
    _, server = running
    stub = health_pb2_grpc.HealthStub(server.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Check(health_pb2.HealthCheckRequest(service="nope.Nothing"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_describes_the_service(running):
    name, server = running
    db = ProtoReflectionDescriptorDatabase(server.channel)
    services = set(db.get_services())
    assert {SERVICES[name], "grpc.health.v1.Health"} <= services
    descriptor = db.FindFileContainingSymbol(SERVICES[name])
    assert descriptor.package == "upload.v1"
    # The paths a caller's tools see are buf's layout, the ones the shipped files import.
    assert descriptor.name == f"upload/v1/{name}.proto"
    assert list(descriptor.dependency) == ["upload/v1/common.proto"]
    assert db.FindFileByName("upload/v1/common.proto").package == "upload.v1"


def slow_stream(release: threading.Event, name="slow.txt", started: threading.Event | None = None):
    def chunks():
        yield b"first line\n"
        if started:
            started.set()
        release.wait(20)
        yield b"last line\n"
    # No declared size: the validator reads to the end, so the call stays open.
    return validate_requests(file_info(name), chunks())


def test_calls_beyond_the_slots_are_refused_unavailable_not_queued(start_validator):
    # Overload is UNAVAILABLE, answered at once (the caller may retry): RESOURCE_EXHAUSTED
    # would say the request itself is too large (the contract's gRPC section).
    running = start_validator(settings=Settings(workers=1))
    stub = validator_pb2_grpc.ValidatorStub(running.channel)
    release, started = threading.Event(), threading.Event()
    holding = stub.Validate.future(slow_stream(release, started=started), timeout=20)
    try:
        assert started.wait(10)
        time.sleep(0.3)  # its first chunk is in: it holds the one slot
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:
                stub.Validate(slow_stream(release), timeout=20)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        release.set()
    assert holding.result().accepted


def test_sigterm_lets_in_flight_calls_finish():
    port = free_port()
    with service_process("validator_service", "VALIDATOR_ADDR", port) as proc:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = validator_pb2_grpc.ValidatorStub(channel)
            release, started = threading.Event(), threading.Event()
            call = stub.Validate.future(slow_stream(release, started=started), timeout=30)
            assert started.wait(10)
            time.sleep(0.3)  # the first chunk reaches the server: the call is in flight
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None, "the server quit with a call in flight"
            release.set()
            verdict = call.result(timeout=20)
        assert verdict.accepted
        assert proc.wait(timeout=15) == 0
        output = proc.stdout.read()
    assert "signal SIGTERM: draining" in output
    assert "rpc /upload.v1.Validator/Validate OK" in output
    assert "stopped" in output


def test_every_call_is_logged_with_outcome_and_duration(validator, caplog):
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    with caplog.at_level(logging.INFO, logger="upload.grpc"):
        with pytest.raises(grpc.RpcError):
            stub.Validate(iter([]), timeout=5)
        stub.Validate(validate_requests(file_info("a.txt", 3), iter([b"hi\n"])), timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "upload.grpc"]
    assert any(l.startswith("rpc /upload.v1.Validator/Validate INVALID_ARGUMENT ") and l.endswith("ms")
               for l in lines)
    assert any(l.startswith("rpc /upload.v1.Validator/Validate OK ") for l in lines)


@pytest.mark.parametrize("env,target,expected", [
    ({}, "127.0.0.1:50051", "127.0.0.1:50051"),
    ({}, "dns:///validator:50051", "[::]:50051"),
    ({"VALIDATOR_LISTEN": "0.0.0.0:7000"}, "dns:///validator:50051", "0.0.0.0:7000"),
])
def test_listen_address(env, target, expected):
    assert listen_address(env, "VALIDATOR_LISTEN", target) == expected

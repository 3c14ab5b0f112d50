"""The shipped ClamAV rule against a real clamd (tests/clamd.py), through the gRPC service."""
from __future__ import annotations

import logging
import socket
import threading
import time

import grpc
import pytest

from protos.client import error_reason
from protos.streaming import file_info
from protos.upload.v1 import validator_pb2, validator_pb2_grpc
from tests.clamd import EICAR, EICAR_NAME, MARKER, MARKER_NAME
from tests.conftest import free_port, validate
from tests.samples import MZ_HEADER
from validator_service import metrics
from validator_service.rules.clamav import ClamAV, parse_address
from validator_service.server import create_plugins

MiB = 1024 * 1024
TEXT = b"plain words, nothing to see here\n"


def text(size: int) -> bytes:
    return (TEXT * (size // len(TEXT) + 1))[:size]


def scanning(start_validator, address: str, **env):
    return start_validator(pm=create_plugins(env={"CLAMD_ADDRESS": address, **env}))


def scans(outcome: str) -> float:
    return metrics.REGISTRY.get_sample_value("upload_validator_clamav_scans_total", {"outcome": outcome}) or 0


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_the_eicar_file_is_malware_with_its_signature_named(start_validator, clamd, via):
    running = scanning(start_validator, getattr(clamd, via))
    verdict = validate(running.channel, "eicar.txt", EICAR)
    assert not verdict.accepted
    assert verdict.reasons[0].code == "malware"
    assert EICAR_NAME in verdict.reasons[0].message
    assert verdict.reasons[0].rule == "clamav"


def test_a_signature_past_the_first_mib_is_found(start_validator, clamd):
    running = scanning(start_validator, clamd.tcp)
    data = text(3 * MiB // 2) + MARKER + text(MiB)
    verdict = validate(running.channel, "notes.txt", data, chunk_size=256 * 1024)
    assert verdict.reasons[0].code == "malware"
    assert MARKER_NAME in verdict.reasons[0].message
    assert verdict.bytes_read == len(data)


def test_a_clean_file_is_accepted_once_clamd_has_seen_all_of_it(start_validator, clamd):
    running = scanning(start_validator, clamd.unix)
    clean = scans("clean")
    data = text(3 * MiB)
    verdict = validate(running.channel, "notes.txt", data)
    assert verdict.accepted
    assert verdict.bytes_read == len(data)
    assert verdict.decisions[-1].rule == "clamav" and verdict.decisions[-1].outcome == "pass"
    assert scans("clean") == clean + 1


def test_clamd_unreachable_is_unavailable_and_a_head_refusal_still_wins(start_validator):
    running = scanning(start_validator, f"tcp://127.0.0.1:{free_port()}")
    with pytest.raises(grpc.RpcError) as raised:
        validate(running.channel, "notes.txt", text(100_000))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(raised.value) == "UNAVAILABLE"
    assert "virus scanner" in raised.value.details()
    verdict = validate(running.channel, "photo.jpg", MZ_HEADER + bytes(100_000))
    assert verdict.reasons[0].code == "executable_content"


# Failing open is covered by the silent-clamd test below: killed here, clamd may be gone before the
# validator (behind the client's sends) connects, which fail-open rightly lets through.
@pytest.mark.parametrize("fail_open", ["0"])
def test_clamd_killed_mid_stream_is_unavailable_failing_open_or_not(start_validator, own_clamd, fail_open):
    clamd = own_clamd()
    running = scanning(start_validator, clamd.tcp, CLAMAV_FAIL_OPEN=fail_open)
    sent_first = threading.Event()

    def requests():
        yield validator_pb2.ValidateRequest(info=file_info("notes.txt", 8 * MiB))
        for i in range(8):
            yield validator_pb2.ValidateRequest(chunk=text(MiB))
            if i == 1:
                sent_first.set()
                clamd.kill()
                time.sleep(0.2)

    with pytest.raises(grpc.RpcError) as raised:
        validator_pb2_grpc.ValidatorStub(running.channel).Validate(requests(), timeout=30)
    assert sent_first.is_set()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("fail_open", [False, True])
def test_clamd_silent_past_clamd_timeout_is_unavailable_failing_open_or_not(start_validator, fail_open):
    # Something listening that takes the bytes and never answers: as clamd is while it scans a
    # file made slow to scan. Failing open here would let such a file choose to pass.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        held = []
        threading.Thread(target=lambda: held.append(silent.accept()), daemon=True).start()
        rule = ClamAV(f"tcp://127.0.0.1:{port}", timeout=1, fail_open=fail_open)
        running = start_validator(pm=create_plugins(env={}, extra_plugins=[rule]))
        passed = scans("fail_open")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            validate(running.channel, "notes.txt", text(10_000))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert 0.9 < time.monotonic() - started < 5
        assert scans("fail_open") == passed
        for conn, _ in held:
            conn.close()


def test_fail_open_lets_the_file_through_and_says_so(start_validator, caplog):
    running = scanning(start_validator, f"tcp://127.0.0.1:{free_port()}", CLAMAV_FAIL_OPEN="1")
    passed = scans("fail_open")
    with caplog.at_level(logging.WARNING, logger="upload.validator.clamav"):
        verdict = validate(running.channel, "notes.txt", text(100_000))
    assert verdict.accepted
    assert scans("fail_open") == passed + 1
    assert any("unscanned" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("fail_open", ["0", "1"])
def test_a_file_over_clamds_stream_limit_is_never_let_through(start_validator, own_clamd, fail_open, caplog):
    clamd = own_clamd(stream_max="1M")
    running = scanning(start_validator, clamd.unix, CLAMAV_FAIL_OPEN=fail_open)
    with caplog.at_level(logging.ERROR, logger="upload.validator.clamav"):
        verdict = validate(running.channel, "notes.txt", text(3 * MiB))
    # Refused (413 at the gateway, never a 500), and the log says what the operator must change.
    assert not verdict.accepted and verdict.reasons[0].code == "file_too_large"
    assert "virus scanner" in verdict.reasons[0].message
    assert any("StreamMaxLength" in record.getMessage() for record in caplog.records)


def test_a_file_past_clamds_scan_limits_is_refused_not_passed_unscanned(start_validator, own_clamd):
    # clamd stops scanning past MaxFileSize / MaxScanSize and, as Debian ships it (25M, no
    # AlertExceedsMax), answers OK: a file padded past them went through unscanned. With
    # AlertExceedsMax (README, "ClamAV") the answer is Heuristics.Limits.Exceeded... FOUND.
    clamd = own_clamd(stream_max="60M", scan_max="1M")
    running = scanning(start_validator, clamd.unix)
    verdict = validate(running.channel, "notes.txt", MARKER + text(2 * MiB))
    assert not verdict.accepted and verdict.reasons[0].code == "malware"
    assert "Heuristics.Limits.Exceeded" in verdict.reasons[0].message


def test_without_clamd_address_there_is_no_whole_file_rule(validator):
    policy = validator_pb2_grpc.ValidatorStub(validator.channel).GetPolicy(validator_pb2.GetPolicyRequest(), timeout=5)
    assert not policy.whole_file
    assert ClamAV.from_env({}) is None


def test_the_settings():
    rule = ClamAV.from_env({"CLAMD_ADDRESS": "tcp://clamd.internal:3310", "CLAMD_TIMEOUT": "30",
                            "CLAMAV_FAIL_OPEN": "on"})
    assert (rule.target, rule.timeout, rule.fail_open) == (("clamd.internal", 3310), 30, True)
    assert parse_address("/run/clamav/clamd.ctl") == (socket.AF_UNIX, "/run/clamav/clamd.ctl")
    assert parse_address("tcp://[::1]:3310") == (socket.AF_INET6, ("::1", 3310))
    for bad in ({"CLAMD_ADDRESS": "clamd:3310"}, {"CLAMD_ADDRESS": "tcp://clamd"},
                {"CLAMD_ADDRESS": "/x", "CLAMAV_FAIL_OPEN": "maybe"}, {"CLAMD_ADDRESS": "/x", "CLAMD_TIMEOUT": "0"}):
        with pytest.raises(SystemExit):
            ClamAV.from_env(bad)

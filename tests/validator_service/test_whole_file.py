"""Whole-file rules (upload_whole_file_rules) through the gRPC service: fed every byte
as it arrives, a verdict after the last one, the head rules still first."""
from __future__ import annotations

import grpc
import pytest

from protos.client import error_reason
from protos.errors import Unavailable
from protos.plugins import hookimpl
from protos.streaming import file_info, validate_requests
from protos.upload.v1 import validator_pb2, validator_pb2_grpc
from tests.conftest import validate
from tests.plugin_modules.pdf_javascript import FindJavaScript
from tests.samples import MZ_HEADER, SAMPLES_DIR
from validator_service.hookspecs import WholeFileRule
from validator_service.server import create_plugins

MiB = 1024 * 1024
PDF_RULE = {"UPLOAD_PLUGINS": "tests.plugin_modules.pdf_javascript"}


def pdf(tail: bytes = b"", pad: int = 3 * MiB // 2) -> bytes:
    """The sample PDF, `pad` bytes of a comment, then `tail`: past the first MiB by default."""
    return (SAMPLES_DIR / "sample.pdf").read_bytes() + b"\n%" + b"x" * pad + b"\n" + tail + b"\n%%EOF\n"


@pytest.fixture
def pdf_rule(start_validator):
    return start_validator(pm=create_plugins(env=PDF_RULE))


def stub(running):
    return validator_pb2_grpc.ValidatorStub(running.channel)


def test_the_policy_says_whole_file_only_when_such_a_rule_is_registered(validator, pdf_rule):
    assert stub(pdf_rule).GetPolicy(validator_pb2.GetPolicyRequest(), timeout=5).whole_file
    assert not stub(validator).GetPolicy(validator_pb2.GetPolicyRequest(), timeout=5).whole_file


@pytest.mark.parametrize("declared", [True, False])
def test_a_rule_sees_bytes_past_the_first_mib(pdf_rule, declared):
    data = pdf(b"/JS (app.alert(1))")
    verdict = validate(pdf_rule.channel, "report.pdf", data, declared=declared)
    assert not verdict.accepted
    assert verdict.reasons[0].code == "pdf_javascript"
    assert verdict.reasons[0].rule == "pdf_javascript"
    assert verdict.bytes_read == len(data)
    assert verdict.decisions[-1].rule == "pdf_javascript" and verdict.decisions[-1].outcome == "reject"
    assert not verdict.head_incomplete


def test_every_byte_reaches_the_rule_even_across_two_chunks(pdf_rule):
    data = pdf(b"/JS")
    seam = data.index(b"/JS") + 2  # "/J" ends one chunk, "S" starts the next
    stream = validator_pb2_grpc.ValidatorStub(pdf_rule.channel)
    verdict = stream.Validate(validate_requests(file_info("a.pdf", len(data)), [data[:seam], data[seam:]]),
                              timeout=10)
    assert verdict.reasons[0].code == "pdf_javascript"


def test_a_clean_file_is_accepted_after_its_last_byte(pdf_rule):
    data = pdf()
    verdict = validate(pdf_rule.channel, "report.pdf", data)
    assert verdict.accepted, verdict
    assert verdict.bytes_read == len(data)
    assert [d.rule for d in verdict.decisions][-1] == "pdf_javascript"
    assert verdict.detected_type == "application/pdf"


def test_the_head_rules_still_refuse_from_the_first_chunk(pdf_rule):
    closed = FindJavaScript.closed
    data = MZ_HEADER + bytes(3 * MiB)
    verdict = validate(pdf_rule.channel, "invoice.pdf", data)
    assert verdict.reasons[0].code == "executable_content"
    assert verdict.bytes_read <= 64 * 1024
    assert FindJavaScript.closed == closed + 1  # the scanner was opened, and closed without its verdict


def test_a_file_no_rule_opens_is_judged_from_its_head(pdf_rule):
    data = b"plain words and more words\n" * (3 * MiB // 27)
    verdict = validate(pdf_rule.channel, "notes.txt", data)
    assert verdict.accepted
    assert verdict.bytes_read < len(data)


def test_check_with_the_whole_file_runs_the_rule(pdf_rule):
    data = pdf(b"/JS", pad=10_000)
    verdict = stub(pdf_rule).Check(validator_pb2.CheckRequest(info=file_info("a.pdf"), head=data, size=len(data)),
                                   timeout=10)
    assert verdict.reasons[0].code == "pdf_javascript"


def test_part_of_a_file_cannot_be_accepted(pdf_rule):
    data = pdf(pad=10_000)
    head = data[:4096]
    checked = stub(pdf_rule).Check(validator_pb2.CheckRequest(info=file_info("a.pdf"), head=head, size=len(data)),
                                   timeout=10)
    requests = [*validate_requests(file_info("a.pdf"), [head]),
                validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=len(data)))]
    streamed = stub(pdf_rule).Validate(iter(requests), timeout=10)
    for verdict in (checked, streamed):
        assert not verdict.accepted
        assert verdict.head_incomplete
        assert verdict.reasons[0].code == "whole_file_required"
        assert "4096" in verdict.reasons[0].message
    # ...but a head the head rules refuse is refused as ever.
    bad = stub(pdf_rule).Check(validator_pb2.CheckRequest(info=file_info("a.pdf"), head=MZ_HEADER, size=10 * MiB),
                               timeout=10)
    assert bad.reasons[0].code == "executable_content"


class Failing:
    """A whole-file rule whose scanner fails as told; counts what was called."""

    def __init__(self, error: Exception, where: str):
        self.error, self.where = error, where
        self.calls = []

    def open(self, file):
        self.calls.append("open")
        if self.where == "open":
            raise self.error
        return self

    def feed(self, data):
        if self.where == "feed":
            raise self.error

    def finish(self):
        self.calls.append("finish")
        if self.where == "finish":
            raise self.error

    def close(self):
        self.calls.append("close")

    @hookimpl
    def upload_whole_file_rules(self):
        yield WholeFileRule("failing", self.open)


@pytest.mark.parametrize("where", ["open", "feed", "finish"])
def test_a_scanner_that_cannot_be_reached_makes_the_call_unavailable(start_validator, where):
    rule = Failing(Unavailable("The scanner is down."), where)
    running = start_validator(pm=create_plugins(env={}, extra_plugins=[rule]))
    with pytest.raises(grpc.RpcError) as raised:
        validate(running.channel, "notes.txt", b"words\n" * 100_000)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(raised.value) == "UNAVAILABLE"
    assert raised.value.details() == "The scanner is down."
    assert rule.calls[-1] == ("open" if where == "open" else "close")


def test_a_head_refusal_comes_before_a_scanner_that_cannot_be_reached(start_validator):
    rule = Failing(Unavailable(), "open")
    running = start_validator(pm=create_plugins(env={}, extra_plugins=[rule]))
    verdict = validate(running.channel, "photo.jpg", MZ_HEADER + bytes(200_000))
    assert verdict.reasons[0].code == "executable_content"


def test_a_scanner_that_crashes_makes_the_call_internal(start_validator):
    rule = Failing(RuntimeError("bug"), "feed")
    running = start_validator(pm=create_plugins(env={}, extra_plugins=[rule]))
    with pytest.raises(grpc.RpcError) as raised:
        validate(running.channel, "notes.txt", b"words\n" * 100_000)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert rule.calls == ["open", "close"]


def test_a_plugin_must_yield_whole_file_rules():
    class Wrong:
        @hookimpl
        def upload_whole_file_rules(self):
            yield "clamav"

    from validator_service.policy import whole_file_rules
    with pytest.raises(TypeError, match="yield WholeFileRule"):
        whole_file_rules(create_plugins(env={}, extra_plugins=[Wrong()]))

"""Check: the Validate verdict in one message, for callers holding the head."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from PIL import Image

from protos.plugins import hookimpl
from protos.streaming import file_info, validate_requests
from protos.upload.v1 import common_pb2, validator_pb2, validator_pb2_grpc
from tests.images import encode
from tests.samples import MZ_HEADER
from validator_service.server import create_plugins
from validator_service.types import Rejection


def both(validator, name: str, data: bytes, size: int | None = None):
    """The verdicts of Validate (streamed, with `end`) and Check on the same head and size."""
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    size = len(data) if size is None else size
    requests = list(validate_requests(file_info(name), [data]))
    requests.append(validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=size)))
    streamed = stub.Validate(iter(requests), timeout=10)
    checked = stub.Check(validator_pb2.CheckRequest(info=file_info(name), head=data, size=size), timeout=10)
    return [MessageToDict(v, preserving_proto_field_name=True) for v in (streamed, checked)]


@pytest.mark.parametrize("name, data, size", [
    ("photo.jpg", encode(Image.new("RGB", (64, 48), "teal"), "JPEG"), None),
    ("notes.txt", b"plain words\n" * 50, None),
    ("notes.txt", b"plain words\n" * 50, 10 * 1024 * 1024),  # a head, and the real size told
    ("holiday.jpg", MZ_HEADER + bytes(4000), None),
    ("empty.txt", b"", None),
])
def test_check_gives_the_verdict_validate_gives(validator, name, data, size):
    streamed, checked = both(validator, name, data, size)
    assert checked == streamed
    assert checked.get("accepted", False) == (name in ("photo.jpg", "notes.txt"))


@pytest.mark.parametrize("request_, sentence", [
    (validator_pb2.CheckRequest(info=file_info("a.txt"), head=b"abc", size=2), "head alone holds 3 bytes"),
    (validator_pb2.CheckRequest(head=b"abc", size=3), "file's info"),
    (validator_pb2.CheckRequest(info=common_pb2.FileInfo(original_name=" "), head=b"a", size=1), "original_name"),
])
def test_a_malformed_check_is_invalid_argument_with_a_sentence(validator, request_, sentence):
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Check(request_, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sentence in raised.value.details()


def test_a_validate_stream_longer_than_it_declared_is_invalid_argument(validator):
    # Declared 100 bytes, sent 300 KB: judged by the larger of the two, it is a broken call.
    def requests():
        yield validator_pb2.ValidateRequest(info=file_info("notes.txt", 100))
        for _ in range(5):
            yield validator_pb2.ValidateRequest(chunk=b"x" * 60_000)

    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Validate(requests(), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "100 bytes declared" in info.value.details()


def test_a_name_of_megabytes_is_invalid_argument_not_a_reply_over_the_message_limit(validator):
    # The verdict repeats the extension and a refusal quotes it: a 3.9 MB name made a
    # 7.8 MB reply, which gRPC refused to send (RESOURCE_EXHAUSTED from the server).
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    name = "a." + "x" * 3_900_000
    with pytest.raises(grpc.RpcError) as raised:
        stub.Check(validator_pb2.CheckRequest(info=file_info(name), head=b"hello", size=5), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "longer than 1024 bytes" in raised.value.details()
    # A long name within the bound is judged as usual.
    verdict = stub.Check(validator_pb2.CheckRequest(info=file_info("n" * 1000 + ".txt"), head=b"hi", size=2),
                         timeout=10)
    assert verdict.accepted


class _Wordy:
    """A rule whose refusal runs to megabytes."""

    @hookimpl(tryfirst=True)
    def upload_check(self, file):
        return Rejection("c" * 1000, "word " * 1_000_000)


def test_a_rules_refusal_is_bounded_in_the_reply(start_validator):
    pm = create_plugins(extra_plugins=[_Wordy()])
    running = start_validator(pm=pm)
    stub = validator_pb2_grpc.ValidatorStub(running.channel)
    verdict = stub.Check(validator_pb2.CheckRequest(info=file_info("a.txt"), head=b"hi", size=2), timeout=10)
    assert not verdict.accepted
    assert len(verdict.reasons[0].message) == 2000 and verdict.reasons[0].message.endswith("…")
    assert verdict.reasons[0].code == "c" * 64 and verdict.decisions[0].code == "c" * 64

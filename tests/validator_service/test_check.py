"""Check: the Validate verdict in one message, for callers holding the head."""
from __future__ import annotations

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from PIL import Image

from protos import common_pb2, validator_pb2, validator_pb2_grpc
from protos.streaming import file_info, validate_requests
from tests.images import encode
from tests.samples import MZ_HEADER


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

"""Refusals: each with its stable reason code, decided from as few bytes as possible."""
from __future__ import annotations

import threading

import grpc
import pytest
from PIL import Image

from protos.streaming import file_info, validate_requests
from protos.upload.v1 import common_pb2, validator_pb2, validator_pb2_grpc
from tests.conftest import validate
from tests.images import encode, png_header_only
from tests.samples import ELF_HEADER, MZ_HEADER, make_sample
from validator_service.config import Settings


def counting_stream(head: bytes, total: int, chunk_size: int = 64 * 1024):
    """`head` then zeros up to `total` bytes; `sent[0]` counts what was pulled."""
    sent = [0]

    def chunks():
        yield head
        sent[0] += len(head)
        remaining = total - len(head)
        block = b"\x00" * chunk_size
        while remaining > 0:
            piece = block[: min(chunk_size, remaining)]
            remaining -= len(piece)
            sent[0] += len(piece)
            yield piece

    return chunks(), sent


def reason_code(verdict) -> str:
    assert not verdict.accepted
    assert verdict.reasons and verdict.reasons[0].message.endswith(".")
    return verdict.reasons[0].code


@pytest.mark.parametrize("name", ["cute-cat.jpg", "invoice.pdf", "notes.txt", "archive.zip"])
@pytest.mark.parametrize("header", [MZ_HEADER, ELF_HEADER], ids=["pe", "elf"])
def test_renamed_executable_is_refused_from_its_first_bytes(validator, name, header):
    total = 50 * 1024 * 1024
    chunks, sent = counting_stream(header + b"\x00" * (64 * 1024 - len(header)), total)
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    verdict = stub.Validate(validate_requests(file_info(name, total), chunks), timeout=10)
    assert reason_code(verdict) == "executable_content"
    assert verdict.bytes_read <= 64 * 1024
    # The client stopped being asked for bytes long before the 50 MiB were sent.
    assert sent[0] < 8 * 1024 * 1024


def test_allowed_types_are_decided_from_the_first_64_kib(validator):
    total = 50 * 1024 * 1024
    jpeg = encode(Image.new("RGB", (300, 200), "green"), "JPEG")
    # Chunked as the gateway sends: 64 KiB messages.
    chunks, _ = counting_stream(jpeg + b"\0" * (64 * 1024 - len(jpeg)), total)
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    verdict = stub.Validate(validate_requests(file_info("big.jpg", total), chunks), timeout=10)
    assert verdict.accepted
    assert verdict.bytes_read <= 64 * 1024


@pytest.mark.parametrize("ext,name", [("pdf", "photo.jpg"), ("png", "report.pdf"),
                                      ("zip", "letter.docx.txt"), ("jpg", "data.csv"),
                                      ("gz", "backup.zip")])
def test_content_that_disagrees_with_the_extension_is_refused(validator, tmp_path, ext, name):
    data = make_sample(ext, tmp_path).read_bytes()
    verdict = validate(validator.channel, name, data)
    assert reason_code(verdict) == "content_mismatch"
    assert verdict.detected_type in verdict.reasons[0].message


def test_html_renamed_to_txt_is_refused(validator):
    page = b"<!DOCTYPE html><html><head><script>alert(1)</script></head><body>hi</body></html>"
    assert reason_code(validate(validator.channel, "readme.txt", page)) == "content_mismatch"


@pytest.mark.parametrize("name", ["setup.exe", "run.sh", "page.html", "noextension", "dotfile.", ".bashrc"])
def test_extensions_outside_the_allowlist_are_refused(validator, name):
    verdict = validate(validator.channel, name, b"hello\n")
    assert reason_code(verdict) == "extension_not_allowed"
    assert "jpg" in verdict.reasons[0].message  # the sentence says what is allowed


def test_double_extension_uses_the_last_one(validator):
    assert reason_code(validate(validator.channel, "photo.jpg.exe", MZ_HEADER)) == "extension_not_allowed"


def test_declared_oversize_is_refused_before_any_byte(validator):
    big = 50 * 1024 * 1024 + 1
    chunks, sent = counting_stream(b"x" * 1024, big)
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    verdict = stub.Validate(validate_requests(file_info("big.txt", big), chunks), timeout=10)
    assert reason_code(verdict) == "file_too_large"
    assert "50 MiB" in verdict.reasons[0].message
    assert verdict.bytes_read == 0


def test_undeclared_oversize_is_refused_once_the_limit_is_passed(start_validator):
    running = start_validator(settings=Settings(max_file_size=1024 * 1024))
    chunks, sent = counting_stream(b"hello world\n" * 100, 20 * 1024 * 1024)
    stub = validator_pb2_grpc.ValidatorStub(running.channel)
    verdict = stub.Validate(validate_requests(file_info("big.txt"), chunks), timeout=10)
    assert reason_code(verdict) == "file_too_large"
    assert verdict.bytes_read <= 1024 * 1024 + 64 * 1024


def test_file_exactly_at_the_limit_is_accepted(start_validator):
    running = start_validator(settings=Settings(max_file_size=4096))
    assert validate(running.channel, "a.txt", b"a" * 4095 + b"\n").accepted
    assert reason_code(validate(running.channel, "a.txt", b"a" * 4096 + b"\n")) == "file_too_large"


@pytest.mark.parametrize("declared", [True, False])
def test_empty_file_is_refused(validator, declared):
    assert reason_code(validate(validator.channel, "empty.txt", b"", declared=declared)) == "empty_file"


@pytest.mark.parametrize("size", [(5001, 10), (10, 5001), (6000, 4000)])
def test_image_over_the_dimension_limit_is_refused(validator, size):
    data = encode(Image.new("L", size), "PNG")
    verdict = validate(validator.channel, "wide.png", data)
    assert reason_code(verdict) == "image_too_large"
    assert f"{size[0]}x{size[1]}" in verdict.reasons[0].message


def test_image_at_the_dimension_limit_is_accepted(validator):
    data = encode(Image.new("L", (5000, 1)), "PNG")
    verdict = validate(validator.channel, "strip.png", data)
    assert verdict.accepted
    assert (verdict.width, verdict.height) == (5000, 1)


def test_dimension_limit_follows_the_setting(start_validator):
    running = start_validator(settings=Settings(max_image_dimension=100))
    data = encode(Image.new("RGB", (101, 50)), "JPEG")
    assert reason_code(validate(running.channel, "a.jpg", data)) == "image_too_large"


def test_pixel_flood_png_is_refused_from_its_header(validator):
    data = png_header_only(60000, 60000)
    assert len(data) < 2048
    verdict = validate(validator.channel, "flood.png", data)
    assert reason_code(verdict) == "pixel_flood"


@pytest.mark.parametrize("fmt,ext", [("GIF", "gif"), ("WEBP", "webp"), ("JPEG", "jpg")])
def test_over_dimension_in_every_image_format(validator, fmt, ext):
    data = encode(Image.new("RGB", (5200, 8)), fmt)
    assert reason_code(validate(validator.channel, f"x.{ext}", data)) == "image_too_large"


def test_image_with_a_broken_header_is_refused(validator):
    data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
    verdict = validate(validator.channel, "broken.png", data)
    assert reason_code(verdict) in ("corrupt_image", "content_mismatch")


def test_jpeg_with_large_metadata_before_the_frame_header_is_measured(validator):
    # A 200 KiB ICC profile pushes the frame header past the first 64 KiB.
    im = Image.new("RGB", (320, 240), "purple")
    data = encode(im, "JPEG", icc_profile=b"\x00" * (200 * 1024))
    verdict = validate(validator.channel, "icc.jpg", data)
    assert verdict.accepted, verdict.reasons
    assert (verdict.width, verdict.height) == (320, 240)


def test_verdict_records_what_each_rule_decided(validator):
    verdict = validate(validator.channel, "x.jpg", MZ_HEADER)
    outcomes = [(d.rule.rsplit(".", 1)[-1], d.outcome) for d in verdict.decisions]
    assert outcomes == [("filetypes", "pass"), ("size", "pass"), ("content", "reject")]
    assert verdict.reasons[0].rule == "validator_service.rules.content"


# --- broken calls are gRPC errors with the right code, never UNKNOWN ---

def call_raw(channel, messages):
    stub = validator_pb2_grpc.ValidatorStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Validate(iter(messages), timeout=10)
    return info.value


def test_stream_without_info_is_invalid_argument(validator):
    error = call_raw(validator.channel, [validator_pb2.ValidateRequest(chunk=b"abc")])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message" in error.details()


def test_empty_stream_is_invalid_argument(validator):
    assert call_raw(validator.channel, []).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_second_info_is_invalid_argument(validator):
    info = common_pb2.FileInfo(original_name="a.txt")
    messages = [validator_pb2.ValidateRequest(info=info), validator_pb2.ValidateRequest(info=info)]
    assert call_raw(validator.channel, messages).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_missing_name_is_invalid_argument(validator):
    messages = [validator_pb2.ValidateRequest(info=common_pb2.FileInfo(original_name=" "))]
    assert call_raw(validator.channel, messages).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_negative_size_is_invalid_argument(validator):
    info = common_pb2.FileInfo(original_name="a.txt", declared_size=-5)
    error = call_raw(validator.channel, [validator_pb2.ValidateRequest(info=info)])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stream_shorter_than_declared_is_invalid_argument(validator):
    info = common_pb2.FileInfo(original_name="a.txt", declared_size=1000)
    messages = [validator_pb2.ValidateRequest(info=info), validator_pb2.ValidateRequest(chunk=b"hi\n")]
    error = call_raw(validator.channel, messages)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1000" in error.details()


def test_oversized_message_is_refused_by_the_transport(validator):
    info = common_pb2.FileInfo(original_name="a.txt")
    messages = [validator_pb2.ValidateRequest(info=info),
                validator_pb2.ValidateRequest(chunk=b"a" * (5 * 1024 * 1024))]
    assert call_raw(validator.channel, messages).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# --- a caller that counts the size itself sends a prefix and `end` ---

def prefix_then_end(name: str, head: bytes, size: int):
    yield validator_pb2.ValidateRequest(info=file_info(name))
    yield validator_pb2.ValidateRequest(chunk=head)
    yield validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=size))


def test_prefix_and_end_is_judged_on_the_real_size(validator):
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    jpeg = encode(Image.new("RGB", (300, 200), "green"), "JPEG")
    verdict = stub.Validate(prefix_then_end("big.jpg", jpeg, 40 * 1024 * 1024), timeout=10)
    assert verdict.accepted and verdict.bytes_read == len(jpeg)
    verdict = stub.Validate(prefix_then_end("big.jpg", jpeg, 60 * 1024 * 1024), timeout=10)
    assert reason_code(verdict) == "file_too_large"


def test_undeclared_size_still_refuses_a_bad_head_first(validator):
    # The size is judged last when undeclared: the executable is refused from its head.
    release = threading.Event()
    head = MZ_HEADER.ljust(64 * 1024, b"\0")

    def stalled():
        yield validator_pb2.ValidateRequest(info=file_info("x.pdf"))
        yield validator_pb2.ValidateRequest(chunk=head)
        release.wait(10)  # the rest of the file "has not arrived yet"

    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    try:
        verdict = stub.Validate(stalled(), timeout=5)
    finally:
        release.set()
    assert reason_code(verdict) == "executable_content"
    assert verdict.bytes_read == len(head)


def test_end_smaller_than_what_was_sent_is_invalid_argument(validator):
    error = call_raw(validator.channel, list(prefix_then_end("a.txt", b"hello world\n", 3)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_nothing_may_follow_end(validator):
    messages = [*prefix_then_end("a.txt", b"hello\n", 6), validator_pb2.ValidateRequest(chunk=b"x")]
    assert call_raw(validator.channel, messages).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_policy_tells_callers_how_much_head_to_send(validator):
    policy = validator_pb2_grpc.ValidatorStub(validator.channel).GetPolicy(validator_pb2.GetPolicyRequest())
    assert policy.head_bytes == Settings().max_head


def test_a_verdict_on_a_short_head_says_so(validator):
    """A JPEG whose frame header lies past the part the caller sent: the image
    rule could not read it, and the verdict says the head was incomplete."""
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    data = encode(Image.new("RGB", (320, 240), "purple"), "JPEG", icc_profile=b"\0" * (200 * 1024))
    verdict = stub.Validate(prefix_then_end("icc.jpg", data[:64 * 1024], len(data)), timeout=10)
    assert verdict.head_incomplete and not verdict.accepted
    verdict = stub.Validate(prefix_then_end("icc.jpg", data, len(data)), timeout=10)
    assert verdict.accepted and not verdict.head_incomplete


def test_a_refusal_from_a_sufficient_head_is_complete(validator):
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    head = MZ_HEADER.ljust(64 * 1024, b"\0")
    verdict = stub.Validate(prefix_then_end("x.jpg", head, 20 * 1024 * 1024), timeout=10)
    assert reason_code(verdict) == "executable_content"
    assert not verdict.head_incomplete

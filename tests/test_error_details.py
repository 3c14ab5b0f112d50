"""Every error the gRPC services send carries a google.rpc.Status in its trailers
whose ErrorInfo gives a stable reason (domain upload.v1), so that a caller in any
language can tell "too large" from "busy" without parsing sentences."""
from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image

from protos.streaming import file_info
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc, validator_pb2, validator_pb2_grpc
from tests.conftest import render
from tests.images import encode, progressive_scan_bomb
from thumbnail_service.config import Settings as ThumbnailSettings
from validator_service.config import Settings as ValidatorSettings


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailers"
    assert status.code == error.code().value[0] and status.message == error.details()
    (detail,) = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert info.domain == "upload.v1"
    return info


def test_bad_input_to_check_says_invalid_input(validator):
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Check(validator_pb2.CheckRequest(info=file_info("a.txt", 3), head=b"abcdef", size=3), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "INVALID_INPUT"


def test_a_type_no_renderer_handles_says_unsupported_type(thumbnailer):
    with pytest.raises(grpc.RpcError) as caught:
        render(thumbnailer.channel, b"%PDF-1.4", "application/x-unknown")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(caught.value).reason == "UNSUPPORTED_TYPE"


def test_a_render_over_its_budget_says_over_budget(start_thumbnailer):
    running = start_thumbnailer(settings=ThumbnailSettings(render_cpu=1))
    with pytest.raises(grpc.RpcError) as caught:
        render(running.channel, progressive_scan_bomb(scans=3000), "image/jpeg")
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(caught.value).reason == "OVER_BUDGET"


def test_a_busy_service_says_busy_on_both_services(start_validator, start_thumbnailer):
    validator = start_validator(settings=ValidatorSettings(workers=1))
    release = threading.Event()

    def stalled():
        yield validator_pb2.ValidateRequest(info=file_info("a.txt", 1000))
        release.wait(10)

    holding = validator_pb2_grpc.ValidatorStub(validator.channel).Validate.future(stalled(), timeout=20)
    try:
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as caught:
            validator_pb2_grpc.ValidatorStub(validator.channel).Check(
                validator_pb2.CheckRequest(info=file_info("a.txt", 3), head=b"abc", size=3), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(caught.value).reason == "BUSY"
    finally:
        release.set()
        holding.cancel()

    thumbnailer = start_thumbnailer(settings=ThumbnailSettings(workers=1, render_cpu=3))
    busy = thumbnail_pb2_grpc.ThumbnailStub(thumbnailer.channel).Render.future(iter([
        thumbnail_pb2.RenderRequest(options=thumbnail_pb2.RenderOptions(mime_type="image/jpeg")),
        thumbnail_pb2.RenderRequest(chunk=progressive_scan_bomb())]), timeout=20)
    try:
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as caught:
            render(thumbnailer.channel, encode(Image.new("RGB", (40, 30)), "PNG"), "image/png")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(caught.value).reason == "BUSY"
    finally:
        busy.cancel()

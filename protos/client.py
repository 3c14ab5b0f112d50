"""A small Python client for the upload.v1 services, for other teams' programs.

    from protos.client import connect, ValidatorClient, ThumbnailClient

    with connect("validator:50051") as channel:
        verdict = ValidatorClient(channel).validate_file("report.pdf")
        if not verdict.accepted:
            print(verdict.reasons[0].code, verdict.reasons[0].message)

What it adds to the generated stubs: a channel whose gRPC service config retries
``UNAVAILABLE`` (the services' "busy, retry shortly") with backoff, and sets the keepalive
the servers accept; a deadline on every call (the README's recommended ones); files streamed
from disk in 64 KiB chunks, never read whole; and ``error_reason`` for the stable reason in
an error's ``google.rpc.ErrorInfo``.

gRPC's service config retries the one-message calls (Check, GetPolicy, GetRenderers,
GetTransforms). The streams (Validate, Render) are sent again from disk here, with the same
backoff: gRPC retries a stream only while what it has sent fits its retry buffer (256 KiB),
and grpcio's core has been seen to abort the whole process retrying a large stream the
service refused as busy while it was still being sent."""
from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from protos.upload.v1 import common_pb2, thumbnail_pb2, thumbnail_pb2_grpc, validator_pb2, validator_pb2_grpc

CHUNK_SIZE = 64 * 1024
# Recommended deadlines, seconds (README, "Calling the services").
QUICK_DEADLINE = 5.0  # GetPolicy, GetRenderers, health
CHECK_DEADLINE = 10.0  # Check: a head of at most 4 MiB
FILE_DEADLINE = 60.0  # Validate / Render of a file read from local disk

# Retries: five attempts in all, 0.2 s then doubling up to 2 s between them (gRPC adds jitter);
# throttled so that a caller whose retries keep failing stops adding load.
_RETRY = {"maxAttempts": 5, "initialBackoff": "0.2s", "maxBackoff": "2s", "backoffMultiplier": 2,
          "retryableStatusCodes": ["UNAVAILABLE"]}
SERVICE_CONFIG = {
    "methodConfig": [{"name": [{"service": "upload.v1.Validator", "method": "Check"},
                               {"service": "upload.v1.Validator", "method": "GetPolicy"},
                               {"service": "upload.v1.Thumbnail", "method": "GetRenderers"},
                               {"service": "upload.v1.Thumbnail", "method": "GetTransforms"}],
                      "retryPolicy": _RETRY}],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}
# Every 30 s on an idle connection: the servers accept pings every 10 s or more, and an
# idle connection through a NAT or load balancer is not silently dropped.
KEEPALIVE = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000),
             ("grpc.keepalive_permit_without_calls", 1)]


def connect(target: str, credentials: grpc.ChannelCredentials | None = None,
            options: list[tuple[str, object]] | None = None) -> grpc.Channel:
    """A channel to one service (``host:port`` or any gRPC target such as ``dns:///validator:50051``),
    plaintext unless ``credentials`` (``grpc.ssl_channel_credentials(...)``) are given."""
    settings = [("grpc.service_config", json.dumps(SERVICE_CONFIG)), ("grpc.enable_retries", 1), *KEEPALIVE,
                *(options or [])]
    if credentials is None:
        return grpc.insecure_channel(target, options=settings)
    return grpc.secure_channel(target, credentials, options=settings)


def error_reason(error: grpc.RpcError) -> str | None:
    """The stable reason of a service's error (``BUSY``, ``INVALID_INPUT``, ``TOO_LARGE``...:
    the README's "Errors, for programs" table), or None when the error carries none
    (a cancelled call, a connection that failed)."""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return None


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            yield chunk


def _resending(call, timeout: float, attempts: int = _RETRY["maxAttempts"]):
    """``call(seconds_left)``, a stream sent from its start, again while the service is
    UNAVAILABLE (busy, restarting, not reachable yet): safe, since judging or rendering a file
    changes nothing. All attempts together keep to ``timeout``, the caller's deadline."""
    deadline = time.monotonic() + timeout
    for attempt in range(1, attempts + 1):
        try:
            return call(max(deadline - time.monotonic(), 0.001))
        except grpc.RpcError as error:
            pause = min(2.0, 0.2 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            if (attempt == attempts or error.code() != grpc.StatusCode.UNAVAILABLE
                    or time.monotonic() + pause >= deadline):
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")


def _file_info(path: Path, name: str | None, declared_type: str = "") -> common_pb2.FileInfo:
    return common_pb2.FileInfo(original_name=name or path.name, declared_size=os.stat(path).st_size,
                               declared_type=declared_type)


class ValidatorClient:
    """upload.v1.Validator with deadlines, retries and files streamed from disk."""

    def __init__(self, channel: grpc.Channel):
        self.stub = validator_pb2_grpc.ValidatorStub(channel)

    def policy(self, timeout: float = QUICK_DEADLINE) -> validator_pb2.Policy:
        return self.stub.GetPolicy(validator_pb2.GetPolicyRequest(), timeout=timeout)

    def check(self, name: str, head: bytes, size: int | None = None,
              timeout: float = CHECK_DEADLINE) -> validator_pb2.Verdict:
        """The verdict on a file of which the caller holds the head (or all: ``size`` omitted)."""
        size = len(head) if size is None else size
        request = validator_pb2.CheckRequest(info=common_pb2.FileInfo(original_name=name, declared_size=size),
                                             head=head, size=size)
        return self.stub.Check(request, timeout=timeout)

    def validate_file(self, path: str | os.PathLike, name: str | None = None,
                      timeout: float = FILE_DEADLINE) -> validator_pb2.Verdict:
        """Streams the file from disk; the service answers as soon as its rules have seen
        enough, and the rest is not sent. ``name``: the name to judge (default the file's)."""
        path = Path(path)

        def requests():
            info = _file_info(path, name)
            yield validator_pb2.ValidateRequest(info=info)
            for chunk in _chunks(path):
                yield validator_pb2.ValidateRequest(chunk=chunk)
            yield validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=info.declared_size))

        return _resending(lambda left: self.stub.Validate(requests(), timeout=left), timeout)


class ThumbnailClient:
    """upload.v1.Thumbnail with deadlines, retries and files streamed from disk."""

    def __init__(self, channel: grpc.Channel):
        self.stub = thumbnail_pb2_grpc.ThumbnailStub(channel)

    def renderers(self, timeout: float = QUICK_DEADLINE) -> list[str]:
        return list(self.stub.GetRenderers(thumbnail_pb2.GetRenderersRequest(), timeout=timeout).mime_types)

    def render_file(self, path: str | os.PathLike, mime_type: str, box: tuple[int, int] = (0, 0),
                    timeout: float = FILE_DEADLINE) -> thumbnail_pb2.ThumbnailImage:
        """A thumbnail of the file within ``box`` (pixels; 0: the service's default). ``mime_type``:
        the validator's ``Verdict.detected_type``."""
        path = Path(path)

        def requests():
            yield thumbnail_pb2.RenderRequest(options=thumbnail_pb2.RenderOptions(
                info=_file_info(path, None), mime_type=mime_type, max_width=box[0], max_height=box[1]))
            for chunk in _chunks(path):
                yield thumbnail_pb2.RenderRequest(chunk=chunk)

        return _resending(lambda left: self.stub.Render(requests(), timeout=left), timeout)

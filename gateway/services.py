"""Long-lived gRPC channels to the validator and thumbnail services, and the
calls the gateway makes on them. gRPC failures become protos.errors here."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc
from flask import Flask, current_app
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos import thumbnail_pb2, thumbnail_pb2_grpc, validator_pb2, validator_pb2_grpc
from protos.errors import error_for_code, from_rpc_error
from protos.streaming import file_info, render_requests

CHANNEL_OPTIONS = [
    # A DNS name that resolves to several replicas spreads the calls over them.
    ("grpc.lb_policy_name", "round_robin"),
    # gRPC's default backoff grows to 2 minutes; a restarted service should be
    # used again within seconds.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 3000),
]
_END = object()


class ValidationStream:
    """One Validate call fed while the upload is still arriving.

    The gateway counts and stores the bytes itself, so only the head the
    validator's rules may read is sent, then an `end` message with the real
    size. A refusal can arrive after the first chunk; ``early_verdict()``
    reports it without blocking.
    """

    def __init__(self, stub, original_name: str, declared_type: str, head_bytes: int, timeout: float,
                 declared_size: int | None = None):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._head_left = head_bytes
        self._sent_end = False
        info = file_info(original_name, declared_size, declared_type)
        self._future = stub.Validate.future(self._requests(info), timeout=timeout)

    def _requests(self, info) -> Iterator[validator_pb2.ValidateRequest]:
        yield validator_pb2.ValidateRequest(info=info)
        while (item := self._queue.get()) is not _END:
            yield item

    def feed(self, chunk: bytes) -> None:
        if self._head_left > 0 and not self._future.done():
            piece = chunk[: self._head_left]
            self._head_left -= len(piece)
            self._queue.put(validator_pb2.ValidateRequest(chunk=piece))

    def early_verdict(self) -> validator_pb2.Verdict | None:
        """The verdict if it has already come (a refusal from the head), else None.
        Raises an UploadError if the call failed (validator unreachable)."""
        return self._result(0) if self._future.done() else None

    def finish(self, size: int, wait: float) -> validator_pb2.Verdict:
        if not self._sent_end:
            self._sent_end = True
            self._queue.put(validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=size)))
            self._queue.put(_END)
        return self._result(wait)

    def _result(self, wait: float) -> validator_pb2.Verdict:
        try:
            return self._future.result(timeout=wait)
        except grpc.FutureTimeoutError:
            self.cancel()
            raise error_for_code(grpc.StatusCode.DEADLINE_EXCEEDED) from None
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def cancel(self) -> None:
        """Stop the call; always lets the request iterator end (no stuck thread)."""
        self._queue.put(_END)
        self._future.cancel()


class Services:
    def __init__(self, config: dict):
        self.config = config
        self.channels = {
            "validator": grpc.insecure_channel(config["VALIDATOR_ADDR"], options=CHANNEL_OPTIONS),
            "thumbnail": grpc.insecure_channel(config["THUMBNAIL_ADDR"], options=CHANNEL_OPTIONS),
        }
        self.validator = validator_pb2_grpc.ValidatorStub(self.channels["validator"])
        self.thumbnailer = thumbnail_pb2_grpc.ThumbnailStub(self.channels["thumbnail"])
        self._policy: validator_pb2.Policy | None = None
        self._policy_at = 0.0
        self._renderable: frozenset[str] | None = None
        self._lock = threading.Lock()

    # --- validator ---

    def policy(self) -> validator_pb2.Policy:
        """The validator's rules, cached for POLICY_TTL seconds; the last known
        policy is used while the validator is unreachable."""
        with self._lock:
            fresh = time.monotonic() - self._policy_at < self.config["POLICY_TTL"]
            if self._policy is not None and fresh:
                return self._policy
        try:
            policy = self.validator.GetPolicy(validator_pb2.GetPolicyRequest(),
                                              timeout=self.config["HEALTH_TIMEOUT"] * 3)
        except grpc.RpcError as exc:
            if self._policy is not None:
                return self._policy
            raise from_rpc_error(exc) from None
        with self._lock:
            self._policy, self._policy_at = policy, time.monotonic()
        return policy

    def start_validation(self, original_name: str, declared_type: str, head_bytes: int,
                         declared_size: int | None = None) -> ValidationStream:
        return ValidationStream(self.validator, original_name, declared_type, head_bytes,
                                self.config["UPLOAD_TIMEOUT"], declared_size)

    # --- thumbnails ---

    def renderable(self) -> frozenset[str]:
        """MIME types the thumbnail service renders (asked once, then cached)."""
        if self._renderable is None:
            try:
                reply = self.thumbnailer.GetRenderers(thumbnail_pb2.GetRenderersRequest(),
                                                      timeout=self.config["THUMBNAIL_TIMEOUT"])
            except grpc.RpcError as exc:
                raise from_rpc_error(exc) from None
            self._renderable = frozenset(reply.mime_types)
        return self._renderable

    def render(self, chunks: Iterator[bytes], original_name: str, mime_type: str, size: int):
        """Render a thumbnail; raises an UploadError (Unavailable, TimedOut,
        InvalidInput...) when no thumbnail can be had now."""
        options = thumbnail_pb2.RenderOptions(info=file_info(original_name, size), mime_type=mime_type)
        try:
            return self.thumbnailer.Render(render_requests(options, chunks),
                                           timeout=self.config["THUMBNAIL_TIMEOUT"])
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    # --- health ---

    def health(self) -> dict[str, str]:
        """Each service's grpc.health.v1 status name, or UNREACHABLE."""
        status = {}
        for name, channel in self.channels.items():
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""),
                                   timeout=self.config["HEALTH_TIMEOUT"])
                status[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError:
                status[name] = "UNREACHABLE"
        return status

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def init_app(app: Flask) -> None:
    app.extensions["services"] = Services(app.config)


def services() -> Services:
    return current_app.extensions["services"]

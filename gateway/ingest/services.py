"""Long-lived gRPC channels to the validator and thumbnail services, and the
calls the gateway makes on them (the retry of calls safe to repeat in
gateway.ingest.calls, the Validate stream fed while an upload arrives in
gateway.ingest.validation_stream). gRPC failures become protos.errors here.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc
from flask import Flask, current_app
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.ingest.calls import Freed, call_with_retry
from gateway.ingest.validation_stream import VALIDATE, ValidationStream
from gateway.metrics import ClientCallMetrics
from protos.client import error_reason
from protos.errors import Internal, Unavailable, UploadError, from_rpc_error
from protos.streaming import file_info, render_requests, transform_requests
from protos.tls import open_channel
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc, validator_pb2, validator_pb2_grpc

log = logging.getLogger("upload.gateway")

CHANNEL_OPTIONS = [
    # A DNS name that resolves to several replicas spreads the calls over them.
    ("grpc.lb_policy_name", "round_robin"),
    # Resolving again is what finds new replicas (the servers' connection age
    # triggers it); gRPC's default allows it only every 30 s.
    ("grpc.dns_min_time_between_resolutions_ms", 5000),
    # gRPC's default backoff grows to 2 minutes; a restarted service should be
    # used again within a second or so (a refused local connection costs nothing).
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

# The name each service reports its own health under, beside its server's "" (protos/serving.py).
SERVICE_NAMES = {"validator": validator_pb2.DESCRIPTOR.services_by_name["Validator"].full_name,
                 "thumbnail": thumbnail_pb2.DESCRIPTOR.services_by_name["Thumbnail"].full_name}
# What makes a service that is up say it cannot work (validator_service/rules/clamav_health.py).
CANNOT_WORK = {"validator": " (with CLAMD_ADDRESS set: clamd does not answer; the validator's log and its "
                            "upload_validator_clamd_up metric say more)"}


# The thumbnail service's list of renderers is read again when it is old, or when a file of a
# type not on it arrives, but not more often than this (seconds): a stream of files of types
# that have no renderer, or a service that is down, costs one GetRenderers call per this.
RENDERERS_RECHECK = 5.0

class Services:
    def __init__(self, config: dict):
        self.config = config
        tls = config.get("GRPC_TLS")  # None: plaintext
        self._raw = {
            "validator": open_channel(config["VALIDATOR_ADDR"], tls, CHANNEL_OPTIONS),
            "thumbnail": open_channel(config["THUMBNAIL_ADDR"], tls, CHANNEL_OPTIONS),
        }
        # Every call on them is counted by method and status code, and timed (/metrics).
        self.channels = {name: grpc.intercept_channel(channel, ClientCallMetrics(name))
                         for name, channel in self._raw.items()}
        self.validator = validator_pb2_grpc.ValidatorStub(self.channels["validator"])
        self.thumbnailer = thumbnail_pb2_grpc.ThumbnailStub(self.channels["thumbnail"])
        self._policy: validator_pb2.Policy | None = None
        self._policy_at = 0.0
        self._renderable: frozenset[str] | None = None
        self._renderable_at = float("-inf")  # when it was read
        self._renderers_tried = float("-inf")  # when reading it was last tried
        self._thumbnail_plugins: list = []
        self._transformable: frozenset[str] | None = None
        self._transform_names: dict[str, frozenset[str]] | None = None  # by MIME type
        self._transformable_at = float("-inf")
        self._transforms_tried = float("-inf")
        self._lock = threading.Lock()
        self._render_freed = Freed()  # a render of ours ended: one refused BUSY may try again

    # --- validator ---

    def policy(self) -> validator_pb2.Policy:
        """The validator's rules, cached for POLICY_TTL seconds; the last known
        policy is used while the validator is unreachable."""
        with self._lock:
            fresh = time.monotonic() - self._policy_at < self.config["POLICY_TTL"]
            if self._policy is not None and fresh:
                return self._policy
        try:
            policy = call_with_retry(
                lambda left: self.validator.GetPolicy(validator_pb2.GetPolicyRequest(), timeout=left),
                self.config["HEALTH_TIMEOUT"] * 3, "GetPolicy", explain="policy")
        except UploadError:
            if self._policy is not None:
                return self._policy
            raise
        with self._lock:
            self._policy, self._policy_at = policy, time.monotonic()
        return policy

    @property
    def validate_raw(self):
        """Validate, taking messages the caller serializes (ValidationStream frames its chunks itself)."""
        return self.channels["validator"].stream_unary(
            VALIDATE, request_serializer=None, response_deserializer=validator_pb2.Verdict.FromString)

    def start_validation(self, original_name: str, declared_type: str, head_bytes: int,
                         declared_size: int | None = None, whole: bool = False,
                         timeout: float | None = None) -> ValidationStream:
        """A Validate stream to feed (not retried: it is fed with bytes as they arrive); its
        deadline is an upload's (UPLOAD_TIMEOUT) unless ``timeout`` is given."""
        return ValidationStream(self.validate_raw, original_name, declared_type, head_bytes,
                                timeout or self.config["UPLOAD_TIMEOUT"], declared_size, whole, noted=self._note)

    def validate_stored(self, original_name: str, declared_type: str, open_chunks: Callable[[], Iterator[bytes]],
                        size: int) -> validator_pb2.Verdict:
        """The verdict on a complete file sent whole from storage (``open_chunks()`` gives
        its bytes from the start, once per attempt): what a rule that reads every byte
        needs when the bytes were not streamed as they arrived. Safe to repeat, so
        retried like Render; the deadline is VALIDATOR_TIMEOUT plus a second per 8 MiB."""
        def requests():
            yield validator_pb2.ValidateRequest(info=file_info(original_name, size, declared_type))
            for chunk in open_chunks():
                yield validator_pb2.ValidateRequest(chunk=chunk)
            yield validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=size))

        timeout = self.config["VALIDATOR_TIMEOUT"] + size / (8 * 1024 * 1024)
        return self._note(call_with_retry(lambda left: self.validator.Validate(requests(), timeout=left),
                                          timeout, "Validate", explain="validate"))

    def check(self, original_name: str, declared_type: str, head: bytes, size: int,
              declared_size: int | None = None) -> validator_pb2.Verdict:
        """The verdict on a file whose head (or whole self) is at hand, in one
        call (safe to repeat, so retried while the validator restarts)."""
        request = validator_pb2.CheckRequest(info=file_info(original_name, declared_size, declared_type),
                                             head=head, size=size)
        return self._note(call_with_retry(lambda left: self.validator.Check(request, timeout=left),
                                          self.config["VALIDATOR_TIMEOUT"], "Check", explain="validate"))

    def _note(self, verdict: validator_pb2.Verdict) -> validator_pb2.Verdict:
        """Every verdict passes here: one whose rules wanted more than was sent means the
        validator's rules changed since the policy was read, so it is read again."""
        if verdict.head_incomplete:
            self.forget_policy()
        return verdict

    def forget_policy(self) -> None:
        """A rule wanted more of a file than the policy said to send (the validator's rules
        changed, e.g. a whole-file rule turned on): the policy is read again at its next use."""
        with self._lock:
            self._policy_at = 0.0

    # --- thumbnails ---

    def renderable(self, mime_type: str | None = None, fresh: bool = False) -> frozenset[str]:
        """MIME types the thumbnail service renders. The list is read again once it is
        THUMBNAIL_RENDERERS_TTL seconds old, when asked about a ``mime_type`` not on it,
        and after ``forget_renderers``, but never more often than every RENDERERS_RECHECK
        seconds: a thumbnail service restarted with a new renderer is used without
        restarting the gateway. While the service cannot be reached the last list read is
        used; with none yet, or when asked for a ``fresh`` one, the UploadError is raised."""
        now = time.monotonic()
        with self._lock:
            known, age = self._renderable, now - self._renderable_at
            stale = known is None or age >= self.config["THUMBNAIL_RENDERERS_TTL"] or (
                mime_type is not None and mime_type not in known)
            if not fresh and (not stale or (known is not None and now - self._renderers_tried < RENDERERS_RECHECK)):
                return known
            self._renderers_tried = now
        # A service that does not answer costs a known list's readers one health check's time.
        timeout = self.config["THUMBNAIL_TIMEOUT"] if known is None or fresh else self.config["HEALTH_TIMEOUT"]
        try:
            reply = call_with_retry(
                lambda left: self.thumbnailer.GetRenderers(thumbnail_pb2.GetRenderersRequest(), timeout=left),
                timeout, "GetRenderers")
        except UploadError:
            if known is None or fresh:
                raise
            return known
        renderable = frozenset(reply.mime_types)
        with self._lock:
            if self._renderable is not None and renderable != self._renderable:
                log.info("the thumbnail service now renders %s", ", ".join(sorted(renderable)) or "nothing")
            self._renderable, self._renderable_at = renderable, time.monotonic()
            self._thumbnail_plugins = list(reply.plugins)
        return renderable

    def thumbnail_plugins(self) -> list:
        """The plugins the thumbnail service listed with its renderers (PluginInfo) when the
        gateway last read them; empty before it has. Never a call of its own: GET /policy must
        answer at once whatever the thumbnail service does (a frozen one would hold it)."""
        with self._lock:
            return list(self._thumbnail_plugins)

    def forget_renderers(self) -> None:
        """The thumbnail service has no renderer for a type (it was restarted with fewer, or
        the type is not on its list): the list is read again at the next ask."""
        with self._lock:
            self._renderable_at = float("-inf")

    def render(self, open_chunks: Callable[[], Iterator[bytes]], original_name: str, mime_type: str,
               size: int, timeout: float | None = None):
        """Render a thumbnail of a file that is at hand as a whole: ``open_chunks()``
        gives its bytes from the start, once per attempt (so a call that fails
        UNAVAILABLE can be made again). Raises an UploadError (Unavailable,
        TimedOut, InvalidInput...) when no thumbnail can be had now. ``timeout``:
        at most THUMBNAIL_TIMEOUT, less when the caller has less left."""
        options = thumbnail_pb2.RenderOptions(info=file_info(original_name, size), mime_type=mime_type)
        limit = self.config["THUMBNAIL_TIMEOUT"]

        def attempt(left: float):
            started = time.monotonic()
            with self._render_freed.running(left):
                left -= time.monotonic() - started
                try:
                    reply = self.thumbnailer.Render(render_requests(options, open_chunks()),
                                                    timeout=max(left, 0.001))
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE and error_reason(exc) == "BUSY":
                        self._render_freed.refused()
                    raise
                self._render_freed.served()
            return reply

        return call_with_retry(attempt, limit if timeout is None else min(timeout, limit), "Render",
                               freed=self._render_freed)

    # --- transforms (before commit) ---

    def transformable(self, mime_type: str | None = None) -> frozenset[str]:
        """MIME types some transform of the thumbnail service handles, cached as the
        renderers' list is (THUMBNAIL_RENDERERS_TTL, read again for a type not on it at
        most every RENDERERS_RECHECK seconds). The last list read is used while the
        service cannot be reached; with none yet the UploadError is raised (the caller
        fails closed: it cannot know whether a file needs transforming)."""
        now = time.monotonic()
        with self._lock:
            known, age = self._transformable, now - self._transformable_at
            stale = known is None or age >= self.config["THUMBNAIL_RENDERERS_TTL"] or (
                mime_type is not None and mime_type not in known)
            if not stale or (known is not None and now - self._transforms_tried < RENDERERS_RECHECK):
                return known
            if known is None and now - self._transforms_tried < RENDERERS_RECHECK:
                # Never read, and asked a moment ago in vain: not every upload waits for it again.
                raise Unavailable("The thumbnail service's transforms cannot be read now.")
            self._transforms_tried = now
        timeout = self.config["THUMBNAIL_TIMEOUT"] if known is None else self.config["HEALTH_TIMEOUT"]
        try:
            reply = call_with_retry(
                lambda left: self.thumbnailer.GetTransforms(thumbnail_pb2.GetTransformsRequest(), timeout=left),
                timeout, "GetTransforms")
        except UploadError:
            if known is None:
                raise
            return known
        transformable = frozenset(reply.mime_types)
        by_type: dict[str, set[str]] = {mime: set() for mime in transformable}
        for info in reply.transforms:
            for mime in info.mime_types:
                by_type.setdefault(mime, set()).add(info.name)
        if not reply.transforms:  # a service from before TransformInfo: every name may apply to every type
            by_type = {mime: set(reply.names) for mime in transformable}
        with self._lock:
            self._transformable, self._transformable_at = transformable, time.monotonic()
            self._transform_names = {mime: frozenset(names) for mime, names in by_type.items()}
        return transformable

    def transform_names(self, mime_type: str) -> frozenset[str] | None:
        """The names of the transforms the thumbnail service last listed for ``mime_type``;
        None before it answered."""
        with self._lock:
            if self._transform_names is None:
                return None
            return self._transform_names.get(mime_type, frozenset())

    def forget_transforms(self) -> None:
        with self._lock:
            self._transformable_at = float("-inf")
            self._transforms_tried = float("-inf")

    def transform(self, open_chunks: Callable[[], Iterator[bytes]], original_name: str, mime_type: str,
                  size: int, parameters: dict[str, str]):
        """Send a whole file through the thumbnail service's transforms: returns
        (TransformResult, an iterator of the new file's chunks, empty when unchanged).
        The call is made again while the service is briefly UNAVAILABLE, until its first
        answer; a failure while the new bytes arrive raises its UploadError."""
        options = thumbnail_pb2.TransformOptions(info=file_info(original_name, size), mime_type=mime_type,
                                                 parameters=parameters)
        # The time to send the file and get it back, on top of the work itself.
        timeout = self.config["THUMBNAIL_TIMEOUT"] + 30.0 + size / (20 * 1024 * 1024)

        def attempt(left: float):
            replies = self.thumbnailer.Transform(transform_requests(options, open_chunks()),
                                                 timeout=left)
            first = next(replies, None)
            if first is None or first.WhichOneof("part") != "result":
                raise Internal("The thumbnail service answered a transform without its result.")
            return first.result, replies

        result, replies = call_with_retry(attempt, timeout, "Transform")

        def chunks() -> Iterator[bytes]:
            try:
                for reply in replies:
                    yield reply.chunk
            except grpc.RpcError as exc:
                raise from_rpc_error(exc) from None

        return result, chunks()

    # --- health ---

    def health(self) -> dict[str, str]:
        """Each service's grpc.health.v1 status name, or UNREACHABLE."""
        return {name: status for name, (status, _) in self.health_report().items()}

    def health_report(self) -> dict[str, tuple[str, str | None]]:
        """Each service's status name (or UNREACHABLE), with a sentence saying why
        when it is not SERVING. A service is asked for its own name first: it can be up
        (its server's "" SERVING, which the kubelet's liveness probe asks) and still not
        able to do its work (the validator while clamd does not answer); "" is asked only
        then, to tell that from a server that is stopping."""
        report = {}
        for name, channel in self.channels.items():
            stub = health_pb2_grpc.HealthStub(channel)

            def check(service: str) -> str:
                reply = call_with_retry(
                    lambda left: stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=left),
                    self.config["HEALTH_TIMEOUT"], f"health check of the {name} service")
                return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

            service = SERVICE_NAMES[name]
            try:
                status = check(service)
                server = check("") if status != "SERVING" else "SERVING"
            except UploadError:
                report[name] = ("UNREACHABLE", f"the {name} service cannot be reached")
                continue
            if status == "SERVING":
                report[name] = (status, None)
            elif server != "SERVING":
                report[name] = (status, f"the {name} service reports {server}: it is stopping")
            else:
                report[name] = (status, f"the {name} service is up but reports {service} {status}: it cannot "
                                        f"do its work now{CANNOT_WORK.get(name, '')}")
        return report

    def close(self) -> None:
        for channel in self._raw.values():
            channel.close()


def init_app(app: Flask) -> None:
    app.extensions["services"] = Services(app.config)


def services() -> Services:
    return current_app.extensions["services"]

"""What both gRPC servers share: health, reflection, bounded pools, a log
line per call, optional (mutual) TLS and a graceful stop on SIGTERM."""
from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.admission import Admission, Limits
from protos.tls import ServerTls

log = logging.getLogger("upload.grpc")

# Streams are cut into chunks far below this; the bound stops one caller from
# making the server buffer a huge single message.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Keepalive: a caller may ping every 10 s or more, with or without a call open (common Go
# and Java client settings); gRPC's default server policy answers pings more often than
# every 5 minutes with GOAWAY too_many_pings. Pinging faster still is refused the same way
# after 2 strikes. The server pings a connection quiet for 2 minutes itself, and closes it
# when the ping goes unanswered for 20 s (a caller that vanished without closing).
KEEPALIVE_POLICY = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 2),
    ("grpc.keepalive_time_ms", 120_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]
# Calls a server holds at once, running or waiting for a thread (see build_server).
MAX_QUEUED_CALLS = 1024
# Server threads beyond a service's work slots: health checks, reflection and quick
# calls always find one, whatever the work calls do.
SPARE_THREADS = 8


def _status(context, default: str) -> str:
    """The code the handler set on ``context``, by name; ``default`` when it set none.
    A call its caller gave up (cancelled, or past its deadline) is that, whatever
    the handler made of the broken stream: the caller's doing, not the service's."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        # Past the deadline the answer reaches nobody. (gRPC may end a dead call's request
        # stream before it marks the call inactive, so the handler can even have "finished".)
        return "DEADLINE_EXCEEDED"
    if not context.is_active():
        return "CANCELLED"
    code = context.code()
    return code.name if code is not None else default


class _CallLogInterceptor(grpc.ServerInterceptor):
    """Logs every call once: method, outcome code, duration; and counts and
    times it in ``metrics`` (a protos.metrics.ServerMetrics) when given."""

    def __init__(self, metrics=None, admission: Admission | None = None):
        self.metrics = metrics
        self.admission = admission

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metrics = self.metrics
        if handler.request_streaming and handler.response_streaming:
            inner, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
        elif handler.request_streaming:
            inner, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
        elif handler.response_streaming:
            inner, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
        else:
            inner, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler

        admission = self.admission
        if admission is not None and admission.covers(method) and not handler.response_streaming:
            inner = _admitted(inner, method, admission, handler.request_streaming)

        def record(start: float, outcome: str) -> None:
            seconds = time.perf_counter() - start
            log.info("rpc %s %s %.1fms", method, outcome, seconds * 1000)
            if metrics is not None:
                metrics.observe(method, outcome, seconds)

        def logged(request, context):
            start = time.perf_counter()
            outcome = "OK"
            try:
                result = inner(request, context)
                outcome = _status(context, "OK")
                return result
            except Exception:
                outcome = _status(context, "INTERNAL")
                raise
            finally:
                record(start, outcome)

        def logged_stream(request, context):
            # A streamed answer (Health/Watch, reflection) is an iterator the
            # handler returns at once: the call ends when it is used up, or
            # when the client goes away, so it is timed and judged then.
            start = time.perf_counter()
            outcome = "OK"
            try:
                yield from inner(request, context)
                outcome = _status(context, "OK")
                if outcome == "OK" and not context.is_active():
                    outcome = "CANCELLED"
            except GeneratorExit:
                outcome = "CANCELLED"
                raise
            except Exception:
                outcome = _status(context, "INTERNAL")
                raise
            finally:
                record(start, outcome)

        return factory(
            logged_stream if handler.response_streaming else logged,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _admitted(inner, method: str, admission: Admission, streaming: bool):
    """The handler, run only with a slot and under the admission's watch."""
    def admitted(request, context):
        with admission.admit(method, context) as call:
            return inner(admission.track(request, call) if streaming else request, context)

    return admitted


def build_server(
    address: str,
    register,
    service_names: list[str],
    max_workers: int = 8,
    max_concurrent_rpcs: int | None = None,
    max_connection_age: float = 0,
    metrics=None,
    limits: Limits | None = None,
    tls: ServerTls | None = None,
) -> tuple[grpc.Server, int]:
    """Create a server bound to ``address``, not yet started.

    ``register(server)`` adds the service's servicers; ``max_connection_age``
    (seconds, 0: never) bounds how long one client connection lives. Returns the server and
    the bound port (pass port 0 to get a free one). The health servicer rides
    along as ``server.health_servicer`` so a graceful stop can report
    NOT_SERVING first. ``metrics`` (protos.metrics.ServerMetrics) counts and
    times every call. ``limits`` (protos.admission.Limits): slots for the work
    calls, and how long a call may wait for its caller or last. ``tls``
    (protos.tls.ServerTls): the port serves TLS only; None, plaintext.
    """
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *KEEPALIVE_POLICY,
    ]
    if max_connection_age > 0:
        # A GOAWAY makes the client reconnect and resolve its target again, so a
        # replica added behind a DNS name gets calls. Calls in flight finish on
        # the old connection (the grace period is unbounded): a Validate stream
        # can last as long as its upload.
        options.append(("grpc.max_connection_age_ms", int(max_connection_age * 1000)))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[_CallLogInterceptor(metrics, Admission(limits, metrics) if limits else None)],
        options=options,
        # gRPC itself refuses calls past this with RESOURCE_EXHAUSTED, which says "your request
        # is too large", not "busy": so it is set far above what the threads serve, and a
        # burst reaches the admission (protos/admission.py), which says UNAVAILABLE at once.
        # Still a bound: a flood past it is refused rather than queued without end.
        maximum_concurrent_rpcs=max_concurrent_rpcs or max(MAX_QUEUED_CALLS, max_workers * 4),
    )
    register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *service_names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    server.health_servicer = health_servicer
    try:
        port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise SystemExit(f"Cannot listen on {address}: the address is in use or invalid.") from exc
    log.info("listening on %s:%d with %s", address.rpartition(":")[0], port,
             tls.describe() if tls else "plaintext")
    return server, port


def listen_address(env, listen_var: str, target: str) -> str:
    """Where a server binds: ``listen_var`` if set, else the service's client
    target when it is a plain host:port, else every interface on its port
    (a target like ``dns:///validator:50051`` names the service for callers)."""
    if env.get(listen_var):
        return env[listen_var]
    if "://" not in target and not target.startswith(("dns:", "unix:", "ipv4:", "ipv6:")):
        return target
    return "[::]:" + target.rsplit(":", 1)[-1]


def serve_until_signalled(server: grpc.Server, grace: float) -> None:
    """Run until SIGTERM or SIGINT, then stop taking calls, report NOT_SERVING
    and give in-flight calls ``grace`` seconds to finish."""
    stopped = threading.Event()

    def _stop(signum, _frame):
        log.info("signal %s: draining for up to %.0fs", signal.Signals(signum).name, grace)
        server.health_servicer.enter_graceful_shutdown()
        stopped.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.start()
    stopped.wait()
    server.stop(grace).wait()
    log.info("stopped")


def env_int(env, name: str, default: int, minimum: int | None = None) -> int:
    """A whole-number setting; a malformed one, or one under ``minimum``, stops the
    service with a clear sentence."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, got {value}.")
    return value


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

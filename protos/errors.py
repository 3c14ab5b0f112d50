"""The one error model shared by the gateway and the gRPC services.

A *rejection* (a file the rules refuse) is data, carried in a Verdict. An
*error* is a failed call: each class below names the gRPC status a service
aborts with and the HTTP status the gateway answers with, so the mapping
lives here and nowhere else.
"""
from __future__ import annotations

import errno
import re
from contextlib import contextmanager

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


# google.rpc.ErrorInfo's domain for every error the services send.
ERROR_DOMAIN = "upload.v1"


class UploadError(Exception):
    """Base class: a failure with a sentence a person can read."""

    grpc_code = grpc.StatusCode.INTERNAL
    http_status = 500
    default_message = "Something went wrong on our side; please try again."

    def __init__(self, message: str | None = None):
        self.message = message or self.default_message
        super().__init__(self.message)

    @property
    def reason(self) -> str:
        """The stable code for programs (google.rpc.ErrorInfo.reason): the class name in
        UPPER_SNAKE_CASE, TooLarge -> TOO_LARGE. Renaming a class is a breaking change."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).upper()


class InvalidInput(UploadError):
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    default_message = "The request is malformed."


class TooLarge(UploadError):
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413
    default_message = "The file is larger than the service accepts."


class TooLong(TooLarge):
    """More bytes than the upload announced (tus: past Upload-Length)."""


class UnsupportedType(UploadError):
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 415
    default_message = "This type of file is not supported here."


class NotFound(UploadError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    default_message = "Nothing is stored under that name."


class Unauthenticated(UploadError):
    """No valid credentials (HTTP answers carry WWW-Authenticate: Bearer)."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    default_message = "Sign in, or send an API token as 'Authorization: Bearer <token>'."


class QuotaExceeded(UploadError):
    """A user's byte or file quota would be passed."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413
    default_message = "Your storage quota is full."


class Forbidden(UploadError):
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    default_message = "This is not allowed."


class Conflict(UploadError):
    """The request is out of step with the resource (a tus offset that moved)."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409
    default_message = "The resource changed; read it again and retry."


class Locked(UploadError):
    grpc_code = grpc.StatusCode.ABORTED
    http_status = 423
    default_message = "Another request is writing this resource; try again when it has finished."


class Gone(UploadError):
    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 410
    default_message = "This is no longer available."


class Unavailable(UploadError):
    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    default_message = "A service this request needs cannot be reached; please try again shortly."


class Busy(Unavailable):
    """Every slot for this kind of call is taken: try again shortly (overload, not an outage)."""

    default_message = "The service is busy; please try again shortly."


class TimedOut(UploadError):
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    # To an HTTP client a service that does not answer is as unavailable as one that is down.
    http_status = 503
    default_message = "A service this request needs did not answer in time; please try again shortly."


class InsufficientStorage(UploadError):
    """The disk the bytes go to is full (ENOSPC, EDQUOT): nothing was stored."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 507
    default_message = ("The server has run out of storage space, so nothing was stored. "
                       "Please try again later.")


class RequestTimeout(UploadError):
    """The client stopped sending (or sent too slowly) in the middle of its request."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 408
    default_message = "The request stopped arriving before it was complete; nothing was stored."


class Cancelled(UploadError):
    """The caller went away (cancelled, or its deadline passed) mid-call: the
    answer reaches nobody, and nothing is wrong with the service."""

    grpc_code = grpc.StatusCode.CANCELLED
    http_status = 503
    default_message = "The caller cancelled the call."


class Internal(UploadError):
    pass


class Refused(UploadError):
    """The rules refused a file: a verdict, not a failure. Carries the rule's
    stable reason code; the HTTP status follows from it."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 422
    STATUS_BY_CODE = {
        "extension_not_allowed": 415,
        "content_mismatch": 415,
        "executable_content": 415,
        "file_too_large": 413,
        "empty_file": 400,
    }

    def __init__(self, code: str, message: str, original_name: str | None = None, rule: str | None = None):
        super().__init__(message)
        self.code = code
        self.original_name = original_name
        self.rule = rule  # the validator's rule that refused the file, when it was one
        self.size: int | None = None  # the file's size, where the refusing code knows it
        self.http_status = self.STATUS_BY_CODE.get(code, 422)


_BY_GRPC_CODE: dict[grpc.StatusCode, type[UploadError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInput,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TooLarge,
    grpc.StatusCode.FAILED_PRECONDITION: UnsupportedType,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: TimedOut,
    grpc.StatusCode.CANCELLED: Unavailable,
}


def error_for_code(code: grpc.StatusCode | None, details: str | None = None) -> UploadError:
    """The UploadError for a gRPC status code (client side)."""
    cls = _BY_GRPC_CODE.get(code, Internal)
    # gRPC's own concurrency limit (maximum_concurrent_rpcs) also answers
    # RESOURCE_EXHAUSTED: the service is busy, not the input too large.
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and (details or "").startswith("Concurrent RPC limit"):
        return Unavailable()
    # Connection failures carry transport jargon; a person gets the plain sentence.
    if cls in (Unavailable, TimedOut, Internal) or not details:
        return cls()
    return cls(details)


def from_rpc_error(error: grpc.RpcError) -> UploadError:
    """Turn a failed gRPC call into the matching UploadError (client side)."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else None
    return error_for_code(code, details)


# A full disk, or a user's disk quota that is used up.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL = 13
POSTGRES_DISK_FULL = "53100"


def is_out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full: an OSError with ENOSPC or EDQUOT,
    or a database driver's own "disk full" (SQLite's SQLITE_FULL, PostgreSQL's
    53100), also when wrapped by SQLAlchemy (``exc.orig``)."""
    for error in (exc, getattr(exc, "orig", None)):
        if error is None:
            continue
        if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
            return True
        if getattr(error, "sqlite_errorcode", None) == SQLITE_FULL:
            return True
        if getattr(error, "sqlstate", None) == POSTGRES_DISK_FULL or getattr(error, "pgcode", None) == POSTGRES_DISK_FULL:
            return True
    return False


@contextmanager
def out_of_space_as_error():
    """Turn a full disk met inside the block into InsufficientStorage (the one
    place where that happens); every other error passes unchanged."""
    try:
        yield
    except UploadError:
        raise
    except Exception as exc:
        if is_out_of_space(exc):
            raise InsufficientStorage() from exc
        raise


def abort(context: grpc.ServicerContext, error: UploadError):
    """Fail the current RPC with the error's gRPC code and sentence (server side),
    and a google.rpc.Status in the trailers whose ErrorInfo carries the error's
    stable ``reason`` (read it with grpc_status.rpc_status.from_call). Never returns."""
    context.abort_with_status(rpc_status.to_status(status_pb2.Status(
        code=error.grpc_code.value[0], message=error.message,
        details=[_packed(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))])))


def _packed(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed

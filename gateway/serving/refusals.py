"""The HTTP server's own refusals (a malformed request, a request line or headers
over the limits, a head that never arrived in time) as JSON, like every other
error of the gateway, whether a request thread or the event loop refuses."""
from __future__ import annotations

import json

from gunicorn.http import errors as http_errors

from gateway.serving.heads import HeaderTimeout

# gunicorn's refusals, before the application sees the request: status, reason.
_REFUSALS = [
    (HeaderTimeout, 408, "Request Timeout"),
    (http_errors.LimitRequestLine, 414, "URI Too Long"),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large"),
    (http_errors.UnsupportedTransferCoding, 501, "Not Implemented"),
    (http_errors.ForbiddenProxyRequest, 403, "Forbidden"),
    (http_errors.ConfigurationProblem, 500, "Internal Server Error"),
    (http_errors.ParseException, 400, "Bad Request"),
]


def status_of(exc: BaseException) -> tuple[int, str]:
    for kind, code, text in _REFUSALS:
        if isinstance(exc, kind):
            return code, text
    return 500, "Internal Server Error"


def answer(exc: BaseException, limits: dict) -> bytes:
    """The whole response (head and JSON body) that refuses ``exc``; the connection closes after it."""
    status, reason = status_of(exc)
    body = json.dumps({"error": _sentence(exc, status, limits)}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Content-Type-Options: nosniff\r\n\r\n")
    return head.encode("latin-1") + body


def header_timeout(limits: dict) -> HeaderTimeout:
    return HeaderTimeout("The request line and headers did not arrive in time (the gateway waits "
                         f"{limits['CLIENT_HEADER_TIMEOUT']:g} seconds for them, and "
                         f"{limits['CLIENT_IDLE_TIMEOUT']:g} for each piece).")


def _sentence(exc: BaseException, status: int, limits: dict) -> str:
    if isinstance(exc, HeaderTimeout):
        return str(exc)
    if status == 414:
        return f"The request line (method, URL and version) is longer than {limits['MAX_REQUEST_LINE']} bytes."
    if status == 431:
        return (f"The request headers are too large: at most {limits['MAX_HEADER_COUNT']} headers "
                f"of at most {limits['MAX_HEADER_SIZE']} bytes each, {limits['MAX_HEADER_BLOCK']} bytes "
                "with the request line, are accepted.")
    if status == 501:
        return f"This server does not support that Transfer-Encoding ({exc})."
    if status == 500:
        return "Something went wrong on our side; please try again."
    detail = str(exc)
    return f"The request is not valid HTTP: {detail[:200]}{'...' if len(detail) > 200 else ''}."

"""A request's line and headers (its head), gathered by the worker's event loop
before any thread sees the connection.

gunicorn's threaded worker gives a connection to a thread as soon as a byte
arrives, and the thread then waits for the rest: a few hundred connections
that send one byte and stop held every thread. The loop now keeps each
connection's bytes here and hands it to a thread only once its head is whole;
gunicorn then parses that head from memory, without waiting on the client.
"""
from __future__ import annotations

from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine

# gunicorn's ceiling on limit_request_line, whatever the configuration says.
GUNICORN_MAX_REQUEST_LINE = 8190


class HeaderTimeout(Exception):
    """The request line and headers did not arrive in time (the worker answers 408)."""


class Head:
    """The bytes of one request as they arrive, until the blank line that ends its headers.

    ``feed`` raises gunicorn's own LimitRequestLine / LimitRequestHeaders as soon
    as the bytes show a head that can never be accepted: a request line longer
    than ``line_limit``, or more than ``block_limit`` bytes without the end of
    the headers. The rest of gunicorn's checks (header count and size, syntax)
    are left to gunicorn's parser once the head is whole. Each byte is scanned
    once, so a head trickled a byte at a time costs no more than one sent whole.
    """

    def __init__(self, line_limit: int, block_limit: int):
        # gunicorn's reading of limit_request_line: 0 is no limit, above its ceiling is the ceiling.
        self.line_limit = GUNICORN_MAX_REQUEST_LINE if line_limit < 0 or line_limit >= GUNICORN_MAX_REQUEST_LINE \
            else line_limit
        self.block_limit = block_limit
        self.data = bytearray()
        # Offset just past the blank line that ends the head, once it has come (bytes
        # after it are the body's start or a pipelined request, and stay in ``data``).
        self.end = -1
        self._line_start = 0
        self._lines = 0

    @property
    def complete(self) -> bool:
        return self.end >= 0

    def feed(self, data: bytes) -> None:
        scan_from = max(self._line_start, len(self.data) - 1)  # a CRLF may straddle two pieces
        self.data += data
        while self.end < 0 and (at := self.data.find(b"\r\n", scan_from)) >= 0:
            if self._lines == 0 and at > self.line_limit > 0:
                raise LimitRequestLine(at, self.line_limit)
            if self._lines and at == self._line_start:
                self.end = at + 2
            self._lines += 1
            self._line_start = scan_from = at + 2
        if self.end < 0 and self._lines == 0 and len(self.data) - 2 > self.line_limit > 0:
            raise LimitRequestLine(len(self.data), self.line_limit)  # gunicorn's own test, as early as it can be made
        if (self.end if self.end >= 0 else len(self.data)) > self.block_limit:
            raise LimitRequestHeaders(f"request line and headers over {self.block_limit} bytes")

    def take(self) -> bytes:
        """Every byte received (the head and whatever followed it), handed to gunicorn's parser."""
        data, self.data = bytes(self.data), bytearray()
        return data

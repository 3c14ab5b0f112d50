"""The request body as a stream, read in large pieces, and with deadlines.

gunicorn's ``wsgi.input`` assembles every read from 1 KiB reads of its inner
reader, fed by 8 KiB ``recv`` calls: profiling a 512 MiB upload put 61% of the
request thread there. Its inner reader (which honours Content-Length and
chunked framing) gives what is asked in one piece, so the gateway reads that,
with 256 KiB receives. Anything else (another server, a test client, a body
already partly read) gets werkzeug's ``request.stream`` as usual.

Under ``python -m gateway`` every receive goes through a ``ClientGuard``
(installed by the worker in ``gateway/serving/worker.py``): a body that stops
for CLIENT_IDLE_TIMEOUT or comes slower than CLIENT_MIN_RATE is given up, so a
slow or silent client cannot hold one of the gateway's threads for long.
"""
from __future__ import annotations

import io
import time

from flask import Response, request
from gunicorn.http.body import LengthReader
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData, ParseException
from werkzeug.exceptions import ClientDisconnected

from protos.errors import InvalidInput, RequestTimeout

READ_SIZE = 256 * 1024


def request_body():
    """An object with ``read(n)`` returning the next up-to-``n`` body bytes, b"" at the end."""
    stream = request.environ.get("wsgi.input")
    if type(stream).__module__ != "gunicorn.http.body":
        return request.stream
    reader, buffered = getattr(stream, "reader", None), getattr(stream, "buf", None)
    if reader is None or buffered is None or buffered.tell():
        return request.stream
    unreader = getattr(reader, "unreader", None) or getattr(getattr(reader, "req", None), "unreader", None)
    if getattr(unreader, "mxchunk", READ_SIZE) < READ_SIZE:
        unreader.mxchunk = READ_SIZE
    return reader


def read_piece(stream, size: int = READ_SIZE) -> bytes:
    """The next piece of the body; b"" at its end or when the client went away
    mid-body (what arrived is kept). A body whose chunked framing is broken
    raises InvalidInput; one the ClientGuard gave up on (the client stalled or
    crawled), once what had arrived is read, RequestTimeout."""
    try:
        chunk = stream.read(size)
    except (InvalidChunkSize, ChunkMissingTerminator, ParseException) as exc:
        raise InvalidInput(f"The request body's chunked encoding is broken ({type(exc).__name__}).") from None
    except (ClientDisconnected, NoMoreData, OSError):
        chunk = b""
    if not chunk and (guard := _guard_of(stream)) is not None and guard.stalled:
        raise RequestTimeout(guard.stalled)
    return chunk


class BodyReader:
    """The request body, read into the caller's buffer: ``readinto(view)``
    returns how many bytes it put there, 0 at the end (or when the client went
    away mid-body). It errs as ``read_piece`` does, and raises what
    ``too_large()`` makes once more than ``limit`` bytes have come.

    A Content-Length body under gunicorn is received straight from the socket
    into the view (the kernel's copy is the only one); gunicorn's reader is
    kept told how much is left, so it can still discard the rest of a refused
    body. Anything else (chunked, another server) is read in pieces and copied in.
    """

    def __init__(self, limit: int | None = None, too_large=None):
        self.limit = limit
        self.too_large = too_large
        self.received = 0
        stream = request_body()
        self._stream = stream
        direct = isinstance(stream, LengthReader) and hasattr(getattr(stream.unreader, "sock", None), "recv_into")
        self._length_reader = stream if direct else None
        self._early: memoryview | None = None  # body bytes gunicorn read along with the headers

    def readinto(self, view: memoryview) -> int:
        count = self._direct(view) if self._length_reader is not None else self._copied(view)
        self.received += count
        if self.limit is not None and self.received > self.limit:
            raise self.too_large()
        if not count and (guard := _guard_of(self._stream)) is not None and guard.stalled:
            raise RequestTimeout(guard.stalled)
        return count

    def _copied(self, view: memoryview) -> int:
        piece = read_piece(self._stream, min(len(view), READ_SIZE))
        view[:len(piece)] = piece
        return len(piece)

    def _direct(self, view: memoryview) -> int:
        reader = self._length_reader
        if self._early is None:
            # What gunicorn's unreader holds past the headers: this body's first
            # bytes, and (pipelined) maybe the next request's, which stay there.
            held = reader.unreader.buf.getvalue()
            mine, rest = held[:reader.length], held[reader.length:]
            reader.unreader.buf = io.BytesIO()
            reader.unreader.buf.write(rest)
            reader.length -= len(mine)
            self._early = memoryview(mine)
        if self._early:
            count = min(len(view), len(self._early))
            view[:count] = self._early[:count]
            self._early = self._early[count:]
            return count
        if reader.length <= 0:
            return 0
        try:
            count = reader.unreader.sock.recv_into(view[:reader.length])
        except OSError:  # the client went away: what arrived is kept
            count = 0
        reader.length -= count
        return count


def _guard_of(stream) -> "ClientGuard | None":
    unreader = getattr(stream, "unreader", None) or getattr(getattr(stream, "req", None), "unreader", None)
    guard = getattr(unreader, "sock", None)
    return guard if isinstance(guard, ClientGuard) else None


# Below this many unread bytes, the rest of a refused body is read before the
# answer; above it, the answer goes first so a client like curl can stop
# sending at once.
ANSWER_FIRST_ABOVE = 32 * 1024 * 1024


def drain_then_close(response: Response, limit: int) -> Response:
    """Make sure a client still sending a body we refused gets our answer.

    Closing a socket with unread data makes the kernel reset it and the
    client loses the answer, so the rest of the body (up to ``limit`` bytes)
    is read and dropped. Usually that happens before answering: gunicorn's
    threaded worker does not notice a next request that arrived while it was
    still reading this body, so a client that read an early answer and sent
    its next request on the same connection would wait for nothing. A large
    remainder, or a chunked body (whose end is unknown: it may never come),
    is answered first (curl stops sending when it sees it), then read up to
    ``limit`` bytes, and the connection is closed."""
    stream = request_body()

    def drain():
        left = limit
        try:
            while left > 0 and (chunk := stream.read(min(READ_SIZE, left))):
                left -= len(chunk)
        except Exception:  # a client that hangs up (or stalls) mid-body is fine here
            pass

    remaining = getattr(stream, "length", None)  # gunicorn's Content-Length reader
    chunked = hasattr(stream, "parse_chunked")  # gunicorn's chunked reader
    if not chunked and (remaining is None or remaining <= ANSWER_FIRST_ABOVE):
        drain()
        return response
    body = response.get_data()

    def answer_then_drain():
        yield body
        drain()

    response.response = answer_then_drain()
    # Honoured by the gateway's worker (gunicorn itself ignores an application's Connection header).
    response.headers["Connection"] = "close"
    return response


# --- deadlines for slow and silent clients ---


class ClientGuard:
    """Stands in for the client's socket in gunicorn's request parser, so that
    every receive of a body has a deadline: a read waits at most
    ``idle_timeout`` seconds for the next bytes, and over each
    ``idle_timeout``-long stretch the body must average at least ``min_rate``
    bytes per second. (The request line and headers have theirs in the
    worker's event loop, which hands a connection over only once they are whole.)

    A body it gives up on ends there, as if the client had closed: what did
    arrive is still read (tus keeps it), then ``read_piece`` raises
    RequestTimeout with the reason in ``stalled`` (POST /upload answers 408).
    Every later receive is an end of stream too, so gunicorn closes the
    connection instead of waiting again. 0 turns a limit off.
    """

    def __init__(self, sock, idle_timeout: float, min_rate: float):
        self.sock = sock
        self.idle_timeout = idle_timeout
        self.min_rate = min_rate
        # Why the body was given up (a sentence for the client), or None.
        self.stalled: str | None = None
        self._window_start = time.monotonic()
        self._window_bytes = 0

    def expect_body(self) -> None:
        """A request's headers are in: the application reads its body from now on."""
        self._window_start, self._window_bytes = time.monotonic(), 0

    def recv(self, size: int) -> bytes:
        return self._receive(self.sock.recv, size, b"")

    def recv_into(self, view) -> int:
        return self._receive(self.sock.recv_into, view, 0)

    def _receive(self, receive, into, nothing):
        if self.stalled:
            return nothing
        idle = self.idle_timeout if self.idle_timeout > 0 else None
        # Only when it changes: each settimeout switches the socket's blocking mode
        # (two system calls), which on every 256 KiB of a body cost more than the copy.
        if self.sock.gettimeout() != idle:
            self.sock.settimeout(idle)  # for sending too: a client that does not take its answer is given up
        try:
            got = receive(into)
        except TimeoutError:
            self.stalled = (f"Nothing more of the request arrived for {self.idle_timeout:g} seconds, so the "
                            "gateway stopped waiting for it; nothing was stored.")
            return nothing
        if self.min_rate > 0 and idle is not None:
            self._count(got if isinstance(got, int) else len(got))
        return got

    def _count(self, received: int) -> None:
        self._window_bytes += received
        now = time.monotonic()
        elapsed = now - self._window_start
        if elapsed < self.idle_timeout:
            return
        if self._window_bytes < self.min_rate * elapsed:
            self.stalled = (f"The request body arrived at {self._window_bytes / elapsed:.0f} bytes per second, "
                            f"slower than the {self.min_rate:g} the gateway waits for; nothing was stored.")
        self._window_start, self._window_bytes = now, 0

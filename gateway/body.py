"""The request body as a stream, read in large pieces.

gunicorn's ``wsgi.input`` assembles every read from 1 KiB reads of its inner
reader, fed by 8 KiB ``recv`` calls: profiling a 512 MiB upload put 61% of the
request thread there. Its inner reader (which honours Content-Length and
chunked framing) gives what is asked in one piece, so the gateway reads that,
with 256 KiB receives. Anything else (another server, a test client, a body
already partly read) gets werkzeug's ``request.stream`` as usual.
"""
from __future__ import annotations

from flask import Response, request
from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData, ParseException
from werkzeug.exceptions import ClientDisconnected

from protos.errors import InvalidInput

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
    raises InvalidInput."""
    try:
        return stream.read(size)
    except (InvalidChunkSize, ChunkMissingTerminator, ParseException) as exc:
        raise InvalidInput(f"The request body's chunked encoding is broken ({type(exc).__name__}).") from None
    except (ClientDisconnected, NoMoreData, OSError):
        return b""


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
    its next request on the same connection would wait for nothing. Only a
    large remainder is answered first (curl stops sending when it sees it)."""
    stream = request_body()

    def drain():
        left = limit
        try:
            while left > 0 and (chunk := stream.read(min(READ_SIZE, left))):
                left -= len(chunk)
        except Exception:  # a client that hangs up mid-body is fine here
            pass

    remaining = getattr(stream, "length", None)  # gunicorn's Content-Length reader
    if remaining is None or remaining <= ANSWER_FIRST_ABOVE:
        drain()
        return response
    body = response.get_data()

    def answer_then_drain():
        yield body
        drain()

    response.response = answer_then_drain()
    response.headers["Connection"] = "close"
    return response

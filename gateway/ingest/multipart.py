"""multipart/form-data read as a stream, file data handed out without a copy.

Why not werkzeug's ``MultipartDecoder`` (used until this module): it copies
every byte of a file three times (into its buffer, into a slice it searches
for a partial boundary, into the bytes of each ``Data`` event), and those
copies plus gunicorn's were most of the gateway's time on a large upload.
Here the body is received straight into one fixed buffer (``readinto``) and
file data is given out as ``memoryview`` slices of it, so the only copies
left are the kernel's: socket to buffer, buffer to file.

What it accepts is werkzeug's grammar, not a second one: the same regular
expressions for boundary lines and the blank line after a part's headers
(imported from werkzeug, or built the way it builds them), the same header
parsing, the same events (``File``, ``Field``, ``Data``, ``Epilogue``).
tests/gateway/test_multipart.py checks both give the same parts and bytes
for generated bodies cut at every kind of place.

A ``Data`` event's ``data`` is a view into one of the reader's two buffers,
which take turns: it stays intact until the reader is about to fill that
buffer again, which it announces by calling ``before_reuse(buffer)`` (never
before the next event is asked for). A consumer that keeps a view longer
(a hash running on another thread, so that it overlaps the next receive)
waits for it there.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

from werkzeug.datastructures import Headers
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import (BLANK_LINE_RE, HEADER_CONTINUATION_RE, LINE_BREAK, LINE_BREAK_RE, Data,
                                       Epilogue, Event, Field, File)

from protos.errors import InvalidInput

BUFFER_SIZE = 1024 * 1024
# A preamble, a part's header block or a boundary line (with its padding) must
# fit in this much; anything longer is abuse, not a form.
MAX_PENDING = 64 * 1024
CR, LF = 13, 10
# What follows "--boundary" on a boundary line, as werkzeug's regular expressions
# have it: "--" (the closing one) and maybe a line break, or a line break, either
# after optional blanks. Matched after a bytes.find of "--boundary", so no
# expression is compiled per request (each has its own boundary: werkzeug's
# compiling cost 0.8 ms of every small upload).
_BOUNDARY_LINE_END = re.compile(rb"(--[^\S\n\r]*%s?|[^\S\n\r]*%s)" % (LINE_BREAK, LINE_BREAK))
# After "--boundary": what may still turn into a delimiter once more arrives.
_UNDECIDED = re.compile(rb"-?|[^\S\r\n]*")
WAIT = object()

ENDED_EARLY = "The multipart body ended before its closing boundary."
TOO_LONG = "The multipart body is malformed: a preamble or part header that is too long (over 64 KiB)."


class MultipartReader:
    """Iterate over the events of one multipart body.

    ``source.readinto(view)`` gives the next body bytes (0 at the end); its
    errors (too large, timed out) pass through. Malformed bodies raise
    InvalidInput with a sentence saying what is wrong.
    """

    def __init__(self, source, boundary: bytes, *, max_parts: int, buffer_size: int = BUFFER_SIZE,
                 before_reuse=None):
        self._source = source
        self._before_reuse = before_reuse
        self._max_parts = max_parts
        self._dash = b"--" + boundary
        # A delimiter ("\r\n--boundary") cut by the end of the buffer starts in this many last bytes.
        self._tail = len(self._dash) + 2
        size = max(buffer_size, 2 * MAX_PENDING)
        self._buffers = (bytearray(size), bytearray(size))
        self._views = tuple(memoryview(b) for b in self._buffers)
        self._buf, self._view = self._buffers[0], self._views[0]
        self._start = self._end = 0
        self._eof = False

    def __iter__(self) -> Iterator[Event]:
        closing = self._preamble()
        parts = 0
        while not closing:
            parts += 1
            if parts > self._max_parts:
                raise InvalidInput(f"The multipart body has more than {self._max_parts} parts.")
            yield self._part_headers()
            closing = yield from self._part_data()
        yield Epilogue(data=b"")

    # --- reading ---

    def _fill(self) -> bool:
        """Read more after the bytes not consumed yet, in the other buffer
        (they move to its start); False at the end of the body."""
        if self._eof:
            return False
        pending = self._end - self._start
        if pending >= MAX_PENDING:
            raise InvalidInput(TOO_LONG)
        other = 1 if self._buf is self._buffers[0] else 0
        if self._before_reuse is not None:
            self._before_reuse(self._buffers[other])
        self._views[other][:pending] = self._view[self._start:self._end]  # a few bytes, usually
        self._buf, self._view = self._buffers[other], self._views[other]
        self._start, self._end = 0, pending
        received = self._source.readinto(self._view[self._end:])
        if not received:
            self._eof = True
            return False
        self._end += received
        return True

    def _line_end(self, buf: bytearray, at: int, end: int) -> re.Match | object | None:
        """What follows the "--boundary" at ``at``: the match of the rest of a
        boundary line, WAIT while more bytes may still make it one (a line
        ending in "\\r" may become "\\r\\n"), None if it is not one."""
        after = at + len(self._dash)
        match = _BOUNDARY_LINE_END.match(buf, after, end)
        if match is not None and (self._eof or match.end() < end or buf[end - 1] != CR):
            return match
        if match is not None or (not self._eof and _UNDECIDED.fullmatch(buf, after, end)):
            return WAIT
        return None

    # --- the grammar ---

    def _preamble(self) -> bool:
        """Skip to the first boundary; True if it is already the closing one.
        As werkzeug: it need not start a line; the closing one ("--" after it)
        may lack its line break."""
        search = self._start
        while True:
            buf, end = self._buf, self._end
            while (at := buf.find(self._dash, search, end)) != -1:
                match = self._line_end(buf, at, end)
                if match is WAIT:
                    break
                if match is not None:
                    self._start = match.end()
                    return match.group(1).startswith(b"--")
                search = at + 1
            # Search again from where the boundary could still begin (the fill moves the bytes).
            resume = (at if at != -1 else max(search, end - len(self._dash))) - self._start
            if not self._fill():
                raise InvalidInput("The multipart body is malformed: the boundary its Content-Type names "
                                   "never starts a part.")
            search = self._start + resume

    def _part_headers(self) -> Event:
        while (match := BLANK_LINE_RE.search(self._buf, self._start, self._end)) is None:
            if not self._fill():
                raise InvalidInput(ENDED_EARLY)
        headers = _parse_headers(self._buf[self._start:match.start()])
        # As werkzeug: the headers end after the blank line's first line break;
        # the second is skipped where the data starts (see _part_data).
        self._start = (match.start() + match.end()) // 2

        if "content-disposition" not in headers:
            raise InvalidInput("The multipart body is malformed: a part has no Content-Disposition header.")
        _, options = parse_options_header(headers["content-disposition"])
        name, filename = options.get("name"), options.get("filename")
        if filename is not None:
            return File(name=name, filename=filename, headers=headers)
        return Field(name=name, headers=headers)

    def _part_data(self) -> Iterator[Data]:
        """Yield the part's bytes up to the next delimiter; return whether that
        was the closing one."""
        dash = self._dash
        # Until the first bytes are given out, the buffer starts with the line
        # break that ends the headers' blank line. werkzeug skips it, yet lets
        # that same line break begin the delimiter: "\r\n\r\n--boundary" ends
        # an empty part (werkzeug's own test client sends that).
        first = True
        while True:
            buf, start, end = self._buf, self._start, self._end
            data_start = start
            if first:
                if end - start < 2 and self._fill():
                    continue  # "\r" or "\r\n": the next byte says
                buf, start, end = self._buf, self._start, self._end  # the fill may have moved them
                data_start = LINE_BREAK_RE.match(buf, start, end).end()
            keep = None  # where the bytes that might begin a delimiter start
            search = data_start
            while (at := buf.find(dash, search, end)) != -1:
                line_break = _line_break_before(buf, at, start)
                match = self._line_end(buf, at, end) if line_break is not None else None
                if match is WAIT:
                    keep = line_break
                    break
                if match is not None:
                    self._start = match.end()
                    yield Data(data=self._view[data_start:max(data_start, line_break)], more_data=False)
                    return match.group(1).startswith(b"--")
                search = at + 1
            if keep is None:
                # From ``start``, not ``data_start``: a skipped line break may begin the delimiter too.
                keep = _first_line_break(buf, max(start, end - self._tail), end)
            if keep > data_start:
                self._start, first = keep, False
                yield Data(data=self._view[data_start:keep], more_data=True)
            if not self._fill():
                raise InvalidInput(ENDED_EARLY)


def _line_break_before(buf: bytearray, at: int, start: int) -> int | None:
    """Where the line break just before ``at`` begins (CRLF, LF or CR, not before ``start``)."""
    if at - 2 >= start and buf[at - 2] == CR and buf[at - 1] == LF:
        return at - 2
    if at - 1 >= start and buf[at - 1] in (CR, LF):
        return at - 1
    return None


def _first_line_break(buf: bytearray, start: int, end: int) -> int:
    cr, lf = buf.find(b"\r", start, end), buf.find(b"\n", start, end)
    found = [i for i in (cr, lf) if i != -1]
    return min(found) if found else end


def _parse_headers(block: bytes | bytearray) -> Headers:
    """A part's header block, as werkzeug reads it (folded lines joined)."""
    headers = []
    for line in HEADER_CONTINUATION_RE.sub(b" ", block).splitlines():
        line = line.strip(b" \t")
        if line:
            try:
                name, _, value = line.decode().partition(":")
            except UnicodeDecodeError:
                raise InvalidInput("The multipart body is malformed: a part header is not UTF-8.") from None
            headers.append((name.strip(" \t"), value.strip(" \t")))
    return Headers(headers)

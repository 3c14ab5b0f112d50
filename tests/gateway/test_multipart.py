"""gateway/ingest/multipart.py reads what werkzeug's MultipartDecoder reads, the same
way, however the body is cut into reads, and never hands out a delimiter's
bytes as data."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from gateway.ingest.multipart import MAX_PENDING, MultipartReader
from protos.errors import InvalidInput

BOUNDARY = b"----bnd7MA4YWxkTrZu0gW"


class Pieces:
    """A body given to the reader in reads of random sizes (1 byte and up)."""

    def __init__(self, body: bytes, seed: int, largest: int = 700):
        self.body, self.at, self.random = body, 0, random.Random(seed)
        self.largest = largest

    def readinto(self, view) -> int:
        size = min(len(view), self.random.randint(1, self.largest), len(self.body) - self.at)
        view[:size] = self.body[self.at:self.at + size]
        self.at += size
        return size


def parts_of(events) -> list[tuple]:
    """Events folded into (kind, name, filename, headers, bytes) per part, plus the end."""
    parts, done = [], False
    for event in events:
        if isinstance(event, (File, Field)):
            parts.append([type(event).__name__, event.name, getattr(event, "filename", None),
                          sorted(event.headers.items()), b""])
        elif isinstance(event, Data):
            parts[-1][4] += bytes(event.data)
        elif isinstance(event, Epilogue):
            done = True
            break
    return [tuple(p) for p in parts] + [("end", done)]


def ours(body: bytes, seed: int, largest: int = 700, buffer_size: int = 4096) -> list[tuple]:
    return parts_of(MultipartReader(Pieces(body, seed, largest), BOUNDARY, max_parts=1000,
                                    buffer_size=buffer_size))


def werkzeugs(body: bytes) -> list[tuple]:
    decoder = MultipartDecoder(BOUNDARY)
    decoder.receive_data(body)
    decoder.receive_data(None)

    def events():
        while not isinstance(event := decoder.next_event(), NeedData):
            yield event
            if isinstance(event, Epilogue):
                return
    return parts_of(events())


def encode(parts, line_break=b"\r\n", preamble=b"", epilogue=b"\r\n") -> bytes:
    body = preamble
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += b"--" + BOUNDARY + line_break
        body += b"Content-Disposition: " + disposition.encode() + line_break
        if filename is not None:
            body += b"Content-Type: application/octet-stream" + line_break
        body += line_break + data + line_break
    return body + b"--" + BOUNDARY + b"--" + epilogue


# Data that is hard on a boundary scanner: line breaks, dashes and pieces of the boundary itself.
tricky_bytes = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"-", b"--", b"x", b" ", b"\t", b"\x00\xff",
                                         b"--" + BOUNDARY[:5], b"\r\n--" + BOUNDARY[:-1], b"--" + BOUNDARY + b"x",
                                         b"\r\n--" + BOUNDARY + b"-x", bytes(range(256))]),
                        max_size=40).map(b"".join)
names = st.text(st.characters(codec="utf-8", exclude_characters='"\r\n\\'), min_size=1, max_size=12)
# Reads of a few bytes cut every boundary line and blank line in every possible place.
read_sizes = st.sampled_from([2, 7, 64, 700])
parts = st.lists(st.tuples(st.sampled_from(["file", "expires_in", "other"]),
                           st.one_of(st.none(), names), tricky_bytes), min_size=0, max_size=5)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(parts=parts, line_break=st.sampled_from([b"\r\n", b"\n"]), seed=st.integers(0, 2**32), largest=read_sizes,
       preamble=st.sampled_from([b"", b"ignored preamble\r\n", b"\r\n"]),
       epilogue=st.sampled_from([b"", b"\r\n", b"\r\nepilogue"]))
def test_well_formed_bodies_read_as_werkzeug_reads_them(parts, line_break, seed, largest, preamble, epilogue):
    body = encode(parts, line_break, preamble, epilogue)
    expected = werkzeugs(body)
    assert expected[-1] == ("end", True)
    assert ours(body, seed, largest) == expected
    if line_break == b"\r\n":  # with bare LF framing, data ending in "\r" is ambiguous (for werkzeug too)
        assert [p[4] for p in expected[:-1]] == [data for _, _, data in parts]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(parts=parts, seed=st.integers(0, 2**32), largest=read_sizes, cut=st.integers(0, 10**6), junk=tricky_bytes)
def test_damaged_bodies_are_refused_with_a_sentence_or_read_as_werkzeug_reads_them(parts, seed, largest, cut, junk):
    body = encode(parts)
    at = cut % (len(body) + 1)
    damaged = body[:at] + junk + body[at + len(junk) // 2:]
    try:
        got = ours(damaged, seed, largest)
    except InvalidInput as exc:
        assert exc.message.endswith(".")
        return
    try:
        expected = werkzeugs(damaged)
    except ValueError:
        expected = None
    if expected is not None and expected[-1] == ("end", True):
        assert got == expected


@pytest.mark.parametrize("largest", [1, 2, 3, 5, 700])
def test_a_header_block_ending_in_cr_cr_lf_lets_that_line_break_begin_the_delimiter(largest):
    # Found by the test above: the blank line is "\r\r", the data starts after "\r\n",
    # and that same "\r\n" begins the delimiter of this empty part.
    body = (b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="a"; filename="a"\r\nX: 0\r\r\n--'
            + BOUNDARY + b'\r\nContent-Disposition: form-data; name="b"\r\n\r\n\r\n--' + BOUNDARY + b"--\r\n")
    assert [p[:2] + p[4:] for p in ours(body, seed=0, largest=largest)] == [
        ("File", "a", b""), ("Field", "b", b""), ("end", True)]
    assert ours(body, seed=0, largest=largest) == werkzeugs(body)


def test_a_file_part_s_bytes_come_out_whole_across_a_large_body():
    data = (b"line one\r\n--" + BOUNDARY[:-2] + b"\r\n" + bytes(range(256))) * 20000  # ~5 MiB
    body = encode([("file", "big.bin", data), ("expires_in", None, b"3600")])
    got = ours(body, seed=7, largest=300_000, buffer_size=1024 * 1024)
    assert got[0][4] == data and got[1][4] == b"3600" and got[-1] == ("end", True)


def test_file_data_is_handed_out_as_views_not_copies():
    body = encode([("file", "a.bin", b"x" * 200_000)])
    events = MultipartReader(Pieces(body, 1, largest=65536), BOUNDARY, max_parts=10, buffer_size=128 * 1024)
    data = [e for e in events if isinstance(e, Data)]
    assert data and all(isinstance(e.data, memoryview) for e in data)


@pytest.mark.parametrize("body, sentence", [
    (b"no boundary anywhere", "never starts a part"),
    (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc",
     "ended before its closing boundary"),
    (b"--" + BOUNDARY + b"\r\nContent-Type: text/plain\r\n\r\nabc\r\n--" + BOUNDARY + b"--",
     "no Content-Disposition"),
    (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"\xff\"\r\n\r\nabc\r\n--" + BOUNDARY + b"--",
     "not UTF-8"),
    (b"--" + BOUNDARY + b"\r\nX-Long: " + b"a" * (MAX_PENDING + 10), "too long"),
    (b"x" * (MAX_PENDING + 10), "too long"),
    (b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc\r\n--"
     + BOUNDARY + b" " * (MAX_PENDING + 10), "too long"),
])
def test_malformed_bodies_are_refused_with_a_sentence(body, sentence):
    with pytest.raises(InvalidInput) as raised:
        ours(body, seed=3, largest=5000, buffer_size=4096)
    assert sentence in raised.value.message


def test_too_many_parts_are_refused():
    body = encode([("other", None, b"v")] * 11)
    with pytest.raises(InvalidInput, match="more than 10 parts"):
        parts_of(MultipartReader(Pieces(body, 5), BOUNDARY, max_parts=10))


@settings(max_examples=100, deadline=None)
@given(parts=parts, seed=st.integers(0, 2**32))
def test_a_view_stays_intact_until_its_buffer_is_announced_for_reuse(parts, seed):
    """The contract a hash on another thread relies on: a Data view's bytes do
    not change before before_reuse() names its buffer."""
    kept: list[tuple[memoryview, bytes]] = []

    def before_reuse(buffer):
        for view, copy in [k for k in kept if k[0].obj is buffer]:
            assert bytes(view) == copy
            kept.remove((view, copy))

    body = encode(parts)
    reader = MultipartReader(Pieces(body, seed, largest=100_000), BOUNDARY, max_parts=100,
                             buffer_size=1, before_reuse=before_reuse)
    for event in reader:
        if isinstance(event, Data) and len(event.data):
            kept.append((event.data, bytes(event.data)))
    assert all(bytes(view) == copy for view, copy in kept)

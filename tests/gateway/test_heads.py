"""The event loop's view of a request head (gateway/serving/heads.py): where it
ends, and when it can be refused before it ends, however its bytes are split."""
from __future__ import annotations

import pytest
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine

from gateway.serving.heads import Head

REQUEST = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n"
HEAD_END = REQUEST.index(b"\r\n\r\n") + 4


def fed(pieces, line_limit: int = 4094, block_limit: int = 65536) -> Head:
    head = Head(line_limit, block_limit)
    for piece in pieces:
        head.feed(piece)
    return head


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(REQUEST)])
def test_the_head_ends_at_the_blank_line_however_the_bytes_are_split(size):
    pieces = [REQUEST[i:i + size] for i in range(0, len(REQUEST), size)]
    head = fed(pieces)
    assert head.complete and head.end == HEAD_END
    assert head.take() == REQUEST  # the body's start and the next request are kept, in order


def test_a_head_is_not_complete_until_its_blank_line():
    head = fed([REQUEST[:HEAD_END - 1]])
    assert not head.complete
    head.feed(b"\n")
    assert head.complete


def test_a_request_without_headers_ends_after_its_line():
    assert fed([b"GET / HTTP/1.0\r\n", b"\r\n"]).end == len(b"GET / HTTP/1.0\r\n\r\n")


def test_a_request_line_over_the_limit_is_refused_before_it_ends():
    head = Head(100, 65536)
    head.feed(b"GET /" + b"a" * 97)  # 102 bytes: could still be 100 and a line end
    with pytest.raises(LimitRequestLine):
        head.feed(b"a")


def test_a_finished_request_line_over_the_limit_is_refused():
    with pytest.raises(LimitRequestLine):
        fed([b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHo"], line_limit=100)


def test_long_headers_are_fine_within_the_block_limit():
    head = fed([b"GET / HTTP/1.1\r\n", b"X-Long: " + b"v" * 5000 + b"\r\n", b"\r\n"], line_limit=100)
    assert head.complete


def test_a_head_over_the_block_limit_is_refused_whole_or_not():
    with pytest.raises(LimitRequestHeaders):
        fed([b"GET / HTTP/1.1\r\n"] + [b"X-Filler: 123456789\r\n"] * 60, block_limit=1000)
    with pytest.raises(LimitRequestHeaders):
        fed([b"GET / HTTP/1.1\r\n" + b"X-Filler: 123456789\r\n" * 60 + b"\r\n"], block_limit=1000)


def test_a_large_body_after_a_small_head_is_not_counted_against_the_block():
    head = fed([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"b" * 5000], block_limit=1000)
    assert head.complete and len(head.take()) > 5000

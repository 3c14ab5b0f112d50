"""The upload hash is the same whether computed inline or on its own thread."""
from __future__ import annotations

import hashlib
import os
import threading

from gateway.ingest.hashing import StreamHasher


def test_large_streams_hash_on_a_thread_and_agree_with_hashlib():
    pieces = [os.urandom(256 * 1024) for _ in range(12)]
    hasher = StreamHasher(inline_below=512 * 1024)
    before = threading.active_count()
    for piece in pieces:
        hasher.update(piece)
    assert threading.active_count() == before + 1
    assert hasher.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert threading.active_count() == before


def test_small_streams_hash_inline():
    hasher = StreamHasher()
    before = threading.active_count()
    hasher.update(b"hello")
    assert threading.active_count() == before
    assert hasher.hexdigest() == hashlib.sha256(b"hello").hexdigest()


def test_an_abandoned_stream_leaves_no_thread():
    before = threading.active_count()
    hasher = StreamHasher(inline_below=0)
    hasher.update(b"x" * 1000)
    assert threading.active_count() == before + 1
    hasher.close()
    assert threading.active_count() == before


def test_a_submitted_view_is_hashed_before_its_buffer_is_released():
    buffer = bytearray(os.urandom(2 * 1024 * 1024))
    expected = hashlib.sha256(bytes(buffer)).hexdigest()
    hasher = StreamHasher(inline_below=0)
    hasher.submit(memoryview(buffer))
    hasher.release(buffer)  # waits for the hash of that piece
    buffer[:] = bytes(len(buffer))  # the caller reuses its buffer
    assert hasher.hexdigest() == expected

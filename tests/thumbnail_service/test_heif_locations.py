"""Hostile HEIF/AVIF item tables (iloc): a few bytes must not make the stripper build millions
of spans, or join a file-sized item thousands of times over. Both are refused as damaged, at
once, by the stripper itself (a render child's budget would stop it only after burning it)."""
from __future__ import annotations

import struct

import pytest

from protos.errors import InvalidInput
from thumbnail_service.metadata import strip_heif


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full(kind: bytes, version: int, body: bytes) -> bytes:
    return box(kind, bytes([version, 0, 0, 0]) + body)


FTYP = box(b"ftyp", b"avif\0\0\0\0avif")


def test_extents_that_take_no_bytes_are_refused():
    # 100 items of 6 bytes, each claiming 65535 extents whose fields all have size 0.
    items = b"".join(struct.pack(">HHH", i, 0, 0xFFFF) for i in range(100))
    data = FTYP + full(b"meta", 0, full(b"iloc", 0, struct.pack(">HH", 0, 100) + items))
    with pytest.raises(InvalidInput, match="locations are damaged"):
        strip_heif(data, "strip-location")


def test_an_exif_item_whose_extents_claim_the_file_many_times_over_is_refused():
    infe = full(b"infe", 2, struct.pack(">HH4s", 1, 0, b"Exif") + b"\0")
    iinf = full(b"iinf", 0, struct.pack(">H", 1) + infe)

    def build(length: int, extents: int = 300) -> bytes:
        # iloc v0, length_size 4 (no offset): one item, each extent the whole file long.
        iloc = full(b"iloc", 0, struct.pack(">HH", 0x0400, 1) + struct.pack(">HHH", 1, 0, extents)
                    + struct.pack(">I", length) * extents)
        return FTYP + full(b"meta", 0, iinf + iloc) + box(b"free", bytes(64 * 1024))

    data = build(len(build(0)))
    with pytest.raises(InvalidInput, match="outside the file"):
        strip_heif(data, "strip-location")

"""Whether an image's container holds any metadata at all (EXIF, XMP, IPTC, comments, text
chunks), read by walking its structure, never by decoding it.

Most images carry none (screenshots, exports, images made by programs): then the shipped
``image_metadata`` transform has nothing to remove and the file is stored byte for byte without a
call to the thumbnail service, and with that service down such an image is still stored (the
uploads degrade as they did before IMAGE_METADATA). Anything this walk cannot vouch for counts as
carrying metadata: a type it does not know (HEIC, AVIF), a structure it cannot follow, a JPEG with
more images in it (MPF)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

# JPEG markers whose segments hold metadata: APP1 (Exif, XMP), APP13 (Photoshop IRB, IPTC), COM.
_JPEG_METADATA = {0xE1, 0xED, 0xFE}
_PNG_METADATA = {b"eXIf", b"iTXt", b"tEXt", b"zTXt"}
_WEBP_METADATA = {b"EXIF", b"XMP "}


class _Unclear(Exception):
    """The structure ended or broke before the walk could say."""


class _Reader:
    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buffer = b""

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise _Unclear()
            self._buffer += bytes(chunk)
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def skip(self, n: int) -> None:
        while n > len(self._buffer):
            n -= len(self._buffer)
            chunk = next(self._chunks, None)
            if chunk is None:
                raise _Unclear()
            self._buffer = bytes(chunk)
        self._buffer = self._buffer[n:]


def carries_metadata(chunks: Iterable[bytes], mime_type: str) -> bool:
    """False only when the whole structure was walked and no metadata was found."""
    walk = {"image/jpeg": _jpeg, "image/png": _png, "image/webp": _webp}.get(mime_type)
    if walk is None:
        return True
    try:
        return walk(_Reader(chunks))
    except _Unclear:
        return True


def _jpeg(reader: _Reader) -> bool:
    if reader.read(2) != b"\xff\xd8":
        raise _Unclear()
    while True:
        if reader.read(1) != b"\xff":
            raise _Unclear()
        marker = reader.read(1)[0]
        while marker == 0xFF:  # fill bytes
            marker = reader.read(1)[0]
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no metadata came before
            return False
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length
            continue
        length = int.from_bytes(reader.read(2), "big")
        if length < 2:
            raise _Unclear()
        if marker in _JPEG_METADATA:
            return True
        body = reader.read(min(length - 2, 4))
        if marker == 0xE2 and body.startswith(b"MPF"):  # more images follow, each with its own EXIF
            return True
        reader.skip(length - 2 - len(body))


def _png(reader: _Reader) -> bool:
    if reader.read(8) != b"\x89PNG\r\n\x1a\n":
        raise _Unclear()
    while True:
        length = int.from_bytes(reader.read(4), "big")
        kind = reader.read(4)
        if kind in _PNG_METADATA:
            return True
        if kind == b"IEND":
            return False
        reader.skip(length + 4)  # the data and its CRC


def _webp(reader: _Reader) -> bool:
    header = reader.read(12)
    if header[:4] != b"RIFF" or header[8:] != b"WEBP":
        raise _Unclear()
    remaining = int.from_bytes(header[4:8], "little") - 4
    while remaining > 0:
        kind, size = reader.read(4), int.from_bytes(reader.read(4), "little")
        if kind in _WEBP_METADATA:
            return True
        padded = size + (size & 1)
        reader.skip(padded)
        remaining -= 8 + padded
    return False

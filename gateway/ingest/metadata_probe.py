"""Whether an image's container holds any metadata at all (EXIF, XMP, IPTC, comments, text
chunks), read by walking its structure, never by decoding it.

Most images carry none (screenshots, exports, images made by programs): then the shipped
``image_metadata`` transform has nothing to remove and the file is stored byte for byte without a
call to the thumbnail service, and with that service down such an image is still stored (the
uploads degrade as they did before IMAGE_METADATA). Anything this walk cannot vouch for counts as
carrying metadata: a type it does not know (HEIC, AVIF), a structure it cannot follow, a JPEG with
more pictures in it (MPF, or any picture after the first one's scan: the service's stripper edits the
EXIF of every picture it finds there, so the probe must not vouch for a file it would change)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

# JPEG markers whose segments hold metadata: APP1 (Exif, XMP), APP13 (Photoshop IRB, IPTC), COM.
_JPEG_METADATA = {0xE1, 0xED, 0xFE}
_PNG_METADATA = {b"eXIf", b"iTXt", b"tEXt", b"zTXt"}
_WEBP_METADATA = {b"EXIF", b"XMP "}


MAX_STEPS = 10_000


class _Unclear(Exception):
    """The structure ended or broke before the walk could say."""


class _Reader:
    """Reads over the chunks by position: slicing the rest of a chunk off at every read
    copied it each time, quadratic in the chunk's size (a 1 MiB PNG of empty chunks took
    5 s of the gateway's CPU)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._chunk = b""
        self._at = 0
        self.steps = 0

    def _next(self) -> None:
        chunk = next(self._chunks, None)
        if chunk is None:
            raise _Unclear()
        self._chunk, self._at = chunk, 0

    def read(self, n: int) -> bytes:
        if self._at + n <= len(self._chunk):  # the common case: within the chunk at hand
            data = bytes(self._chunk[self._at:self._at + n])
            self._at += n
            return data
        parts, need = [], n
        while need:
            if self._at >= len(self._chunk):
                self._next()
            part = self._chunk[self._at:self._at + need]
            self._at += len(part)
            need -= len(part)
            parts.append(bytes(part))
        return b"".join(parts)

    def skip(self, n: int) -> None:
        while n > len(self._chunk) - self._at:
            n -= len(self._chunk) - self._at
            self._next()
        self._at += n

    def rest_contains(self, pattern: bytes) -> bool:
        """Whether ``pattern`` occurs in what is left, read to the end."""
        window = bytes(self._chunk[self._at:])
        while pattern not in window:
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            window = window[-(len(pattern) - 1):] + bytes(chunk)
        return True

    def step(self) -> None:
        """One more structure walked; past MAX_STEPS the file counts as carrying metadata
        (a genuine image has tens of segments or chunks, not tens of thousands)."""
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _Unclear()


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
        reader.step()
        if reader.read(1) != b"\xff":
            raise _Unclear()
        marker = reader.read(1)[0]
        while marker == 0xFF:  # fill bytes
            reader.step()
            marker = reader.read(1)[0]
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no metadata came before
            # Another picture after it (SOI and a marker: entropy-coded data never holds 0xFF 0xD8)
            # may carry its own; the walk reads on to the end for one.
            return reader.rest_contains(b"\xff\xd8\xff")
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
        reader.step()
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
        reader.step()
        kind, size = reader.read(4), int.from_bytes(reader.read(4), "little")
        if kind in _WEBP_METADATA:
            return True
        padded = size + (size & 1)
        reader.skip(padded)
        remaining -= 8 + padded
    return False

"""Image builders for tests (beyond the genuine samples in samples.py): small
crafted headers, and large genuine images of noise, made at test time (never
kept in git)."""
from __future__ import annotations

import io
import os
import random
import struct
import zlib

from PIL import Image


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height with one tiny IDAT: what a
    pixel-flood file looks like (tiny on disk, enormous when decoded)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


def jpeg_with_orientation(width: int, height: int, orientation: int) -> bytes:
    """A JPEG stored width x height whose EXIF says how to turn it for display.
    The left third is red so the tests can tell where it went."""
    im = Image.new("RGB", (width, height), "blue")
    im.paste("red", (0, 0, width // 3, height))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", exif=exif.tobytes(), quality=90)


def progressive_scan_bomb(side: int = 5000, scans: int = 3000) -> bytes:
    """An ordinary progressive JPEG header of a side x side image, followed by
    ``scans`` empty 10-byte scans: libjpeg walks every block of the image for each
    of them (~1.5 ms a scan at 5000x5000), so 30 KB of scans cost seconds of CPU."""
    data = encode(Image.new("RGB", (side, side), (200, 100, 50)), "JPEG", progressive=True, quality=50)
    # SOS, 1 component (Y), AC spectral selection 1..63, no entropy-coded data after it.
    empty_scan = b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, 1, 0x00, 1, 63, 0x00)
    return data[:-2] + empty_scan * scans + b"\xff\xd9"


def noise(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Random pixels: no encoder can shrink them, so a file's size follows its
    dimensions (what a large genuine photo looks like to a size check)."""
    bands = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    return Image.frombytes(mode, size, os.urandom(size[0] * size[1] * bands))


def svg_of_paths(size: int) -> bytes:
    """A genuine SVG of about ``size`` bytes: random paths in a 5000x5000 viewBox."""
    head = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<svg xmlns="http://www.w3.org/2000/svg" width="5000" height="5000" viewBox="0 0 5000 5000">\n')
    rng = random.Random(size)
    lines = []
    total = len(head)
    while total < size:
        points = " L".join(f"{rng.randrange(5000)} {rng.randrange(5000)}" for _ in range(20))
        line = f'  <path d="M{points} Z" fill="#{rng.randrange(1 << 24):06x}"/>\n'.encode()
        lines.append(line)
        total += len(line)
    return head + b"".join(lines) + b"</svg>\n"

"""WebP: RIFF chunks (EXIF, "XMP "), the VP8X flags and the RIFF size fixed."""
from __future__ import annotations

import struct

from protos.errors import InvalidInput
from thumbnail_service.metadata.common import unique, xmp_goes
from thumbnail_service.metadata.exif import exif_segment


def strip_webp(data: bytes, mode: str) -> tuple[bytes | None, list[str]]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise InvalidInput("The WebP does not start with a RIFF WEBP header.")
    riff_end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
    chunks, removed, at, changed = [], [], 12, False
    while at + 8 <= riff_end:
        kind, size = struct.unpack_from("<4sI", data, at)
        end = at + 8 + size + (size & 1)
        if at + 8 + size > riff_end:
            raise InvalidInput("A WebP chunk runs past the end of the file.")
        body = data[at + 8:at + 8 + size]
        new: bytes | None = None
        if kind == b"EXIF":
            new, what = exif_segment(body, mode, resizable=True)
            removed += what
        elif kind == b"XMP " and xmp_goes(body, mode):
            new = b""
            removed.append("xmp")
        if new is None:
            chunks.append([kind, data[at:min(end, riff_end)]])
        else:
            changed = True
            if new:
                chunks.append([kind, struct.pack("<4sI", kind, len(new)) + new + b"\x00" * (len(new) & 1)])
        at = end
    if not changed:
        return None, []
    kinds = {kind for kind, _ in chunks}
    for chunk in chunks:
        if chunk[0] == b"VP8X" and len(chunk[1]) >= 9:
            flags = chunk[1][8]
            if b"EXIF" not in kinds:
                flags &= ~0x08
            if b"XMP " not in kinds:
                flags &= ~0x04
            chunk[1] = chunk[1][:8] + bytes([flags]) + chunk[1][9:]
    body = b"WEBP" + b"".join(c for _, c in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body + data[riff_end:], unique(removed)


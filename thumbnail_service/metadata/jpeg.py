"""JPEG: segments up to the first scan, and the EXIF of the further pictures of a
multi-picture JPEG (MPF) in place."""
from __future__ import annotations

import struct

from protos.errors import InvalidInput
from thumbnail_service.metadata.common import Damaged, unique, xmp_goes
from thumbnail_service.metadata.exif import exif_segment
from thumbnail_service.metadata.photoshop import strip_irb

XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_JPEG_EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"

PHOTOSHOP = b"Photoshop 3.0\x00"


def strip_jpeg(data: bytes, mode: str) -> tuple[bytes | None, list[str]]:
    if data[:2] != b"\xff\xd8":
        raise InvalidInput("The JPEG does not start with a JPEG marker.")
    out, removed, at, changed = [data[:2]], [], 2, False
    while True:
        if at + 4 > len(data):
            raise InvalidInput("The JPEG ends before its image data.")
        if data[at] != 0xFF:
            raise InvalidInput("The JPEG's segments are damaged.")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            out.append(data[at:at + 1])
            at += 1
            continue
        if marker == 0xDA or marker == 0xD9:  # start of scan / end: the rest is image data
            rest = bytearray(data[at:])
            if _further_pictures(rest, mode, removed):
                changed = True
            out.append(bytes(rest))
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.append(data[at:at + 2])
            at += 2
            continue
        length = struct.unpack_from(">H", data, at + 2)[0]
        end = at + 2 + length
        if length < 2 or end > len(data):
            raise InvalidInput("A JPEG segment runs past the end of the file.")
        payload = data[at + 4:end]
        new: bytes | None = None
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            new, what = exif_segment(payload, mode, resizable=True)
            removed += what
        elif marker == 0xE1 and payload.startswith((XMP_JPEG, XMP_JPEG_EXTENSION)):
            if xmp_goes(payload, mode) or (payload.startswith(XMP_JPEG_EXTENSION) and mode == "strip-all"):
                new = b""
                removed.append("xmp")
        elif marker == 0xED and mode == "strip-all":  # APP13: Photoshop IRB, IPTC
            new = b""
            removed.append("iptc")
        elif marker == 0xED:
            new, what = _app13(payload)
            removed += what
        elif marker == 0xFE and mode == "strip-all":  # COM
            new = b""
            removed.append("comment")
        if new is None:
            out.append(data[at:end])
        else:
            changed = True
            if new:
                if len(new) + 2 > 0xFFFF:
                    raise InvalidInput("A JPEG segment is too long.")
                out.append(bytes([0xFF, marker]) + struct.pack(">H", len(new) + 2) + new)
        at = end
    if not changed:
        return None, []
    return b"".join(out), unique(removed)


def _app13(payload: bytes) -> tuple[bytes | None, list[str]]:
    """An APP13 under strip-location: the Photoshop IRB without what says where. The location
    datasets are cut out of the IPTC rather than the IPTC dropped whole: IIM is a flat list of
    lengths that is safe to edit, and the caption, credit and copyright are what photographers
    put there. APP13 that is not a readable Photoshop 3.0 IRB (damaged, one split over several
    segments, another program's) goes whole: what it holds cannot be known, and no decoder
    reads pixels or colours from it."""
    if not payload.startswith(PHOTOSHOP):
        return b"", ["iptc (unreadable)"]
    try:
        irb, removed = strip_irb(payload[len(PHOTOSHOP):])
    except Damaged:
        return b"", ["iptc (unreadable)"]
    if irb is None:
        return None, []
    return (PHOTOSHOP + irb if irb else b""), removed


def _further_pictures(rest: bytearray, mode: str, removed: list[str]) -> bool:
    """The EXIF of the pictures after the first (a multi-picture JPEG, MPF, as phones write:
    each has its own, location included), edited in place at its own length so that the MPF
    index's offsets stay right. A picture starts with SOI and a marker; entropy-coded data
    never holds 0xFF 0xD8 (its 0xFF bytes are followed by 0x00 or a restart marker)."""
    changed = False
    start = rest.find(b"\xff\xd8\xff", 2)
    while start != -1:
        at = start + 2
        while at + 4 <= len(rest) and rest[at] == 0xFF:
            marker = rest[at + 1]
            if marker in (0xDA, 0xD9):
                break
            if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xFF):
                at += 1 if marker == 0xFF else 2
                continue
            end = at + 2 + struct.unpack_from(">H", rest, at + 2)[0]
            if end > len(rest):
                break
            payload = bytes(rest[at + 4:end])
            if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
                new, what = exif_segment(payload, mode, resizable=False)
                if new is not None and len(new) == len(payload):
                    rest[at + 4:end] = new
                    removed += what
                    changed = True
            at = end
        start = rest.find(b"\xff\xd8\xff", at)
    return changed


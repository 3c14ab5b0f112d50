"""IPTC-IIM and the Photoshop image resource block (IRB) that carries it in a JPEG's APP13,
a PNG's "Raw profile type iptc/8bim" and a TIFF's tags: read, and the location datasets cut out.

IIM is a flat list of datasets (0x1C, record, number, length, data) and the IRB a flat list
of resources (signature, id, padded Pascal name, length, data padded to even), so removing a
dataset or a resource is cutting it out and fixing one length: everything else is copied as it
was (caption, keywords, copyright, the IRB's resolution and ICC resources...)."""
from __future__ import annotations

import hashlib
import struct

from thumbnail_service.metadata.common import Damaged, XMP_LOCATION

# The IIM datasets that say where (record 2): content location code and name, city,
# sub-location, province/state, country code and name.
LOCATION_DATASETS = frozenset({26, 27, 90, 92, 95, 100, 101})
IPTC_RESOURCE, DIGEST_RESOURCE, XMP_RESOURCE = 0x0404, 0x0425, 0x0424
EXIF_RESOURCES = (0x0422, 0x0423)  # Photoshop's copies of the EXIF ("Exif data 1" and "3")
SIGNATURES = (b"8BIM", b"PHUT", b"AgHg", b"DCSR", b"MeSa")


def datasets(iim: bytes) -> tuple[list[tuple[int, int, int, int]], int]:
    """(record, number, start, end) of each dataset, and where the zeros that pad the block
    (Photoshop pads it) start."""
    found, at = [], 0
    while at < len(iim):
        if iim[at] != 0x1C:
            if not any(iim[at:]):
                break
            raise Damaged("an IPTC dataset does not start with its tag marker")
        if at + 5 > len(iim):
            raise Damaged("an IPTC dataset is truncated")
        length, head = struct.unpack_from(">H", iim, at + 3)[0], 5
        if length & 0x8000:  # extended: the low bits say how many bytes the length takes
            size = length & 0x7FFF
            if not 1 <= size <= 4 or at + 5 + size > len(iim):
                raise Damaged("an IPTC dataset's length is unreadable")
            length, head = int.from_bytes(iim[at + 5:at + 5 + size], "big"), 5 + size
        end = at + head + length
        if end > len(iim):
            raise Damaged("an IPTC dataset runs past the block")
        found.append((iim[at + 1], iim[at + 2], at, end))
        at = end
    return found, at


def _is_location(record: int, number: int) -> bool:
    return record == 2 and number in LOCATION_DATASETS


def iim_has_location(iim: bytes) -> bool:
    return any(_is_location(r, n) for r, n, _, _ in datasets(iim)[0])


def strip_iim(iim: bytes) -> bytes | None:
    """The IIM without its location datasets (b"" when no dataset is left); None when it had none."""
    found, padding = datasets(iim)
    kept = [iim[s:e] for r, n, s, e in found if not _is_location(r, n)]
    if len(kept) == len(found):
        return None
    return b"".join(kept) + iim[padding:] if kept else b""


def resources(irb: bytes) -> tuple[list[list], bytes]:
    """[id, header (signature, id and name as written), data] of each resource, and the
    zeros some writers leave after the last one."""
    found, at = [], 0
    while at < len(irb):
        if irb[at:at + 4] not in SIGNATURES:
            if not any(irb[at:]):
                break
            raise Damaged("a Photoshop resource does not start with its signature")
        if at + 7 > len(irb):
            raise Damaged("a Photoshop resource is truncated")
        name = 1 + irb[at + 6]
        name += name & 1
        start = at + 6 + name + 4
        if start > len(irb):
            raise Damaged("a Photoshop resource is truncated")
        size = struct.unpack_from(">I", irb, start - 4)[0]
        if start + size > len(irb):
            raise Damaged("a Photoshop resource runs past the block")
        found.append([struct.unpack_from(">H", irb, at + 4)[0], irb[at:at + 6 + name], irb[start:start + size]])
        at = min(len(irb), start + size + (size & 1))
    return found, irb[at:]


def build(found: list[list], tail: bytes = b"") -> bytes:
    return b"".join(header + struct.pack(">I", len(data)) + data + b"\x00" * (len(data) & 1)
                    for _, header, data in found) + tail


def irb_locates(irb: bytes) -> bool:
    """Whether a Photoshop IRB may say where (IPTC location, XMP naming a place, or a copy of
    the EXIF, which is not looked into here)."""
    for rid, _, data in resources(irb)[0]:
        if (rid == IPTC_RESOURCE and iim_has_location(data)) or rid in EXIF_RESOURCES \
                or (rid == XMP_RESOURCE and XMP_LOCATION.search(data)):
            return True
    return False


def fix_digest(found: list[list], old: bytes, new: bytes) -> None:
    """Photoshop keeps an MD5 of the IPTC (resource 0x0425) to tell whether another program
    changed it; one that matched the old IPTC is made to match the new one, so that readers
    keep trusting the IPTC that is left rather than think it stale (None: it goes with the IPTC)."""
    for resource in found:
        if resource[0] == DIGEST_RESOURCE and resource[2] == hashlib.md5(old).digest():
            resource[2] = hashlib.md5(new).digest() if new else None

"""EXIF, a TIFF structure, edited without moving anything.

``strip-location``: the GPSInfo entry (tag 0x8825) leaves IFD0 (the later entries move up,
the count drops by one, the freed 12 bytes become zeros), and the GPS IFD and its out-of-line
values are zeroed. Same length, no offset moves. The TIFF tags that embed other metadata in
IFD0 (IPTC-NAA 0x83BB, XMP 0x02BC, Photoshop 0x8649: a TIFF's own, and some converters copy
them into the EXIF of other formats) leave it the same way, value zeroed, when what they hold
names a place. ``strip-all``: a minimal TIFF holding only Orientation (when it is not 1)."""
from __future__ import annotations

import struct

from thumbnail_service.metadata.common import Damaged, XMP_LOCATION
from thumbnail_service.metadata.iptc import iim_has_location, irb_locates

GPS_TAG = 0x8825
ORIENTATION_TAG = 0x0112
XMP_TAG, IPTC_TAG, PHOTOSHOP_TAG = 0x02BC, 0x83BB, 0x8649
EMBEDDED = {XMP_TAG: "exif.xmp", IPTC_TAG: "exif.iptc", PHOTOSHOP_TAG: "exif.photoshop"}
# Bytes per value of each TIFF field type (1 BYTE ... 13 IFD).
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}


class _Tiff:
    def __init__(self, data: bytearray):
        self.data = data
        if len(data) < 8 or data[:4] not in (b"II*\x00", b"MM\x00*"):
            raise Damaged("not a TIFF header")
        self.e = "<" if data[:2] == b"II" else ">"
        self.ifd0 = self.u32(4)

    def u16(self, at: int) -> int:
        if at < 0 or at + 2 > len(self.data):
            raise Damaged("offset outside the EXIF")
        return struct.unpack_from(self.e + "H", self.data, at)[0]

    def u32(self, at: int) -> int:
        if at < 0 or at + 4 > len(self.data):
            raise Damaged("offset outside the EXIF")
        return struct.unpack_from(self.e + "I", self.data, at)[0]

    def entries(self, ifd: int) -> list[tuple[int, int, int, int, int]]:
        """(position, tag, type, count, value or offset) of each entry of the IFD at ``ifd``."""
        count = self.u16(ifd)
        if ifd + 2 + 12 * count + 4 > len(self.data):
            raise Damaged("an IFD runs past the EXIF")
        return [(ifd + 2 + 12 * i, self.u16(ifd + 2 + 12 * i), self.u16(ifd + 4 + 12 * i),
                 self.u32(ifd + 6 + 12 * i), self.u32(ifd + 10 + 12 * i)) for i in range(count)]

    def value(self, entry: tuple[int, int, int, int, int]) -> tuple[bytes, int | None]:
        """An entry's value bytes, and where they lie when out of line (None: in the entry)."""
        at, _, kind, count, offset = entry
        size = TYPE_SIZES.get(kind, 1) * count
        if size <= 4:
            return bytes(self.data[at + 8:at + 8 + size]), None
        if offset + size > len(self.data):
            raise Damaged("a value lies outside the EXIF")
        return bytes(self.data[offset:offset + size]), offset

    def orientation(self) -> int:
        for at, tag, kind, count, _ in self.entries(self.ifd0):
            if tag == ORIENTATION_TAG and kind == 3 and count >= 1:
                return self.u16(at + 8)
        return 1

    def zero(self, start: int, length: int) -> None:
        if start < 0 or length < 0 or start + length > len(self.data):
            raise Damaged("a value lies outside the EXIF")
        self.data[start:start + length] = bytes(length)


def minimal_exif(orientation: int, endian: str = ">") -> bytes:
    """A TIFF holding Orientation alone (nothing at all when it is 1)."""
    header = (b"MM\x00*" if endian == ">" else b"II*\x00") + struct.pack(endian + "I", 8)
    if orientation == 1:
        return header + struct.pack(endian + "HI", 0, 0)
    return header + struct.pack(endian + "HHHIHHI", 1, ORIENTATION_TAG, 3, 1, orientation, 0, 0)


def _embedded_locates(tag: int, value: bytes) -> bool:
    """Whether the metadata a TIFF tag embeds names a place; what cannot be read counts as
    naming one (it cannot be known not to)."""
    try:
        if tag == XMP_TAG:
            return XMP_LOCATION.search(value) is not None
        if tag == IPTC_TAG:
            return iim_has_location(value)
        return irb_locates(value)
    except (Damaged, struct.error):
        return True


def edit_exif(tiff: bytes, mode: str) -> tuple[bytes | None, list[str]]:
    """The TIFF with its metadata removed as ``mode`` says, at the same length:
    (None, []) when there was nothing to remove. Never raises: unreadable EXIF is
    answered all zeros ("exif (unreadable)"), for the caller to drop or keep as padding."""
    try:
        t = _Tiff(bytearray(tiff))
        if mode == "strip-all":
            orientation = t.orientation()
            new = minimal_exif(orientation, t.e)
            if len(new) > len(tiff):
                raise Damaged("too short for a TIFF")
            new = new + bytes(len(tiff) - len(new))
            if new == tiff:
                return None, []
            return new, ["exif"]
        entries = t.entries(t.ifd0)
        dropped, removed = set(), []
        for entry in entries:
            at, tag, kind, count, value = entry
            if tag == GPS_TAG:
                # The GPS IFD and every out-of-line value of its entries become zeros.
                try:
                    for _, _, gkind, gcount, goffset in t.entries(value):
                        size = TYPE_SIZES.get(gkind, 1) * gcount
                        if size > 4:
                            t.zero(goffset, size)
                    t.zero(value, 2 + 12 * t.u16(value) + 4)
                except Damaged:
                    raise Damaged("the GPS IFD is unreadable") from None
                removed.append("exif.gps")
            elif tag in EMBEDDED:
                data, offset = t.value(entry)
                if not _embedded_locates(tag, data):
                    continue
                if offset is not None:
                    t.zero(offset, len(data))
                removed.append(EMBEDDED[tag])
            else:
                continue
            dropped.add(at)
        if not dropped:
            return None, []
        kept = [e for e in entries if e[0] not in dropped]
        ifd, n = t.ifd0, len(entries)
        next_ifd = bytes(t.data[ifd + 2 + 12 * n:ifd + 6 + 12 * n])
        body = b"".join(bytes(t.data[e[0]:e[0] + 12]) for e in kept)
        t.data[ifd:ifd + 2] = struct.pack(t.e + "H", len(kept))
        block = body + next_ifd
        t.data[ifd + 2:ifd + 6 + 12 * n] = block + bytes(12 * n + 4 - len(block))
        return bytes(t.data), list(dict.fromkeys(removed))
    except (Damaged, struct.error):
        return bytes(len(tiff)), ["exif (unreadable)"]


def exif_payload(segment: bytes) -> tuple[bytes, bytes]:
    """(prefix, TIFF) of an EXIF payload that may start with "Exif\\0\\0"."""
    if segment.startswith(b"Exif\x00\x00"):
        return segment[:6], segment[6:]
    return b"", segment


def exif_segment(payload: bytes, mode: str, resizable: bool) -> tuple[bytes | None, list[str]]:
    """A new EXIF payload (b"" to drop it, None: unchanged). ``resizable``: the container
    may change its length (then strip-all and unreadable EXIF are dropped or shortened)."""
    prefix, tiff = exif_payload(payload)
    new, removed = edit_exif(tiff, mode)
    if new is None:
        return None, []
    if resizable:
        if removed == ["exif (unreadable)"]:
            return b"", removed
        if mode == "strip-all":
            t = _Tiff(bytearray(new))
            if t.orientation() == 1:
                return b"", removed
            return prefix + minimal_exif(t.orientation(), t.e), removed
    return prefix + new, removed

"""The shipped transform: image metadata stripping (IMAGE_METADATA), lossless.

Only containers are edited, never pixels: JPEG segments, PNG chunks, WebP RIFF
chunks, the Exif and XMP items of a HEIC/HEIF file. What decodes to pixels is
copied as it is, so the stored image decodes to exactly the uploaded pixels.

EXIF is a TIFF structure, edited without moving anything:

- ``strip-location``: the GPSInfo entry (tag 0x8825) leaves IFD0 (the later
  entries move up, the count drops by one, the freed 12 bytes become zeros), and
  the GPS IFD and its out-of-line values are zeroed. Same length, no offset moves.
  XMP that names a location (``exif:GPS...``, ``photoshop:City``...) goes whole.
- ``strip-all``: the EXIF becomes a minimal TIFF holding only Orientation (when it
  is not 1); XMP, IPTC (Photoshop IRB), comments and text chunks go. ICC profiles
  stay (they are how the pixels' colours are read).

A HEIC's items are edited in place at their own length (zeros pad), so no box
size or item offset changes. EXIF that cannot be parsed (truncated, offsets
outside, ...) is removed whole ("exif (unreadable)"), since what it holds cannot
be known; a container that cannot be parsed is InvalidInput (the gateway refuses
the upload: nothing is stored that may still carry a location).
"""
from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping
from typing import BinaryIO

from protos.errors import InvalidInput
from protos.plugins import hookimpl
from thumbnail_service.types import Transform, TransformResult

MODES = ("strip-location", "strip-all")
DEFAULT_MODE = "strip-location"
MIME_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic", "image/heif")

GPS_TAG = 0x8825
ORIENTATION_TAG = 0x0112
# Bytes per value of each TIFF field type (1 BYTE ... 13 IFD).
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
# XMP that says where: dropped whole under strip-location. Any case: DJI's drones write
# drone-dji:GpsLatitude, which a case-sensitive match let through.
XMP_LOCATION = re.compile(rb"exif(?:EX)?:GPS|GPSLatitude|GPSLongitude|photoshop:City|photoshop:State|"
                          rb"photoshop:Country|Iptc4xmpCore:Location|Iptc4xmpExt:Location|LocationCreated|"
                          rb"LocationShown", re.IGNORECASE)
XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
XMP_JPEG_EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"
EMPTY_XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
             b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/><?xpacket end="w"?>')
# A compressed PNG text chunk is inflated at most this far to look for a location.
MAX_INFLATE = 16 * 1024 * 1024


class Damaged(Exception):
    """A structure that cannot be read safely."""


# --- EXIF (TIFF) -------------------------------------------------------------------

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
        gps = [e for e in entries if e[1] == GPS_TAG]
        if not gps:
            return None, []
        for at, tag, kind, count, value in gps:
            # The GPS IFD and every out-of-line value of its entries become zeros.
            try:
                for _, _, gkind, gcount, goffset in t.entries(value):
                    size = TYPE_SIZES.get(gkind, 1) * gcount
                    if size > 4:
                        t.zero(goffset, size)
                t.zero(value, 2 + 12 * t.u16(value) + 4)
            except Damaged:
                raise Damaged("the GPS IFD is unreadable") from None
        kept = [e for e in entries if e[1] != GPS_TAG]
        ifd, n = t.ifd0, len(entries)
        next_ifd = bytes(t.data[ifd + 2 + 12 * n:ifd + 6 + 12 * n])
        body = b"".join(bytes(t.data[e[0]:e[0] + 12]) for e in kept)
        t.data[ifd:ifd + 2] = struct.pack(t.e + "H", len(kept))
        block = body + next_ifd
        t.data[ifd + 2:ifd + 6 + 12 * n] = block + bytes(12 * n + 4 - len(block))
        return bytes(t.data), ["exif.gps"]
    except (Damaged, struct.error):
        return bytes(len(tiff)), ["exif (unreadable)"]


def _exif_payload(segment: bytes) -> tuple[bytes, bytes]:
    """(prefix, TIFF) of an EXIF payload that may start with "Exif\\0\\0"."""
    if segment.startswith(b"Exif\x00\x00"):
        return segment[:6], segment[6:]
    return b"", segment


def _exif_segment(payload: bytes, mode: str, resizable: bool) -> tuple[bytes | None, list[str]]:
    """A new EXIF payload (b"" to drop it, None: unchanged). ``resizable``: the container
    may change its length (then strip-all and unreadable EXIF are dropped or shortened)."""
    prefix, tiff = _exif_payload(payload)
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


def _xmp_goes(xmp: bytes, mode: str) -> bool:
    return mode == "strip-all" or XMP_LOCATION.search(xmp) is not None


# --- JPEG --------------------------------------------------------------------------

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
            new, what = _exif_segment(payload, mode, resizable=True)
            removed += what
        elif marker == 0xE1 and payload.startswith((XMP_JPEG, XMP_JPEG_EXTENSION)):
            if _xmp_goes(payload, mode) or (payload.startswith(XMP_JPEG_EXTENSION) and mode == "strip-all"):
                new = b""
                removed.append("xmp")
        elif marker == 0xED and mode == "strip-all":  # APP13: Photoshop IRB, IPTC
            new = b""
            removed.append("iptc")
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
    return b"".join(out), _unique(removed)


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
                new, what = _exif_segment(payload, mode, resizable=False)
                if new is not None and len(new) == len(payload):
                    rest[at + 4:end] = new
                    removed += what
                    changed = True
            at = end
        start = rest.find(b"\xff\xd8\xff", at)
    return changed


# --- PNG ---------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _png_text(kind: bytes, body: bytes) -> tuple[bytes, bytes]:
    """(keyword, text) of a PNG text chunk, inflated (bounded) where compressed."""
    keyword, _, rest = body.partition(b"\x00")
    try:
        if kind == b"zTXt":
            return keyword, _inflate(rest[1:])
        if kind == b"iTXt":
            compressed = rest[:1] == b"\x01"
            rest = rest[2:]
            _, _, rest = rest.partition(b"\x00")  # language tag
            _, _, text = rest.partition(b"\x00")  # translated keyword
            return keyword, _inflate(text) if compressed else text
    except zlib.error:
        return keyword, b"GPS"  # unreadable: treated as holding a location
    return keyword, rest


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, MAX_INFLATE)
    if inflater.unconsumed_tail:
        return b"GPS"  # too large to look into: treated as holding a location
    return text


def strip_png(data: bytes, mode: str) -> tuple[bytes | None, list[str]]:
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidInput("The PNG does not start with the PNG signature.")
    out, removed, at, changed = [PNG_SIGNATURE], [], 8, False
    while at < len(data):
        if at + 12 > len(data):
            out.append(data[at:])  # trailing bytes after the last chunk: kept as they are
            break
        length, kind = struct.unpack_from(">I4s", data, at)
        end = at + 12 + length
        if end > len(data):
            raise InvalidInput("A PNG chunk runs past the end of the file.")
        body = data[at + 8:at + 8 + length]
        new: bytes | None = None
        if kind == b"eXIf":
            new, what = _exif_segment(body, mode, resizable=True)
            removed += what
        elif kind in TEXT_CHUNKS:
            keyword, text = _png_text(kind, body)
            if keyword == b"XML:com.adobe.xmp":
                if _xmp_goes(text, mode):
                    new = b""
                    removed.append("xmp")
            elif keyword.startswith(b"Raw profile type"):  # ImageMagick's hex-encoded EXIF/IPTC/XMP
                if mode == "strip-all" or b"exif" in keyword.lower() or b"app1" in keyword.lower() \
                        or XMP_LOCATION.search(text):
                    new = b""
                    removed.append("png." + keyword.decode("latin-1").split()[-1].lower())
            elif mode == "strip-all":
                new = b""
                removed.append("text")
        if new is None:
            out.append(data[at:end])
        else:
            changed = True
            if new:
                out.append(struct.pack(">I", len(new)) + kind + new
                           + struct.pack(">I", zlib.crc32(kind + new)))
        at = end
        if kind == b"IEND":
            out.append(data[at:])
            break
    if not changed:
        return None, []
    return b"".join(out), _unique(removed)


# --- WebP --------------------------------------------------------------------------

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
            new, what = _exif_segment(body, mode, resizable=True)
            removed += what
        elif kind == b"XMP " and _xmp_goes(body, mode):
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
    return b"RIFF" + struct.pack("<I", len(body)) + body + data[riff_end:], _unique(removed)


# --- HEIC / HEIF (ISO BMFF) ---------------------------------------------------------

def _boxes(data, start: int, end: int):
    """(type, body start, box end) of each box between start and end."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            if at + 16 > end:
                raise InvalidInput("A HEIF box is truncated.")
            size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            raise InvalidInput("A HEIF box runs past its container.")
        yield kind, at + header, at + size
        at += size


def _read_uint(data, at: int, size: int) -> int:
    if size == 0:
        return 0
    if at + size > len(data):
        raise InvalidInput("A HEIF item table is truncated.")
    return int.from_bytes(data[at:at + size], "big")


def _heif_items(data) -> tuple[dict[int, tuple[bytes, bytes]], dict[int, list[tuple[int, int]]]]:
    """Item types (type, content type) by id, and each item's (file offset, length) extents."""
    meta = next(((s, e) for kind, s, e in _boxes(data, 0, len(data)) if kind == b"meta"), None)
    if meta is None:
        return {}, {}
    types: dict[int, tuple[bytes, bytes]] = {}
    extents: dict[int, list[tuple[int, int]]] = {}
    idat = None
    children = list(_boxes(data, meta[0] + 4, meta[1]))  # meta is a full box: version and flags first
    for kind, s, e in children:
        if kind == b"idat":
            idat = s
    for kind, s, e in children:
        if kind == b"iinf":
            version = data[s]
            count_size = 2 if version == 0 else 4
            for ikind, is_, ie in _boxes(data, s + 4 + count_size, e):
                if ikind != b"infe" or ie - is_ < 4:
                    continue
                iversion = data[is_]
                if iversion < 2:
                    continue
                id_size = 2 if iversion == 2 else 4
                item_id = _read_uint(data, is_ + 4, id_size)
                at = is_ + 4 + id_size + 2
                item_type = bytes(data[at:at + 4])
                content_type = b""
                if item_type == b"mime":
                    rest = bytes(data[at + 4:ie])
                    _, _, rest = rest.partition(b"\x00")  # item name
                    content_type = rest.partition(b"\x00")[0]
                types[item_id] = (item_type, content_type)
        elif kind == b"iloc":
            version = data[s]
            at = s + 4
            sizes = _read_uint(data, at, 2)
            offset_size, length_size = sizes >> 12, (sizes >> 8) & 15
            base_size, index_size = (sizes >> 4) & 15, (sizes & 15 if version in (1, 2) else 0)
            at += 2
            count_size = 4 if version == 2 else 2
            count = _read_uint(data, at, count_size)
            at += count_size
            for _ in range(count):
                item_id = _read_uint(data, at, 4 if version == 2 else 2)
                at += 4 if version == 2 else 2
                method = 0
                if version in (1, 2):
                    method = _read_uint(data, at, 2) & 15
                    at += 2
                at += 2  # data reference index
                base = _read_uint(data, at, base_size)
                at += base_size
                extent_count = _read_uint(data, at, 2)
                at += 2
                spans = []
                for _ in range(extent_count):
                    at += index_size
                    offset = _read_uint(data, at, offset_size)
                    at += offset_size
                    length = _read_uint(data, at, length_size)
                    at += length_size
                    if method == 1:
                        if idat is None:
                            raise InvalidInput("A HEIF item lies in an idat box that is missing.")
                        offset += idat
                    elif method != 0:
                        spans = None
                        break
                    spans.append((base + offset, length))
                if at > e:
                    raise InvalidInput("The HEIF item locations are truncated.")
                if spans is not None:
                    extents[item_id] = spans
    return types, extents


def strip_heif(data: bytes, mode: str) -> tuple[bytes | None, list[str]]:
    """Exif and XMP items edited in place, at their own length."""
    buffer = bytearray(data)
    try:
        types, extents = _heif_items(buffer)
    except (IndexError, struct.error):
        raise InvalidInput("The HEIF item tables are damaged.") from None
    removed, changed = [], False
    for item_id, (item_type, content_type) in sorted(types.items()):
        is_exif = item_type == b"Exif"
        is_xmp = item_type == b"mime" and content_type == b"application/rdf+xml"
        if not (is_exif or is_xmp):
            continue
        spans = extents.get(item_id)
        if not spans or any(length == 0 or offset + length > len(buffer) for offset, length in spans):
            raise InvalidInput("A HEIF metadata item lies outside the file.")
        item = b"".join(bytes(buffer[o:o + n]) for o, n in spans)
        if is_exif:
            # A 4-byte offset to the TIFF header (past "Exif\0\0" usually), then the TIFF.
            skip = 4 + int.from_bytes(item[:4], "big") if len(item) >= 4 else len(item)
            if skip > len(item):
                new, what = bytes(len(item)), ["exif (unreadable)"]
            else:
                tiff, what = edit_exif(item[skip:], mode)
                new = None if tiff is None else item[:skip] + tiff
        else:
            if not _xmp_goes(item, mode):
                continue
            new = (EMPTY_XMP + b" " * (len(item) - len(EMPTY_XMP))) if len(item) >= len(EMPTY_XMP) \
                else b" " * len(item)
            what = ["xmp"]
        if new is None:
            continue
        changed = True
        removed += what
        at = 0
        for offset, length in spans:
            buffer[offset:offset + length] = new[at:at + length]
            at += length
    if not changed:
        return None, []
    return bytes(buffer), _unique(removed)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


STRIPPERS = {
    "image/jpeg": strip_jpeg, "image/png": strip_png, "image/webp": strip_webp,
    "image/heic": strip_heif, "image/heif": strip_heif,
}


def strip_metadata(source: BinaryIO, mime_type: str, parameters: Mapping[str, str]) -> TransformResult | None:
    """The transform: IMAGE_METADATA's mode comes as the ``image_metadata`` parameter."""
    mode = parameters.get("image_metadata", DEFAULT_MODE)
    if mode == "keep":
        return None
    if mode not in MODES:
        raise InvalidInput(f"image_metadata must be one of keep, {', '.join(MODES)}; got {mode!r}.")
    data = source.read()
    new, removed = STRIPPERS[mime_type](data, mode)
    if new is None or new == data:
        return None
    return TransformResult(new, tuple(removed))


@hookimpl
def upload_transforms():
    yield Transform("image_metadata", MIME_TYPES, strip_metadata)

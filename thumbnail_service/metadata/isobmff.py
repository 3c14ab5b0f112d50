"""HEIC/HEIF and AVIF (ISO BMFF, HEIF): the Exif item and the XMP item (type "mime",
application/rdf+xml) found through the meta box's iinf and iloc, edited in place at their
own length (zeros or spaces pad), so that no box size or item offset changes."""
from __future__ import annotations

import struct

from protos.errors import InvalidInput
from thumbnail_service.metadata.common import EMPTY_XMP, unique, xmp_goes
from thumbnail_service.metadata.exif import edit_exif


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
            per_extent = index_size + offset_size + length_size
            for _ in range(count):
                if at > e:  # each item takes bytes: a count past what the box holds is not followed
                    raise InvalidInput("The HEIF item locations are truncated.")
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
                # Extents that take no bytes, or more of them than the box holds, would have the loop
                # below make 65535 spans per item (each may claim the whole file) from a few bytes.
                if extent_count > 1 and (per_extent == 0 or at + extent_count * per_extent > e):
                    raise InvalidInput("The HEIF item locations are damaged.")
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
        if not spans or any(length == 0 or offset + length > len(buffer) for offset, length in spans) \
                or sum(length for _, length in spans) > len(buffer):
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
            if not xmp_goes(item, mode):
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
    return bytes(buffer), unique(removed)


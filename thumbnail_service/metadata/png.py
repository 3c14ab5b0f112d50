"""PNG: chunks; EXIF in eXIf, XMP and ImageMagick's raw profiles in text chunks (CRCs recomputed)."""
from __future__ import annotations

import struct
import zlib

from protos.errors import InvalidInput
from thumbnail_service.metadata.common import Damaged, XMP_LOCATION, unique, xmp_goes
from thumbnail_service.metadata.exif import exif_segment
from thumbnail_service.metadata.iptc import strip_iim
from thumbnail_service.metadata.photoshop import strip_irb

# A compressed PNG text chunk is inflated at most this far to look for a location.
MAX_INFLATE = 16 * 1024 * 1024

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _png_text(kind: bytes, body: bytes) -> tuple[bytes, bytes, int, bool]:
    """(keyword, text, where the text starts in the body, whether it is compressed) of a PNG
    text chunk, inflated (bounded) where compressed."""
    keyword, _, rest = body.partition(b"\x00")
    start = len(keyword) + 1
    try:
        if kind == b"zTXt":
            return keyword, _inflate(rest[1:]), start + 1, True
        if kind == b"iTXt":
            compressed = rest[:1] == b"\x01"
            language, _, rest = rest[2:].partition(b"\x00")
            translated, _, text = rest.partition(b"\x00")
            start += 2 + len(language) + 1 + len(translated) + 1
            return keyword, _inflate(text) if compressed else text, start, compressed
    except zlib.error:
        return keyword, b"GPS", start, False  # unreadable: treated as holding a location
    return keyword, rest, start, False


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    text = inflater.decompress(data, MAX_INFLATE)
    if inflater.unconsumed_tail:
        return b"GPS"  # too large to look into: treated as holding a location
    return text


def _unhex(text: bytes) -> bytes:
    """The bytes of an ImageMagick raw profile: its name, its length, then hex over many lines."""
    words = text.split()
    if len(words) < 2:
        raise ValueError("not a raw profile")
    profile = bytes.fromhex(b"".join(words[2:]).decode("ascii"))
    if len(profile) != int(words[1]):
        raise ValueError("a raw profile of another length than it says")
    return profile


def _hex(name: bytes, profile: bytes) -> bytes:
    digits = profile.hex().encode()
    return b"\n%s\n%8d\n%s\n" % (name, len(profile), b"\n".join(digits[i:i + 72] for i in range(0, len(digits), 72)))


def _raw_profile(name: bytes, text: bytes, mode: str) -> tuple[bytes | None, list[str]]:
    """The new text of ImageMagick's "Raw profile type <name>" (b"": the chunk goes, None:
    unchanged). IPTC, bare or in a Photoshop IRB (ImageMagick writes both under "iptc", and
    the IRB as "8bim"), loses its location datasets as in a JPEG's APP13; the EXIF goes whole
    (as it always did here); XMP and anything else goes whole when it names a place."""
    label = "png." + name.decode("latin-1")
    if mode == "strip-all" or name in (b"exif", b"app1"):
        return b"", [label]
    try:
        profile = _unhex(text)
    except ValueError:
        return b"", [label + " (unreadable)"]
    if name in (b"iptc", b"8bim"):
        try:
            if profile.startswith(b"8BIM"):
                new, removed = strip_irb(profile)
            else:
                new = strip_iim(profile)
                removed = ["iptc.location"]
        except Damaged:
            return b"", [label + " (unreadable)"]
        if new is None:
            return None, []
        return (_hex(name, new) if new else b""), removed
    if XMP_LOCATION.search(profile):
        return b"", [label]
    return None, []


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
            new, what = exif_segment(body, mode, resizable=True)
            removed += what
        elif kind in TEXT_CHUNKS:
            keyword, text, start, compressed = _png_text(kind, body)
            if keyword == b"XML:com.adobe.xmp":
                if xmp_goes(text, mode):
                    new = b""
                    removed.append("xmp")
            elif keyword.startswith(b"Raw profile type"):  # ImageMagick's hex-encoded EXIF/IPTC/XMP
                edited, what = _raw_profile(keyword.split()[-1].lower(), text, mode)
                removed += what
                if edited is not None:
                    new = body[:start] + (zlib.compress(edited) if compressed else edited) if edited else b""
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
    return b"".join(out), unique(removed)


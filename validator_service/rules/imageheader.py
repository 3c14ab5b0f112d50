"""An image's dimensions read from its header bytes alone: nothing is decoded.

Pillow's lazy open is no header reader for every format: it hands a WebP to
libwebp's demuxer whole, so a WebP longer than the head looked truncated, and
it parses a PNG or GIF up to its first frame, through metadata of any length.
Here each format is read only as far as its size:

- PNG: the IHDR chunk, always first (bytes 8-33);
- GIF: the logical screen (bytes 6-10) widened, as Pillow does, by the first
  frame when that reaches past it; a frame behind more extension blocks than
  the head holds is not waited for (``cut``): the screen is the canvas;
- WebP: the first chunk after the RIFF header (bytes 12-30): VP8, VP8L or the
  VP8X canvas;
- JPEG: the frame header (SOFn), found by walking the segment lengths. It is
  the one header that can lie anywhere (behind any amount of metadata), so
  the only one that can lie past the bytes given;
- HEIF (HEIC) and AVIF: ISO base media boxes. The ``meta`` box, which writers
  put right after ``ftyp``, names the primary item (``pitm``) and ties it
  (``ipma``) to its properties (``ipco``): its image spatial extents
  (``ispe``), cropped by its clean aperture (``clap``: the encoder's padding
  to whole blocks) and turned by a quarter turn when its ``irot`` says so. A
  grid image (a phone's photo, 48 tiles) has its own ``ispe``, the whole
  picture's.

``dimensions`` answers (width, height), raises ``Damaged`` when the bytes
cannot be such an image, ``UnknownFormat`` when they are none of these
(an image type a plugin added), or gives None when the header goes on past the bytes
given: the caller knows whether those were the whole file (then it is cut
short) or only its head (then it asks again with ``cut``).
"""
from __future__ import annotations

import re
import struct
import zlib

# Steps a walk may take before the header: a hostile head of tiny blocks or
# segments must not cost more than a few milliseconds of Python. A 1 MiB head
# holds about 4,100 full GIF sub-blocks; a genuine JPEG has a few dozen
# segments before its frame header.
MAX_STEPS = 10_000


class Damaged(ValueError):
    """The header is broken; the message says how."""


class UnknownFormat(ValueError):
    """The bytes are none of the formats read here (a plugin's image type, such
    as BMP or TIFF): the caller measures them another way."""


def dimensions(data: bytes, cut: bool = False) -> tuple[int, int] | None:
    """``cut``: ``data`` is the head of a longer file, so a header that goes on
    past it is answered from what it holds where the format allows (GIF)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(data, cut)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data[4:8] == b"ftyp":
        return _heif(data)
    if len(data) < 12:
        return None
    raise UnknownFormat("it does not start like a PNG, GIF, WebP, JPEG, HEIF or AVIF image")


def _checked(width: int, height: int) -> tuple[int, int]:
    if width == 0 or height == 0:
        raise Damaged(f"its header declares {width}x{height} pixels")
    return width, height


def _png(data: bytes) -> tuple[int, int] | None:
    if len(data) < 33:
        return None
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise Damaged("its first chunk is not a PNG image header (IHDR)")
    (crc,) = struct.unpack_from(">I", data, 29)
    if zlib.crc32(data[12:29]) != crc:
        raise Damaged("its image header (IHDR) fails its checksum")
    return _checked(*struct.unpack_from(">II", data, 16))


def _gif(data: bytes, cut: bool) -> tuple[int, int] | None:
    if len(data) < 13:
        return None
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    frame = _first_gif_frame(data, 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0), cut)
    if frame is None and not cut:
        return None
    if frame is not None:
        width, height = max(width, frame[0]), max(height, frame[1])
    return _checked(width, height)


def _first_gif_frame(data: bytes, at: int, cut: bool) -> tuple[int, int] | None:
    """Where the first frame reaches (right, bottom), if its descriptor is in ``data``."""
    steps = 0
    while at < len(data):
        steps += 1
        if steps > MAX_STEPS:
            if cut:  # the screen is the canvas (see above)
                return None
            raise Damaged(f"it has more than {MAX_STEPS} blocks before its first frame")
        block = data[at]
        if block == 0x2C:  # image descriptor: left, top, width, height
            if at + 9 > len(data):
                return None
            left, top, width, height = struct.unpack_from("<HHHH", data, at + 1)
            return left + width, top + height
        if block == 0x3B:  # the trailer, before any frame
            raise Damaged("it ends before its first frame")
        if block != 0x21:  # Pillow steps over a stray byte; so does this
            at += 1
            continue
        at += 2  # extension introducer and label, then sub-blocks until an empty one
        while at < len(data) and data[at] and steps <= MAX_STEPS:
            at += 1 + data[at]
            steps += 1
        at += 1
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: the canvas, 24 bits each, minus one
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":  # lossless: 14 bits each, minus one, after the 0x2f signature
        (bits,) = struct.unpack_from("<I", data, 21)
        if data[20] != 0x2F or bits >> 29:
            raise Damaged("its lossless (VP8L) header has a wrong signature or version")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # lossy: a key frame's tag, start code, then 14 bits each
        if data[20] & 1 or data[23:26] != b"\x9d\x01\x2a":
            raise Damaged("its lossy (VP8) header is not a key frame")
        width, height = struct.unpack_from("<HH", data, 26)
        return _checked(width & 0x3FFF, height & 0x3FFF)
    raise Damaged(f"its first chunk ({chunk!r}) is not VP8, VP8L or VP8X")


_NOT_FILL = re.compile(rb"[^\xff]")
# Markers that stand alone, without a length: TEM, RST0-7 and SOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
# Start of frame: SOF0-15 but DHT (C4), JPG (C8) and DAC (CC).
_FRAME = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(data: bytes) -> tuple[int, int] | None:
    at = 2
    for _ in range(MAX_STEPS):
        # Like Pillow and libjpeg, skip junk between segments and fill bytes before a marker.
        fill = data.find(b"\xff", at)
        found = _NOT_FILL.search(data, fill) if fill != -1 else None
        if found is None:
            return None
        marker, at = data[found.start()], found.start() + 1
        if marker == 0x00 or marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan
            raise Damaged("its image data starts before any frame header")
        if marker < 0xC0:
            raise Damaged(f"it holds an unknown marker (0xff{marker:02x})")
        if at + 2 > len(data):
            return None
        (length,) = struct.unpack_from(">H", data, at)
        if length < 2:
            raise Damaged(f"a segment (0xff{marker:02x}) has a length of {length}")
        if marker in _FRAME:
            if length < 7:
                raise Damaged(f"its frame header is {length} bytes long")
            if at + 7 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, at + 3)
            return _checked(width, height)
        at += length
    raise Damaged(f"it has more than {MAX_STEPS} segments before its frame header")


class _PastTheEnd(Exception):
    """A box goes on past the bytes given."""


def _boxes(data: bytes, start: int, end: int, steps: list[int]):
    """(type, where its content starts, where it ends) of each box from ``start``
    to ``end``. A box that reaches past ``data`` is given with None as its end,
    and nothing follows it (_PastTheEnd)."""
    at = start
    while at < end:
        steps[0] += 1
        if steps[0] > MAX_STEPS:
            raise Damaged(f"it has more than {MAX_STEPS} boxes before its image size")
        if at + 8 > end:
            raise Damaged("a box's header is cut short by the box that holds it")
        if at + 8 > len(data):
            raise _PastTheEnd
        size, kind = struct.unpack_from(">I4s", data, at)
        content = at + 8
        if size == 1:  # a 64-bit size follows the type
            if at + 16 > len(data):
                raise _PastTheEnd
            (size,) = struct.unpack_from(">Q", data, content)
            content += 8
        elif size == 0:  # up to the end of the file (or of the box that holds it)
            size = end - at
        if size < content - at:
            raise Damaged(f"a box ({kind.decode('latin-1')!r}) is smaller than its own header")
        if at + size > end:
            raise Damaged(f"a box ({kind.decode('latin-1')!r}) reaches past the box that holds it")
        if at + size > len(data):
            yield kind, content, None
            raise _PastTheEnd
        yield kind, content, at + size
        at += size


def _heif(data: bytes) -> tuple[int, int] | None:
    """The primary image's size; None while the meta box is not all in ``data``."""
    steps = [0]
    try:
        for kind, content, end in _boxes(data, 0, 2**63, steps):
            if end is None:
                return None  # the image data, or the meta box itself, goes on past the bytes given
            if kind == b"meta":
                return _primary_size(data, content + 4, end, steps)  # a full box: version and flags first
    except _PastTheEnd:
        return None
    return None


def _primary_size(data: bytes, start: int, end: int, steps: list[int]) -> tuple[int, int]:
    primary, properties, associations = None, [], {}
    for kind, content, box_end in _boxes(data, start, end, steps):
        if kind == b"pitm":
            version = data[content] if content < box_end else 0
            width = 2 if version == 0 else 4
            if content + 4 + width > box_end:
                raise Damaged("its primary item box (pitm) is too short")
            primary = int.from_bytes(data[content + 4:content + 4 + width], "big")
        elif kind == b"iprp":
            for inner, inner_content, inner_end in _boxes(data, content, box_end, steps):
                if inner == b"ipco":
                    properties = list(_boxes(data, inner_content, inner_end, steps))
                elif inner == b"ipma":
                    associations.update(_associations(data, inner_content, inner_end, steps))
    if primary is None:
        raise Damaged("it names no primary image (pitm)")
    size = None
    # In association order, as the decoder applies them: the size first, then the
    # clean aperture (a crop) and the rotation, each of the picture as it is by then.
    for index in associations.get(primary, ()):
        if not 0 < index <= len(properties):
            raise Damaged(f"its primary image refers to property {index}, which does not exist")
        kind, content, box_end = properties[index - 1]
        if kind == b"ispe":
            if content + 12 > box_end:
                raise Damaged("its image size box (ispe) is too short")
            size = struct.unpack_from(">II", data, content + 4)
        elif kind == b"clap" and size is not None:
            size = _cropped(data, content, box_end, size)
        elif kind == b"irot" and size is not None and content < box_end and data[content] & 1:
            size = size[1], size[0]  # a quarter turn
    if size is None:
        raise Damaged("its primary image has no size (ispe)")
    return _checked(*size)


# Coded pictures come in blocks (HEVC's up to 64 pixels, AV1's up to 128), so an encoder
# pads a picture to whole blocks and a clean aperture crops the padding away. A crop that
# trims more than that is not believed: the decoder still allocates the coded size, and
# that is the size the limits must see (a 1x1 crop of a flood is a flood).
MAX_PADDING = 128


def _cropped(data: bytes, content: int, end: int, size: tuple[int, int]) -> tuple[int, int]:
    if content + 32 > end:
        raise Damaged("its clean aperture box (clap) is too short")
    width_n, width_d, height_n, height_d = struct.unpack_from(">IIII", data, content)
    if not width_d or not height_d:
        raise Damaged("its clean aperture box (clap) divides by zero")
    width, height = round(width_n / width_d), round(height_n / height_d)
    trimmed = (size[0] - width, size[1] - height)
    return (width, height) if all(0 <= t < MAX_PADDING for t in trimmed) else size


def _associations(data: bytes, start: int, end: int, steps: list[int]) -> dict[int, list[int]]:
    """item id -> its property indices (1-based), from an ipma box's content."""
    if start + 8 > end:
        raise Damaged("its property association box (ipma) is too short")
    version, flags = data[start], int.from_bytes(data[start + 1:start + 4], "big")
    (count,) = struct.unpack_from(">I", data, start + 4)
    id_width, index_width = (2 if version < 1 else 4), (2 if flags & 1 else 1)
    at, found = start + 8, {}
    for _ in range(count):
        steps[0] += 1
        if steps[0] > MAX_STEPS:
            raise Damaged(f"it has more than {MAX_STEPS} property associations")
        if at + id_width + 1 > end:
            raise Damaged("its property association box (ipma) is cut short")
        item = int.from_bytes(data[at:at + id_width], "big")
        n = data[at + id_width]
        at += id_width + 1
        if at + n * index_width > end:
            raise Damaged("its property association box (ipma) is cut short")
        mask = 0x7FFF if index_width == 2 else 0x7F  # the top bit says "essential"
        found[item] = [int.from_bytes(data[at + i * index_width:at + (i + 1) * index_width], "big") & mask
                       for i in range(n)]
        at += n * index_width
    return found

"""Genuine images with location metadata (EXIF GPS, XMP) and an orientation, in the
five formats the shipped image_metadata transform handles, made by Pillow and
pillow-heif (AVIF by Pillow's own libavif plugin); and what tests read back from them."""
from __future__ import annotations

import io

import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()

FORMATS = {  # extension: (Pillow format, MIME type)
    "jpg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
    "webp": ("WEBP", "image/webp"),
    "heic": ("HEIF", "image/heic"),
    "avif": ("AVIF", "image/avif"),
}
GPS_IFD = 0x8825
ORIENTATION = 0x0112
MAKE = 0x010F
XMP_WITH_GPS = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
                b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
                b'xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="48,51.48N" '
                b'exif:GPSLongitude="2,17.67E"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def picture(size=(64, 48)) -> Image.Image:
    im = Image.new("RGB", size, (200, 30, 40))
    for x in range(size[0]):
        im.putpixel((x, x % size[1]), (x * 4 % 256, 255 - x % 256, 7))
    return im


def exif_with_gps(orientation: int = 6, gps: bool = True) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[MAKE] = "Camera Maker"
    if gps:
        ifd = exif.get_ifd(GPS_IFD)
        ifd[1], ifd[2], ifd[3], ifd[4] = "N", (48.0, 51.0, 29.0), "E", (2.0, 17.0, 40.0)
    return exif.tobytes()


def image_bytes(ext: str, exif: bytes | None = None, xmp: bytes | None = None, im: Image.Image | None = None) -> bytes:
    fmt, _ = FORMATS[ext]
    kwargs = {}
    if exif is not None:
        kwargs["exif"] = exif
    if xmp is not None and fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo
        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode(), zip=True)  # compressed: the transform inflates it
        kwargs["pnginfo"] = info
    elif xmp is not None:
        kwargs["xmp"] = xmp
    if fmt == "WEBP":
        kwargs["lossless"] = True
    if fmt == "HEIF":
        kwargs["quality"] = 50
    out = io.BytesIO()
    (im or picture()).save(out, fmt, **kwargs)
    return out.getvalue()


def with_gps(ext: str, orientation: int = 6) -> bytes:
    return image_bytes(ext, exif_with_gps(orientation))


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def pixels(data: bytes) -> bytes:
    """The decoded pixels, as stored (no orientation applied)."""
    return opened(data).convert("RGB").tobytes()


def gps_of(data: bytes) -> dict:
    return dict(opened(data).getexif().get_ifd(GPS_IFD))


def orientation_of(data: bytes) -> int | None:
    return opened(data).getexif().get(ORIENTATION)


# --- IPTC-IIM (in a JPEG's APP13 Photoshop IRB, in a PNG's "Raw profile type iptc") ---

IPTC_LOCATION = {(2, 90): b"Paris", (2, 92): b"Montmartre", (2, 95): b"Ile-de-France", (2, 100): b"FRA",
                 (2, 101): b"France", (2, 26): b"FR-75", (2, 27): b"Sacre-Coeur"}
IPTC_OTHER = {(1, 90): b"\x1b%G", (2, 0): b"\x00\x04", (2, 120): b"Sunset over the city",
              (2, 116): b"(c) A. Photographer", (2, 80): b"A. Photographer"}


def iim(datasets: dict) -> bytes:
    return b"".join(b"\x1c" + bytes([record, number]) + len(value).to_bytes(2, "big") + value
                    for (record, number), value in datasets.items())


def read_iim(block: bytes) -> dict:
    found, at = {}, 0
    while at + 5 <= len(block) and block[at] == 0x1C:
        length = int.from_bytes(block[at + 3:at + 5], "big")
        found[(block[at + 1], block[at + 2])] = block[at + 5:at + 5 + length]
        at += 5 + length
    return found


def irb_resource(rid: int, data: bytes) -> bytes:
    return b"8BIM" + rid.to_bytes(2, "big") + b"\x00\x00" + len(data).to_bytes(4, "big") + data + b"\x00" * (len(data) & 1)


# A resource the stripper has no business with (0x03ED: resolution info), kept as it is.
RESOLUTION = irb_resource(0x03ED, b"\x00H\x00\x00\x00\x01\x00\x01\x00H\x00\x00\x00\x01\x00\x01")


def with_iptc(ext: str, datasets: dict | None = None, im: Image.Image | None = None,
              block: bytes | None = None) -> bytes:
    """A JPEG with an APP13 Photoshop IRB (the IPTC and a resolution resource) after its APP0,
    or a PNG with ImageMagick's zTXt "Raw profile type iptc"; EXIF with GPS in both. ``block``:
    the IPTC's own bytes (damaged ones, say) instead of ``datasets``'."""
    if block is None:
        block = iim(IPTC_LOCATION | IPTC_OTHER if datasets is None else datasets)
    if ext == "png":
        from PIL.PngImagePlugin import PngInfo
        digits = block.hex()
        text = "\niptc\n%8d\n%s\n" % (len(block), "\n".join(digits[i:i + 72] for i in range(0, len(digits), 72)))
        info = PngInfo()
        info.add_text("Raw profile type iptc", text, zip=True)
        out = io.BytesIO()
        (im or picture()).save(out, "PNG", exif=exif_with_gps(gps=False), pnginfo=info)
        return out.getvalue()
    data = image_bytes("jpg", exif_with_gps(gps=False), im=im)
    payload = b"Photoshop 3.0\x00" + RESOLUTION + irb_resource(0x0404, block)
    app0_end = 4 + int.from_bytes(data[4:6], "big")
    return data[:app0_end] + b"\xff\xed" + (len(payload) + 2).to_bytes(2, "big") + payload + data[app0_end:]


def iptc_of(data: bytes) -> dict:
    """The IPTC datasets as a reader finds them: Pillow's for a JPEG, the raw profile for a PNG."""
    im = opened(data)
    if im.format == "PNG":
        text = im.text.get("Raw profile type iptc")
        return read_iim(bytes.fromhex("".join(text.split()[2:]))) if text else {}
    from PIL import IptcImagePlugin
    return {key: (value[0] if isinstance(value, list) else value)
            for key, value in (IptcImagePlugin.getiptcinfo(im) or {}).items()}

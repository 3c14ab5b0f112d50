"""Genuine images with location metadata (EXIF GPS, XMP) and an orientation, in the
four formats the shipped image_metadata transform handles, made by Pillow and
pillow-heif; and what tests read back from them."""
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

"""Genuine sample files of every type the validator allows by default, for tests (this
project's, and plugins' through the testing kit's ``upload_sample`` fixture).

``make_sample(ext, directory)`` returns ``directory / f"sample.{ext}"``: doc, docx, pdf,
rar and the videos (mp4, webm, mov) are copied from this package's folder (README.md there
says where each came from); everything else is generated with Pillow (HEIC and HEIF through
pillow-heif), py7zr or the standard library, each imported only for its own type.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw

SAMPLES_DIR = Path(__file__).parent

ALLOWED_EXTENSIONS = (
    "jpg", "jpeg", "png", "gif", "webp", "heic", "heif", "avif", "svg", "pdf", "doc", "docx",
    "txt", "csv", "zip", "rar", "7z", "tar", "gz", "mp4", "webm", "mov",
)

# Real files made by LibreOffice or ffmpeg, or copied from the rarfile sdist. The videos are
# 64x48, two seconds: red for the first, blue for the second (so a poster frame at 1 s is blue).
CHECKED_IN = ("doc", "docx", "pdf", "rar", "mp4", "webm", "mov")

TEXT = (
    "The quick brown fox jumps over the lazy dog.\n"
    "Grüße aus Köln — naïve café für 2½ €.\n"
    "This is a small plain-text sample used by the upload tests.\n"
)

CSV = (
    "name,age,city\n"
    "Alice,34,London\n"
    "Bob,27,Paris\n"
    "Carla,45,Berlin\n"
    "Dmitri,31,Prague\n"
    "Eve,29,Lisbon\n"
)

SVG = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48" '
    'viewBox="0 0 64 48">\n'
    '  <rect width="64" height="48" fill="#8ecae6"/>\n'
    '  <circle cx="20" cy="18" r="8" fill="#ffb703"/>\n'
    '  <path d="M0 48 L24 26 L40 40 L52 30 L64 48 Z" fill="#219ebc"/>\n'
    "</svg>\n"
)


def _photo(mode: str = "RGB") -> Image.Image:
    """A 64x48 'landscape' with gradients and shapes (not a flat colour)."""
    img = Image.new(mode, (64, 48))
    pixels = img.load()
    for y in range(48):
        for x in range(64):
            rgb = (40 + x * 3, 90 + y * 2, 200 - y * 2)
            pixels[x, y] = rgb + (255,) if mode == "RGBA" else rgb
    draw = ImageDraw.Draw(img)
    draw.ellipse((8, 6, 24, 22), fill=(255, 200, 40))
    draw.polygon([(0, 47), (22, 24), (40, 40), (52, 30), (63, 47)], fill=(30, 110, 60))
    return img


def _write_image(path: Path, fmt: str) -> None:
    if fmt == "PNG":
        img = _photo("RGBA")
        # Make the top-right corner transparent and a band semi-transparent.
        ImageDraw.Draw(img).rectangle((44, 0, 63, 12), fill=(0, 0, 0, 0))
        ImageDraw.Draw(img).rectangle((0, 14, 63, 16), fill=(255, 255, 255, 128))
        img.save(path, "PNG")
    elif fmt == "GIF":
        _photo().convert("P", palette=Image.ADAPTIVE).save(path, "GIF")
    elif fmt == "JPEG":
        _photo().save(path, "JPEG", quality=85)
    elif fmt in ("HEIC", "HEIF"):
        path.write_bytes(heif_bytes(_photo(), brand=b"heic" if fmt == "HEIC" else b"mif1"))
    else:
        _photo().save(path, fmt)


def heif_bytes(img: Image.Image, brand: bytes = b"heic", **options) -> bytes:
    """``img`` as libheif's HEVC encoder writes it (pillow-heif): a HEIC, whose ftyp box
    says ``heic``; with ``brand=b"mif1"`` its major brand is the generic HEIF one (as
    some cameras write .heif files), the rest unchanged (mif1 is among its compatible brands)."""
    import pillow_heif

    out = io.BytesIO()
    pillow_heif.from_pillow(img).save(out, quality=options.pop("quality", 80), **options)
    data = out.getvalue()
    assert data[4:12] == b"ftypheic", data[:16]
    return data[:8] + brand + data[12:]


def make_sample(ext: str, directory: Path) -> Path:
    """Create a genuine ``sample.<ext>`` in ``directory`` and return its path."""
    ext = ext.lower().lstrip(".")
    if ext not in ALLOWED_EXTENSIONS:
        raise ValueError(f"no sample for extension {ext!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"sample.{ext}"

    if ext in CHECKED_IN:
        shutil.copyfile(SAMPLES_DIR / f"sample.{ext}", path)
    elif ext in ("jpg", "jpeg"):
        _write_image(path, "JPEG")
    elif ext in ("png", "gif", "webp", "heic", "heif", "avif"):
        _write_image(path, ext.upper())
    elif ext == "svg":
        path.write_text(SVG, encoding="utf-8")
    elif ext == "txt":
        path.write_text(TEXT, encoding="utf-8")
    elif ext == "csv":
        path.write_text(CSV, encoding="utf-8")
    elif ext == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("hello.txt", TEXT)
    elif ext == "7z":
        import py7zr  # the tests' dependency: only this type needs it

        with py7zr.SevenZipFile(path, "w") as archive:
            archive.writestr(TEXT, "hello.txt")
    elif ext == "tar":
        data = TEXT.encode("utf-8")
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        info.mtime = 1_700_000_000
        with tarfile.open(path, "w") as tf:
            tf.addfile(info, io.BytesIO(data))
    elif ext == "gz":
        path.write_bytes(gzip.compress(TEXT.encode("utf-8"), mtime=0))
    return path

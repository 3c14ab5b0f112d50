"""The corpus is what it claims to be: otherwise a refusal (or an acceptance)
would prove nothing about the service."""
from __future__ import annotations

import gzip
import io
import zipfile
import zlib

import pytest
from PIL import Image

from tests.hostile import corpus
from tests.hostile.corpus import KiB, MiB


@pytest.mark.parametrize("make,first,payload", [
    (corpus.jpeg_zip, "JPEG", corpus.PAYLOAD),
    (corpus.gif_jar, "GIF", "META-INF/MANIFEST.MF"),
    (corpus.html_in_png, "PNG", None),
], ids=["jpeg+zip", "gif+jar", "html-in-png"])
def test_image_polyglots_are_valid_images_and_carry_their_payload(make, first, payload):
    data = make()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == first
        im.load()
    if payload:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:  # unzip reads the same bytes from the end
            assert payload in zf.namelist()
    else:
        assert corpus.HTML_PAYLOAD.encode() in data[:1024]


def test_pdf_zip_is_a_pdf_and_a_zip():
    data = corpus.pdf_zip()
    assert data.startswith(b"%PDF-") and b"%%EOF" in data
    assert zipfile.ZipFile(io.BytesIO(data)).read(corpus.PAYLOAD).startswith(b"unzipped")


@pytest.mark.parametrize("make", [corpus.jar, corpus.jar_as_the_jar_tool_makes_it,
                                  corpus.docx_that_is_a_jar, corpus.docx_carrying_a_jar])
def test_the_jars_have_a_manifest_naming_a_main_class(make):
    with zipfile.ZipFile(io.BytesIO(make())) as zf:
        assert b"Main-Class: Evil" in zf.read("META-INF/MANIFEST.MF")
        assert zf.read("Evil.class").startswith(b"\xca\xfe\xba\xbe")


def test_the_docx_polyglots_are_complete_documents():
    for data in (corpus.docx_that_is_a_jar(), corpus.docx_carrying_a_jar(), corpus.docx_with_a_large_part_first()):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            assert "[Content_Types].xml" in names and b"<w:body" in zf.read("word/document.xml")


@pytest.mark.parametrize("data,size", [
    (corpus.png_flood(), (60000, 60000)),
    (corpus.gif_flood(), (65535, 65535)),
    (corpus.webp_flood(), (16384, 16384)),
], ids=["png", "gif", "webp"])
def test_floods_are_tiny_and_declare_huge_sizes_that_pillow_reads(data, size):
    assert len(data) < 2 * KiB
    assert corpus.declared_size(data) == size
    # Pillow's own guard trips on the declared size: it is read, not invented by us.
    with pytest.raises(Image.DecompressionBombError, match=f"{size[0] * size[1]} pixels"):
        Image.open(io.BytesIO(data))


def test_the_deflate_trick_expands_to_exactly_the_zeros_it_claims():
    size = 8 * MiB
    data = corpus.gzip_bomb(size)
    assert gzip.decompress(data) == bytes(size)  # CRC and length checked by gzip itself
    with zipfile.ZipFile(io.BytesIO(corpus.zip_bomb(size))) as zf:
        assert zf.testzip() is None and zf.getinfo("zeros.bin").file_size == size


def test_the_bombs_have_a_ratio_near_1000_to_1():
    gz = corpus.gzip_bomb()
    assert len(gz) < 1.1 * MiB
    assert int.from_bytes(gz[-4:], "little") == corpus.GiB % 2 ** 32  # ISIZE: 1 GiB mod 2**32 = 0
    # The first MiB of the stream really is zeros (inflating all of it takes seconds: the 8 MiB test proves the trick).
    assert zlib.decompressobj(31).decompress(gz, MiB) == bytes(MiB)
    zb = corpus.zip_bomb()
    assert zipfile.ZipFile(io.BytesIO(zb)).getinfo("zeros.bin").file_size == corpus.GiB
    assert len(zb) < 1.1 * MiB


def test_the_nested_bomb_expands_to_256_gib_from_a_few_hundred_kib():
    data = corpus.nested_zip_bomb()
    assert len(data) < 1 * MiB
    assert corpus.expanded_size(data) == 256 * corpus.GiB


def test_billion_laughs_expands_to_ten_billion_lols():
    data = corpus.svg_billion_laughs()
    assert len(data) < 2 * KiB
    assert data.count(b"&lol8;") == 10 and b'<!ENTITY lol0 "lol">' in data

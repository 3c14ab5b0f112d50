"""Original names are kept as metadata only, made safe first."""
from __future__ import annotations

import pytest

from gateway.ingest.names import MAX_NAME_BYTES, extension, sanitize


@pytest.mark.parametrize("raw,clean", [
    ("photo.jpg", "photo.jpg"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\report.pdf", "report.pdf"),
    ("evil\u202egpj.exe", "evilgpj.exe"),          # right-to-left override removed
    ("a\x00b.txt", "ab.txt"),
    ("line\r\nbreak.txt", "linebreak.txt"),
    ("zero\u200bwidth.png", "zerowidth.png"),
    ("  spaced   out .txt  ", "spaced out .txt"),
    ("...hidden", "hidden"),
    ("", "unnamed"),
    ("/", "unnamed"),
    ("Cafe\u0301.txt", "Café.txt"),                # NFC
])
def test_sanitize(raw, clean):
    assert sanitize(raw) == clean


def test_long_names_keep_their_extension_within_255_bytes():
    name = sanitize("ж" * 300 + ".docx")
    assert name.endswith(".docx")
    assert len(name.encode()) <= MAX_NAME_BYTES
    name.encode().decode("utf-8")  # never cut inside a character


@pytest.mark.parametrize("name,ext", [("a.JPG", "jpg"), ("a.tar.gz", "gz"), ("noext", ""), ("a.", ""),
                                      ("a.p/hp", ""), ("a." + "x" * 20, ""),
                                      ("x.t\u00fct", ""), ("x.\u00b2", "")])
def test_extension(name, ext):
    assert extension(name) == ext

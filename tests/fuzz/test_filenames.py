"""gateway.ingest.names: whatever a client calls its file, the kept name is safe to
store and show, and the extension safe to put in a stored name."""
from __future__ import annotations

import unicodedata

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.ingest.names import MAX_NAME_BYTES, extension, sanitize
from tests.fuzz import bounded

# Every code point, surrogates and unassigned ones included: a name may come
# from anywhere (werkzeug's multipart parser, base64 tus metadata).
ANY_CHAR = st.characters(codec=None, categories=None)
# The characters that make names interesting, drawn far more often than chance would.
TRICKY = st.sampled_from([
    "/", "\\", ".", " ", "\x00", "\r", "\n", "\t", "\x7f", "\x85", "\u00a0", "\u2028", "\u3000",
    "\u202e", "\u202d", "\u200b", "\u200d", "\u2066", "\ufeff", "\u061c",      # bidi and zero-width
    "\u0301", "\u0308", "\u0327", "e", "A", "\u00e9", "\u1100", "\u1161", "\u11a8",  # combining, Hangul jamo
    "\ud800", "\udfff", "\ue000", "\U000f0000", "\U0001f600", "\u0378",         # surrogates, private, unassigned
    "ж", "漢", "\uff0f", "\u2215",
])
PIECES = st.one_of(TRICKY, st.sampled_from(["jpg", "JPG", "tar", "gz", "txt", ".."]), st.text(ANY_CHAR, max_size=3))
NAMES = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.lists(PIECES, max_size=30).map("".join),
    # Long names: the 255-byte cut, with and without an extension.
    st.tuples(st.text(st.one_of(TRICKY, ANY_CHAR), min_size=60, max_size=300),
              st.sampled_from(["", ".txt", ".JPG", ".docx", ". x", ".\u0301", "." + "x" * 17])).map("".join),
)

FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


def _check_clean(name: str) -> None:
    assert name, "sanitize must never give an empty name"
    assert "/" not in name and "\\" not in name
    bad = [ch for ch in name if unicodedata.category(ch) in FORBIDDEN_CATEGORIES]
    assert not bad, f"control, format (bidi, zero-width) or unassigned characters kept: {bad!r}"
    assert unicodedata.is_normalized("NFC", name)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name == name.strip(" ."), "leading or trailing dots and spaces kept"
    assert "  " not in name and not any(ch.isspace() and ch != " " for ch in name)


@bounded(1500)
@given(NAMES)
# Found by this test: a zero-width character between a letter and its accent
# kept the pair apart, so the result was not NFC (and a second pass changed it).
@example("e\u200b\u0301.txt")
@example("\u1100\u200b\u1161")
def test_sanitized_names_are_clean_and_stable(raw):
    name = sanitize(raw)
    _check_clean(name)
    assert sanitize(name) == name, "sanitize is not idempotent"


@bounded(300)
@given(st.text(ANY_CHAR, max_size=5), st.text(ANY_CHAR, max_size=5))
def test_only_the_last_path_component_counts(directory, base):
    """Whatever comes before the last separator never reaches the name."""
    assert sanitize(f"{directory}/{base}") == sanitize(base)
    assert sanitize(f"{directory}\\{base}") == sanitize(base)


@bounded(500)
@given(NAMES)
def test_extensions_are_lowercase_ascii_or_empty(raw):
    for name in (raw, sanitize(raw)):
        ext = extension(name)
        assert ext == "" or (ext.isascii() and ext.isalnum() and ext == ext.lower() and len(ext) <= 16)
        # A stored name is "<32 hex>.<ext>": the extension must fit storage's pattern.
        assert ext == "" or all(c in "abcdefghijklmnopqrstuvwxyz0123456789" for c in ext)


@bounded(300)
@given(st.text(st.characters(codec="ascii", categories=("L", "Nd")), min_size=1, max_size=16),
       st.text(ANY_CHAR, min_size=60, max_size=400))
def test_long_names_keep_a_short_extension(ext, stem):
    """Cut to 255 bytes, a name keeps its extension (when the stem keeps anything to hang it on)."""
    name = sanitize(f"{stem}.{ext}")
    _check_clean(name)
    if len(sanitize(stem).encode()) + len(ext) + 1 > MAX_NAME_BYTES and sanitize(stem) != "unnamed":
        assert name.endswith("." + ext)
    assert extension(name) in ("", ext.lower())

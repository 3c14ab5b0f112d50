"""Original file names, made safe to keep as metadata and to show."""
from __future__ import annotations

import re
import unicodedata

MAX_NAME_BYTES = 255
# Path separators; below, every character that compatibility normalization
# (NFKC/NFKD) turns into one or into text holding one: FULLWIDTH SOLIDUS,
# FULLWIDTH and SMALL REVERSE SOLIDUS, and the U+2100 family ("a/c", "c/o").
# Clients that fold names that way would find a path in them: the ASCII
# fallback of Content-Disposition (werkzeug folds with NFKD, so
# "..\uff0fetc\uff0fpasswd" went out as filename="../etc/passwd"), search
# indexes, Windows' "best fit" code pages.
_SEPARATORS = re.compile(r"[/\\]")
# Those lookalikes are not separators to the person who typed them ("資料／2024.pdf"),
# so they become "_" rather than cutting the name.
_LOOKALIKES = re.compile(r"[\uff0f\uff3c\ufe68\u2100\u2101\u2105\u2106]")
# Control and format characters: NUL, CR/LF, bidi overrides (RTLO), zero-width
# joiners... none belongs in a file name and several are used to disguise one.
_DROP_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


def sanitize(name: str) -> str:
    """Keep only the last path component, turn separator lookalikes into "_", drop
    control/format characters, normalise to NFC, trim dots and spaces, and cap
    at 255 UTF-8 bytes while keeping the extension. Never empty."""
    name = _LOOKALIKES.sub("_", _SEPARATORS.split(name or "")[-1])
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROP_CATEGORIES)
    # After the drop: a zero-width character between a letter and its accent
    # kept them apart, and removing it leaves a pair NFC must compose.
    name = unicodedata.normalize("NFC", name)
    name = " ".join(name.split()).strip(" .")
    if len(name.encode()) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if not dot or len(ext) > 16:
            stem, ext = name, ""
        suffix = f".{ext}" if ext else ""
        budget = MAX_NAME_BYTES - len(suffix.encode())
        stem = stem.encode()[:budget].decode("utf-8", errors="ignore").rstrip(" .")
        name = stem + suffix
    return name or "unnamed"


def extension(name: str) -> str:
    _, dot, ext = name.rpartition(".")
    # ASCII only: an extension becomes part of the stored name.
    return ext.lower() if dot and ext.isascii() and ext.isalnum() and len(ext) <= 16 else ""


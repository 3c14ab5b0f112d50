"""Strategies shared by the fuzz tests: what a client can put in a header."""
from __future__ import annotations

import base64

from hypothesis import strategies as st

# A WSGI server hands header values over as latin-1 text (PEP 3333): any byte
# but CR and LF, which end the line (the test client refuses them too).
HEADER_CHAR = st.characters(codec="latin-1", exclude_characters="\r\n")
# Any text at all, for functions that may be called with values from elsewhere.
ANY_CHAR = st.characters(codec=None, categories=None)


def header_text(max_size: int = 40, *pieces: str) -> st.SearchStrategy[str]:
    """Header values: random latin-1 text, mixed with pieces that look like the real thing."""
    words = st.sampled_from(pieces) if pieces else st.nothing()
    return st.one_of(
        st.text(HEADER_CHAR, max_size=max_size),
        st.lists(st.one_of(words, st.text(HEADER_CHAR, max_size=4),
                           st.sampled_from([" ", ",", ";", "=", "-", "\t", "\x00", "\xff"])),
                 max_size=12).map("".join),
    )


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode("utf-8") if isinstance(text, str) else text).decode("ascii")


# tus metadata keys: printable ASCII without spaces or commas, never empty.
METADATA_KEY = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","),
                       min_size=1, max_size=12)
# Values: any text UTF-8 can carry (no lone surrogates).
METADATA_VALUE = st.text(st.characters(codec="utf-8"), max_size=30)

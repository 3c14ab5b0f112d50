"""libmagic, bounded: how much it reads and which of its tests run, so that no
head costs it much more than ordinary text does.

Its text tests were the cost: on libmagic 5.44, 64 KiB of newlines took 0.3 s
of CPU (130 times ordinary text), of spaces, tabs or carriage returns 80 ms.
A run of whitespace is walked once by each of many search tests, and regexes
such as ``^[[:space:]]*(class|module)`` start again at every blank line, so
the cost grows with the length of the run (and with its square for the
regexes). The bounds, and what they cost in precision:

- libmagic is handed at most MAGIC_HEAD (64 KiB), and BYTES_MAX says the same:
  every built-in type is recognised from there;
- ENCODING_MAX: the text analysis (the encoding, then the text tests) reads
  the first TEXT_BYTES only, so text followed by binary past them is text;
- REGEX_MAX: a regex test scans REGEX_BYTES at most, so a source file whose
  telltale line comes later (C after a long licence comment) is text/plain;
- no decompression, no OS/2 application types, no ELF details (an ELF is
  refused from its magic whatever its sections say);
- INDIR_MAX and NAME_MAX, libmagic's recursion limits, are pinned here so that
  no version's defaults can raise them.

The README ("libmagic's cost per file") has the numbers before and after.
"""
from __future__ import annotations

import logging
import threading

import magic

log = logging.getLogger("upload.validator")

# What libmagic looks at. Every built-in type is recognised from its first
# bytes (tar's magic is at 257, OOXML's part names in the first local headers).
MAGIC_HEAD = 64 * 1024
TEXT_BYTES = 4 * 1024
REGEX_BYTES = 1024
# magic.h's MAGIC_PARAM_ENCODING_MAX (libmagic 5.40 and later); python-magic 0.4.27 lacks the name.
MAGIC_PARAM_ENCODING_MAX = 7

FLAGS = (magic.MAGIC_MIME_TYPE | magic.MAGIC_NO_CHECK_COMPRESS | magic.MAGIC_NO_CHECK_APPTYPE
         | magic.MAGIC_NO_CHECK_ELF)
PARAMS = {
    magic.MAGIC_PARAM_BYTES_MAX: MAGIC_HEAD,
    MAGIC_PARAM_ENCODING_MAX: TEXT_BYTES,
    magic.MAGIC_PARAM_REGEX_MAX: REGEX_BYTES,
    magic.MAGIC_PARAM_INDIR_MAX: 50,  # libmagic's default
    magic.MAGIC_PARAM_NAME_MAX: 64,  # python-magic's (libmagic's 50 fails on some genuine files)
}

# libmagic handles are not thread-safe; one per worker thread.
_local = threading.local()
_unsupported: set[int] = set()


def bounded_handle() -> magic.Magic:
    handle = magic.Magic(mime=True)
    magic.magic_setflags(handle.cookie, FLAGS)
    handle.flags = FLAGS
    for param, value in PARAMS.items():
        try:
            handle.setparam(param, value)
        except (magic.MagicException, NotImplementedError):
            if param not in _unsupported:  # said once, not by each worker thread
                _unsupported.add(param)
                log.warning("this libmagic has no parameter %d: its cost per file is not bounded by it", param)
    return handle


def handle() -> magic.Magic:
    """This thread's bounded libmagic handle."""
    existing = getattr(_local, "handle", None)
    if existing is None:
        existing = _local.handle = bounded_handle()
    return existing


def detect_mime(data: bytes) -> str:
    if not data:
        return "application/x-empty"
    return handle().from_buffer(data[:MAGIC_HEAD])

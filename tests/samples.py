"""Samples for this project's tests: the genuine files of every allowed type
(validator_service.samples, shared with plugins' tests through the testing kit) and the
first bytes of programs."""

from __future__ import annotations

from pathlib import Path

from validator_service.samples import (  # noqa: F401  (re-exported for the tests)
    ALLOWED_EXTENSIONS, CHECKED_IN, CSV, SAMPLES_DIR, SVG, TEXT, heif_bytes, make_sample,
)

# Files only the tests use (tests/fixtures/README.md).
FIXTURES_DIR = Path(__file__).parent / "fixtures"

# The first bytes of programs (a DOS/PE stub and an x86-64 ELF header): what
# a renamed executable starts with.
MZ_HEADER = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48
ELF_HEADER = bytes.fromhex("7f454c46020101000000000000000000") + b"\x02\x00\x3e\x00" + b"\x00" * 44

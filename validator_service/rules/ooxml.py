"""An Office Open XML document (docx) is a zip of XML parts: make sure a zip
named like one is a document and not a program.

libmagic names a docx from its first zip entries; when it cannot (libmagic
older than 5.38, or a large part such as a thumbnail before the word/ parts)
it says application/zip, which the docx type must therefore allow. Two checks
close what that leaves open, on the zip headers in the head libmagic has
already read (no byte is decompressed):

- a docx that libmagic could only call a zip must at least start like a
  package (its first entry one of PACKAGE_PARTS), or any zip (a JAR among
  them) would pass as a document;
- no entry may be Java: a JAR manifest or a class file makes the document a
  docx/jar polyglot that Word opens and ``java -jar`` runs.

Entries whose headers lie past the head are not seen; a small file is in the
head whole, central directory included.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator

from protos.plugins import hookimpl
from validator_service.fileview import MAGIC_HEAD
from validator_service.hookspecs import Rejection

OOXML = "application/vnd.openxmlformats-officedocument."
# What an OOXML package starts with: libmagic's own first-entry test, and the
# document folders of Word, Excel and PowerPoint.
PACKAGE_PARTS = ("[Content_Types].xml", "_rels/", "docProps/", "customXml/", "word/", "xl/", "ppt/")
LOCAL_HEADER = b"PK\x03\x04"  # name length at 26, name at 30
CENTRAL_HEADER = b"PK\x01\x02"  # name length at 28, name at 46


def entry_names(data: bytes) -> Iterator[tuple[int, str]]:
    """(offset, name) of every local or central zip header found in ``data``."""
    for signature, length_at, name_at in ((LOCAL_HEADER, 26, 30), (CENTRAL_HEADER, 28, 46)):
        at = data.find(signature)
        while at != -1 and at + name_at <= len(data):
            (length,) = struct.unpack_from("<H", data, at + length_at)
            yield at, data[at + name_at:at + name_at + length].decode("utf-8", errors="replace")
            at = data.find(signature, at + 4)


def is_java(name: str) -> bool:
    name = name.lower()
    return name == "meta-inf/manifest.mf" or name.endswith(".class")


@hookimpl(tryfirst=True)
def upload_check(file, policy):
    file_type = policy.type_for(file.extension)
    if file_type is None or not any(m.startswith(OOXML) for m in file_type.mime_types):
        return None
    head = file.head(MAGIC_HEAD)
    entries = sorted(entry_names(head))
    java = next((name for _, name in entries if is_java(name)), None)
    if java is not None:
        return Rejection(
            "executable_content",
            f"The file is named .{file.extension} but carries Java code ({java}); programs are not accepted.",
        )
    if file.detected_type == "application/zip":
        first = entries[0][1] if entries and entries[0][0] == 0 else ""
        if not first.startswith(PACKAGE_PARTS):
            return Rejection(
                "content_mismatch",
                f"The file is named .{file.extension} but its content is a plain zip archive "
                f"(application/zip), not {file_type.mime_types[0]}.",
            )
    return None

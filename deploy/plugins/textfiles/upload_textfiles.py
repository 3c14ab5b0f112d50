"""An example upload-service plugin, installable on its own.

Installed (``pip install deploy/plugins/textfiles``), it changes the service:

* accepts Markdown files (``.md``, ``.markdown``);
* refuses ``.doc``: legacy Word binaries are where macro malware lives;
* refuses text files (txt, csv, md) that are not valid UTF-8, with the reason
  code ``text_not_utf8``;
* renders a thumbnail of text files: their first lines on a white card.
"""
from __future__ import annotations

import codecs

from PIL import Image, ImageDraw, ImageFont

from protos.plugins import hookimpl
from thumbnail_service.hookspecs import Renderer
from validator_service.hookspecs import FileType, Rejection

TEXT_EXTENSIONS = {"txt", "csv", "md", "markdown"}
MARKDOWN_TYPES = ("text/markdown", "text/plain", "text/x-markdown")


@hookimpl
def upload_file_types():
    yield FileType("md", MARKDOWN_TYPES)
    yield FileType("markdown", MARKDOWN_TYPES)


@hookimpl
def upload_removed_file_types():
    return ["doc"]


@hookimpl
def upload_check(file, policy):
    if file.extension not in TEXT_EXTENSIONS:
        return None
    head = file.head(64 * 1024)
    try:
        # Not final unless the head is the whole file: a character cut in two
        # at the end of the head is not an error.
        final = file.whole and file.size == len(head)
        codecs.getincrementaldecoder("utf-8")().decode(head, final=final)
    except UnicodeDecodeError as exc:
        return Rejection(
            "text_not_utf8",
            f"Text files must be UTF-8; this one has an invalid byte at position {exc.start}.",
        )
    return None


def render_text(source, box):
    lines = source.read(4096).decode("utf-8", errors="replace").splitlines()[:14]
    card = Image.new("RGB", box, "white")
    draw = ImageDraw.Draw(card)
    font = ImageFont.load_default()
    for row, line in enumerate(lines):
        draw.text((6, 4 + row * 14), line[:40], fill="black", font=font)
    return card


@hookimpl
def upload_thumbnail_renderers():
    yield Renderer("text-preview", ("text/plain", "text/markdown", "text/csv"), render_text)

"""The built-in PDF renderer: the first page, drawn by PDFium (pypdfium2).

The page is drawn at the scale that fits it in the thumbnail's box (a page has
no size in pixels; its points are scaled up or down), on white, annotations
included, its /Rotate applied. PDFium parses a hostile file in the render's own
process, under its CPU and memory budget like any decoder.

PDFium is not thread-safe: no two of its calls may run at once in one
process, not even on different documents. Each render has a process of its
own (thumbnail_service.isolation), and within one process a lock serializes
every use of PDFium here, so a plugin that renders from several threads is
safe too.
"""
from __future__ import annotations

import logging
import threading
from typing import BinaryIO

import pypdfium2 as pdfium
from PIL import Image

from protos.errors import InvalidInput
from protos.plugins import hookimpl
from thumbnail_service.hookspecs import Renderer

log = logging.getLogger("upload.thumbnail")

PDF_TYPES = ("application/pdf",)
_PDFIUM = threading.Lock()


def render_pdf(source: BinaryIO, box: tuple[int, int]) -> Image.Image:
    data = source.read()  # PDFium reads a document from its end (the cross-reference table)
    with _PDFIUM:
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            log.info("unreadable PDF: %s", exc)
            raise InvalidInput(f"The PDF cannot be read ({_reason(exc)}).") from None
        try:
            page = document[0]
            try:
                width, height = page.get_size()  # points, /Rotate applied
                if not (width > 0 and height > 0):
                    raise InvalidInput(f"The PDF's first page is {width}x{height} points.")
                scale = min(box[0] / width, box[1] / height)
                bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255), may_draw_forms=False)
                try:
                    # The image shares the bitmap's memory until copied.
                    image = bitmap.to_pil().convert("RGB")
                finally:
                    bitmap.close()
            finally:
                page.close()
        except pdfium.PdfiumError as exc:
            log.info("unrenderable PDF: %s", exc)
            raise InvalidInput(f"The PDF's first page cannot be drawn ({_reason(exc)}).") from None
        finally:
            document.close()
    return image


def _reason(error: pdfium.PdfiumError) -> str:
    """PDFium's own words, e.g. 'Failed to load document (PDFium: Data format error).'"""
    text = str(error).rstrip(".")
    return text[:1].lower() + text[1:]


@hookimpl
def upload_thumbnail_renderers():
    yield Renderer("pdfium", PDF_TYPES, render_pdf)

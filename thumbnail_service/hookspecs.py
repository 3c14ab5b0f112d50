"""Hooks of the thumbnail service.

A plugin adds renderers: functions that turn a file of some MIME type into a
small Pillow image. The built-in Pillow renderer for raster images is
registered the same way (``thumbnail_service.renderers``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from PIL import Image

from protos.plugins import hookspec

# render(source, (max_width, max_height)) -> an image no larger than the box.
# ``source`` is a seekable, read-only binary file holding the whole upload.
# The upload may still be arriving: a read waits for the bytes it asks for, so
# read only what you need. It has no fileno(). Raise protos.errors.InvalidInput
# for a damaged file, TooLarge for one over limits.
RenderFunction = Callable[[BinaryIO, tuple[int, int]], Image.Image]


@dataclass(frozen=True)
class Renderer:
    name: str
    mime_types: tuple[str, ...]
    render: RenderFunction


@hookspec
def upload_thumbnail_renderers() -> Iterable[Renderer]:
    """Register thumbnail renderers. Registration hook: called once at start-up.

    For each MIME type the renderer of the most recently registered plugin
    wins, so a plugin can also replace the built-in one. ``render`` runs on
    a thread of its own, one per call, while the call's thread still receives
    the upload (blocking is fine; the thread is joined before the call ends).
    If the upload fails meanwhile, reading ``source`` raises and the call
    reports the upload's error. The service encodes what ``render`` returns
    (PNG when it has transparency, JPEG otherwise). Example::

        @hookimpl
        def upload_thumbnail_renderers():
            yield Renderer("text", ("text/plain",), render_first_lines)
    """

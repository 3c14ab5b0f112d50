"""Hooks of the thumbnail service.

A plugin adds renderers: functions that turn a file of some MIME type into a
small Pillow image. The built-in Pillow renderer for raster images is
registered the same way (``thumbnail_service.renderers``).
"""
from __future__ import annotations

from collections.abc import Iterable

from protos.plugins import hookspec
from thumbnail_service.types import Renderer, RenderFunction

# What the hooks give back, importable from here as the README shows plugin authors.
__all__ = ["Renderer", "RenderFunction"]


@hookspec
def upload_thumbnail_renderers() -> Iterable[Renderer]:
    """Register thumbnail renderers. Registration hook: called once at start-up.

    For each MIME type the renderer of the most recently registered plugin
    wins, so a plugin can also replace the built-in one. ``render`` runs in
    a process of its own, one per call, while the call's thread still receives
    the upload (blocking is fine), held to THUMBNAIL_RENDER_CPU seconds of CPU
    and THUMBNAIL_RENDER_MEMORY bytes (past them the call is RESOURCE_EXHAUSTED).
    It gets there by pickle: a module-level function, or a method of a
    picklable object. If the upload fails meanwhile, the process is stopped
    and the call reports the upload's error. The service encodes what ``render`` returns
    (PNG when it has transparency, JPEG otherwise). Example::

        @hookimpl
        def upload_thumbnail_renderers():
            yield Renderer("text", ("text/plain",), render_first_lines)
    """

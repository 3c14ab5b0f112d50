"""Hooks of the thumbnail service.

A plugin adds renderers: functions that turn a file of some MIME type into a
small Pillow image. The built-in Pillow renderer for raster images is
registered the same way (``thumbnail_service.renderers``). It may also add
transforms: functions that replace an upload's bytes before they are stored
(the shipped one strips image metadata: ``thumbnail_service.metadata``).
"""
from __future__ import annotations

from collections.abc import Iterable

from protos.plugins import hookspec
from thumbnail_service.types import Renderer, RenderFunction, Transform, TransformFunction, TransformResult

# What the hooks give back, importable from here as the README shows plugin authors.
__all__ = ["Renderer", "RenderFunction", "Transform", "TransformFunction", "TransformResult"]


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


@hookspec
def upload_transforms() -> Iterable[Transform]:
    """Register transforms of uploads before they are stored. Registration hook:
    called once at start-up.

    The gateway sends an accepted upload of a MIME type some transform handles
    through them before committing it (IMAGE_METADATA=keep sends nothing); every
    transform of the type runs, in registration order, each on the previous one's
    output. ``apply(source, mime_type, parameters)`` returns None when there is
    nothing to change (the upload is stored byte for byte) or a TransformResult
    (the bytes to store, and what was removed, kept in the audit). It runs in a
    process of its own under the render budget (THUMBNAIL_RENDER_CPU,
    THUMBNAIL_RENDER_MEMORY) and gets there by pickle, as a renderer does; raise
    protos.errors.InvalidInput for a file it cannot handle safely (the upload is
    refused, nothing stored). Never change the pixels' meaning: the stored file
    must still be the upload's type. Example::

        @hookimpl
        def upload_transforms():
            yield Transform("no_comments", ("image/jpeg",), drop_jpeg_comments)
    """

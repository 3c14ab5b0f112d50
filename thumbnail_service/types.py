"""What the thumbnail service's hooks give back: small frozen dataclasses (the
hookspecs re-export them, so a plugin imports everything from
``thumbnail_service.hookspecs``)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # every service's plugin manager imports the hookspecs: Pillow only where it renders
    from PIL import Image

# render(source, (max_width, max_height)) -> an image no larger than the box.
# ``source`` is a seekable, read-only binary file holding the whole upload.
# The upload may still be arriving: a read waits for the bytes it asks for, so
# read only what you need. It has no fileno(). Raise protos.errors.InvalidInput
# for a damaged file, TooLarge for one over limits.
RenderFunction = Callable[[BinaryIO, tuple[int, int]], "Image.Image"]


@dataclass(frozen=True)
class Renderer:
    name: str
    mime_types: tuple[str, ...]
    render: RenderFunction


@dataclass(frozen=True)
class TransformResult:
    """What a transform changed: the bytes to store instead of the upload's, and
    short names of what it removed (kept in the file's audit), e.g. ("exif.gps", "xmp")."""
    data: bytes
    removed: tuple[str, ...] = ()


# apply(source, mime_type, parameters) -> None (nothing to change: the upload is stored
# byte for byte) or a TransformResult. ``source`` is a seekable, read-only binary file
# holding the whole upload (as a renderer's); ``mime_type`` is the detected type;
# ``parameters`` are the caller's (the gateway sends ``image_metadata``: IMAGE_METADATA).
# Raise protos.errors.InvalidInput for a file that cannot be transformed safely (the
# gateway then refuses the upload: nothing is stored).
TransformFunction = Callable[[BinaryIO, str, Mapping[str, str]], "TransformResult | None"]


@dataclass(frozen=True)
class Transform:
    name: str
    mime_types: tuple[str, ...]
    apply: TransformFunction

"""A thumbnail renderer for plain text, for the tests of renderers found late (a
thumbnail service restarted with a renderer it did not have). Module-level: the
renderer travels to its render process by pickle."""
from __future__ import annotations

from PIL import Image

from protos.plugins import hookimpl
from thumbnail_service.hookspecs import Renderer


def text_card(source, box):
    source.read()
    return Image.new("RGB", (min(box[0], 120), min(box[1], 80)), "orange")


@hookimpl
def upload_thumbnail_renderers():
    yield Renderer("text-card", ("text/plain",), text_card)

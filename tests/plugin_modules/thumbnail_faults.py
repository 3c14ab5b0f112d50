"""Thumbnail renderers that misbehave on purpose. In a module of their own with few
imports: renderers travel to their render process by pickle, and that process
imports this module before it can start rendering."""
from __future__ import annotations

import time

from PIL import Image

from protos.errors import TimedOut
from protos.plugins import hookimpl
from thumbnail_service.hookspecs import Renderer


def never_in_time(source, box):
    raise TimedOut("This render took too long.")


def waits(source, box):
    time.sleep(600)  # waiting, not working: no CPU budget stops it


class Waits:
    @hookimpl
    def upload_thumbnail_renderers(self):
        yield Renderer("waits", ("application/x-waits",), waits)


class SlowJpegs:
    """JPEG renders that sleep, each leaving a file in ``folder`` when it starts."""

    def __init__(self, folder):
        self.folder = folder

    def render(self, source, box):
        (self.folder / f"render-{time.monotonic_ns()}").touch()
        time.sleep(3)
        return Image.new("RGB", box)

    @hookimpl
    def upload_thumbnail_renderers(self):
        yield Renderer("slow", ("image/jpeg",), self.render)


class TimeoutJpegs:
    @hookimpl
    def upload_thumbnail_renderers(self):
        yield Renderer("never-in-time", ("image/jpeg",), never_in_time)

"""A renderer with a setting (WIDTH): its cards are that wide, read in the render child."""
from PIL import Image

from protos.plugin_settings import Setting
from protos.plugins import hookimpl
from thumbnail_service.hookspecs import Renderer

WIDTH = Setting("WIDTH", default=10, parse=int, help="the card's width, pixels")


def sized_card(source, box):
    source.read()
    return Image.new("RGB", (WIDTH.value, 20), "teal")


@hookimpl
def upload_plugin_settings():
    yield WIDTH


@hookimpl
def upload_thumbnail_renderers():
    yield Renderer("sized-card", ("text/plain",), sized_card)

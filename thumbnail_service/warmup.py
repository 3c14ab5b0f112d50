"""Imported last in the fork server (``isolation.start_fork_server``): renders a few
tiny images once, so that what Pillow loads on first use (its format plugins, the
EXIF reader and the decimal and fractions modules behind it, the encoders) is loaded
there, once, and every render process forked from it starts with it. Without this
each render process imported them again: 7-10 ms of CPU of the ~14 a 640x480 JPEG's
render process cost (`make profile`). Then what the fork server holds is moved out of
the collector's sight (``gc.freeze``), so that a collection in a render process walks
only what the render made, not every object it shares with the fork server."""
from __future__ import annotations

import gc
import io

from PIL import Image

from thumbnail_service.isolation import encode
from thumbnail_service.renderers import render_raster


def warm_up() -> None:
    Image.init()
    for fmt, mode in (("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"), ("WEBP", "RGB")):
        sample = io.BytesIO()
        try:
            Image.new(mode, (16, 12)).save(sample, fmt)
        except (OSError, KeyError):  # a Pillow built without that codec
            continue
        sample.seek(0)
        encode(render_raster(sample, (8, 8), (fmt,)))


warm_up()
gc.freeze()

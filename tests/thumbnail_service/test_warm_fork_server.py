"""The fork server every render process comes from has already rendered once
(thumbnail_service/warmup.py): a render process imports nothing to make a thumbnail
of an ordinary JPEG, PNG, GIF or WebP. Before, each one imported Pillow's format
plugins and the EXIF reader's decimal and fractions again, two thirds of the CPU a
640x480 JPEG's render process cost.

Real render processes from the real fork server; the job is the service's own render,
wrapped to report sys.modules (tests/plugin_modules/import_probe.py)."""
from __future__ import annotations

import ast
import io

import pytest
from PIL import Image

from tests.plugin_modules.import_probe import probe
from thumbnail_service.isolation import Budget, RenderChild, start_fork_server
from thumbnail_service.server import create_plugins


@pytest.fixture(scope="module")
def renderers():
    pm = create_plugins(env={})
    found = [r for group in pm.hook.upload_thumbnail_renderers() for r in group]
    start_fork_server(found)
    return {mime: r for r in found for mime in r.mime_types}


def picture(fmt: str, mode: str) -> bytes:
    out = io.BytesIO()
    image = Image.effect_noise((320, 240), 40).convert(mode)
    image.save(out, fmt, **({"exif": Image.Exif()} if fmt == "JPEG" else {}))
    return out.getvalue()


@pytest.mark.parametrize("mime, fmt, mode", [("image/jpeg", "JPEG", "RGB"), ("image/png", "PNG", "RGBA"),
                                             ("image/gif", "GIF", "P"), ("image/webp", "WEBP", "RGB")])
def test_a_render_process_imports_nothing_to_make_a_thumbnail(renderers, mime, fmt, mode):
    child = RenderChild(renderers[mime].render, (200, 200), Budget(cpu_seconds=10, memory_bytes=512 * 2**20),
                        job=probe)
    child.append(picture(fmt, mode))
    child.end()
    outcome, imported = ast.literal_eval(child.result()[0].decode())
    assert outcome == "ok"
    assert imported == []

"""Large test images that compress like photos, not like flat colour."""
from __future__ import annotations

from pathlib import Path

from PIL import Image


def photo_like(width: int, height: int) -> Image.Image:
    """Gradients (sky, light falloff) under blotchy low-frequency noise (texture)
    plus fine grain (sensor noise): JPEG and PNG sizes land near real photos',
    and decoders cannot take flat-colour shortcuts."""
    size = (width, height)
    across = Image.linear_gradient("L").rotate(90).resize(size)
    down = Image.linear_gradient("L").resize(size)
    grain = Image.effect_noise(size, 40)
    bands = []
    for gradient in (across, down, across.transpose(Image.Transpose.FLIP_LEFT_RIGHT)):
        blotches = Image.effect_noise((width // 48 + 2, height // 48 + 2), 60)
        blotches = blotches.resize(size, Image.Resampling.BICUBIC)
        bands.append(Image.blend(Image.blend(gradient, blotches, 0.5), grain, 0.2))
    return Image.merge("RGB", bands)


def write_jpeg(path: Path, width: int, height: int) -> Path:
    photo_like(width, height).save(path, "JPEG", quality=90)
    return path


def write_png(path: Path, width: int, height: int) -> Path:
    photo_like(width, height).save(path, "PNG")
    return path

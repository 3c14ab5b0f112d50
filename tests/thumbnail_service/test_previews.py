"""Previews beyond raster images: HEIC/HEIF and AVIF (pillow-heif, Pillow), the
first page of a PDF (PDFium) and a poster frame of a video (ffmpeg), each in the
render's own process and under its budget; damaged files are refusals, never
crashes; PDFium, which is not thread-safe, gives right answers to concurrent renders."""
from __future__ import annotations

import io
import os
import stat
import struct
import subprocess
import sys
import threading
import time
from functools import partial

import grpc
import pytest
from PIL import Image

from protos.plugins import hookimpl
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc
from tests.conftest import render
from tests.images import encode
from tests.samples import heif_bytes, make_sample
from tests.thumbnail_service.test_budget import eventually, gone, render_call
from tests.thumbnail_service.test_render import open_thumb
from tests.thumbnail_service.test_streaming import render_children
from thumbnail_service.config import Settings
from thumbnail_service.hookspecs import Renderer
from thumbnail_service.pdf import render_pdf
from thumbnail_service.server import create_plugins
from thumbnail_service.isolation import Budget, OverBudget
from thumbnail_service.video import _frame, render_video

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def near(pixel, colour, slack: int = 40) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(pixel[:3], colour))


def centre(im: Image.Image):
    return im.convert("RGB").getpixel((im.width // 2, im.height // 2))


def rpc_error(channel, data: bytes, mime: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        render(channel, data, mime)
    return info.value


def test_the_service_lists_every_new_type(thumbnailer):
    stub = thumbnail_pb2_grpc.ThumbnailStub(thumbnailer.channel)
    types = set(stub.GetRenderers(thumbnail_pb2.GetRenderersRequest(), timeout=5).mime_types)
    assert {"image/heic", "image/heif", "image/avif", "application/pdf",
            "video/mp4", "video/webm", "video/quicktime", "video/x-m4v"} <= types


# --- HEIC, HEIF, AVIF ---

@pytest.mark.parametrize("ext,mime", [("heic", "image/heic"), ("heif", "image/heif"), ("avif", "image/avif")])
def test_heif_and_avif_samples_render(thumbnailer, tmp_path, ext, mime):
    reply = render(thumbnailer.channel, make_sample(ext, tmp_path).read_bytes(), mime)
    assert (reply.width, reply.height) == (64, 48)
    open_thumb(reply)


def turned(width: int, height: int) -> tuple[Image.Image, bytes]:
    """Stored width x height, red left third, shown turned a quarter clockwise (EXIF 6)."""
    im = Image.new("RGB", (width, height), "blue")
    im.paste("red", (0, 0, width // 3, height))
    exif = Image.Exif()
    exif[0x0112] = 6
    return im, exif.tobytes()


@pytest.mark.parametrize("fmt", ["HEIC", "AVIF"])
def test_a_turned_heif_or_avif_is_shown_turned(thumbnailer, fmt):
    im, exif = turned(400, 200)
    # pillow-heif writes the turn as an irot box (libheif turns it back while decoding);
    # Pillow's AVIF keeps it as the EXIF orientation, applied like a JPEG's.
    data = heif_bytes(im, exif=exif) if fmt == "HEIC" else encode(im, "AVIF", exif=exif)
    thumb = open_thumb(render(thumbnailer.channel, data, f"image/{fmt.lower()}")).convert("RGB")
    assert thumb.size == (100, 200)
    assert near(thumb.getpixel((50, 5)), RED) and near(thumb.getpixel((50, 195)), BLUE)


def test_a_large_heic_renders_within_the_box(thumbnailer):
    noise = Image.frombytes("RGB", (1600, 1200), os.urandom(1600 * 1200 * 3))
    reply = render(thumbnailer.channel, heif_bytes(noise, quality=50), "image/heic", box=(200, 200))
    assert (reply.width, reply.height) == (200, 150)


def test_a_heic_declaring_a_flood_is_refused(thumbnailer, tmp_path):
    heic = make_sample("heic", tmp_path).read_bytes()
    at = heic.index(b"ispe") + 4
    flood = heic[:at] + b"\0\0\0\0" + struct.pack(">II", 60000, 60000) + heic[at + 12:]
    assert rpc_error(thumbnailer.channel, flood, "image/heic").code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("ext", ["heic", "avif"])
def test_a_damaged_heif_or_avif_is_invalid(thumbnailer, tmp_path, ext):
    data = make_sample(ext, tmp_path).read_bytes()
    for damaged in (data[:len(data) // 2], data[:40] + os.urandom(len(data) - 40)):
        error = rpc_error(thumbnailer.channel, damaged, f"image/{ext}")
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()


# --- PDF ---

def pdf_page(colour: str, size: tuple[int, int]) -> bytes:
    """A genuine one-page PDF (Pillow's writer): ``size`` points, filled with ``colour``."""
    return encode(Image.new("RGB", size, colour), "PDF", resolution=72)


PAGES = {  # colour: (page size in points, its thumbnail in a 200x200 box)
    "red": ((300, 200), (200, 134)),
    "lime": ((200, 300), (134, 200)),
    "blue": ((800, 200), (200, 50)),
    "yellow": ((150, 600), (50, 200)),
}
COLOURS = {"red": RED, "lime": GREEN, "blue": BLUE, "yellow": (255, 255, 0)}


def test_a_pdf_gives_its_first_page(thumbnailer, tmp_path):
    reply = render(thumbnailer.channel, make_sample("pdf", tmp_path).read_bytes(), "application/pdf")
    thumb = open_thumb(reply).convert("L")
    # An A4 page (595x842 points) of black text on white, scaled into the box.
    assert (reply.width, reply.height) == (142, 200)
    assert thumb.getpixel((135, 190)) > 240 and thumb.getextrema()[0] < 160
    # Only the first page of two.
    two = encode(Image.new("RGB", (300, 200), "red"), "PDF", resolution=72, save_all=True,
                 append_images=[Image.new("RGB", (200, 300), "blue")])
    assert near(centre(open_thumb(render(thumbnailer.channel, two, "application/pdf"))), RED)


@pytest.mark.parametrize("box", [(200, 200), (64, 64), (1024, 300)])
def test_a_pdf_page_fits_the_box_asked_for(thumbnailer, box):
    reply = render(thumbnailer.channel, pdf_page("red", (300, 200)), "application/pdf", box=box)
    assert reply.width <= box[0] and reply.height <= box[1]
    assert reply.width == box[0] or reply.height == box[1]
    assert abs(reply.width / reply.height - 1.5) < 0.05


@pytest.mark.parametrize("data", [b"%PDF-1.4\n", b"%PDF-1.7\n" + os.urandom(5000), b"%PDF-1.4\n1 0 obj <<"])
def test_a_damaged_pdf_is_invalid(thumbnailer, data):
    error = rpc_error(thumbnailer.channel, data, "application/pdf")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "PDF" in error.details()


def test_a_cut_pdf_is_invalid_and_the_service_goes_on(thumbnailer, tmp_path):
    data = make_sample("pdf", tmp_path).read_bytes()
    error = rpc_error(thumbnailer.channel, data[:len(data) // 3], "application/pdf")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert render(thumbnailer.channel, data, "application/pdf").height == 200


def test_concurrent_pdf_renders_in_the_service_are_each_right(start_thumbnailer):
    running = start_thumbnailer(settings=Settings(workers=4))
    stub = thumbnail_pb2_grpc.ThumbnailStub(running.channel)
    for _ in range(3):
        calls = {}
        for colour, (size, _) in PAGES.items():
            requests = [thumbnail_pb2.RenderRequest(options=thumbnail_pb2.RenderOptions(mime_type="application/pdf")),
                        thumbnail_pb2.RenderRequest(chunk=pdf_page(colour, size))]
            calls[colour] = stub.Render.future(iter(requests), timeout=30)
        for colour, call in calls.items():
            reply = call.result()
            assert (reply.width, reply.height) == PAGES[colour][1]
            assert near(centre(open_thumb(reply)), COLOURS[colour]), colour


def test_pdfium_is_used_by_one_thread_at_a_time_in_a_process():
    # PDFium is not thread-safe, even across documents: render_pdf serializes it, so a
    # plugin calling it from several threads gets right answers (and no crash).
    pages = {colour: pdf_page(colour, size) for colour, (size, _) in PAGES.items()}
    results, failures = [], []

    def work(colour: str) -> None:
        try:
            for _ in range(10):
                im = render_pdf(io.BytesIO(pages[colour]), (200, 200))
                results.append((colour, im.size, centre(im)))
        except Exception as exc:  # noqa: BLE001  (reported below)
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(colour,)) for colour in PAGES for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(results) == 80
    for colour, size, pixel in results:
        assert size == PAGES[colour][1] and near(pixel, COLOURS[colour])


# --- video ---

@pytest.mark.parametrize("ext,mime", [("mp4", "video/mp4"), ("webm", "video/webm"), ("mov", "video/quicktime")])
def test_a_video_gives_its_frame_at_one_second(thumbnailer, tmp_path, ext, mime):
    # The samples are red for their first second, blue for the second.
    reply = render(thumbnailer.channel, make_sample(ext, tmp_path).read_bytes(), mime)
    assert (reply.width, reply.height) == (64, 48)
    assert near(centre(open_thumb(reply)), BLUE)


def ffmpeg(*args: str, output) -> bytes:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args, str(output)], check=True, timeout=120)
    return output.read_bytes()


def test_a_video_shorter_than_a_second_gives_its_first_frame(thumbnailer, tmp_path):
    data = ffmpeg("-f", "lavfi", "-i", "color=c=lime:s=320x240:r=10:d=0.5", "-pix_fmt", "yuv420p",
                  output=tmp_path / "short.mp4")
    reply = render(thumbnailer.channel, data, "video/mp4")
    assert (reply.width, reply.height) == (200, 150)
    assert near(centre(open_thumb(reply)), GREEN)


def test_a_turned_and_an_anamorphic_video_are_shown_as_played(thumbnailer, tmp_path):
    turned = ffmpeg("-i", str(make_sample("mp4", tmp_path)), "-c", "copy", "-metadata:s:v", "rotate=90",
                    output=tmp_path / "turned.mp4")
    assert (render(thumbnailer.channel, turned, "video/mp4").width, ) == (48, )
    wide = ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48:r=10:d=1,setsar=2", "-pix_fmt", "yuv420p",
                  output=tmp_path / "wide.mp4")
    reply = render(thumbnailer.channel, wide, "video/mp4")
    assert (reply.width, reply.height) == (128, 48)


@pytest.mark.parametrize("damage", ["cut", "noise", "no picture", "another container"])
def test_a_damaged_video_is_invalid(thumbnailer, tmp_path, damage):
    data = make_sample("mp4", tmp_path).read_bytes()
    if damage == "cut":
        data = data[:len(data) // 2]
    elif damage == "noise":
        data = data[:32] + os.urandom(20_000)
    elif damage == "no picture":
        data = ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", output=tmp_path / "sound.mp4")
    else:  # a WebM sent as an MP4: only the demuxer the type names reads it
        data = make_sample("webm", tmp_path).read_bytes()
    error = rpc_error(thumbnailer.channel, data, "video/mp4")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert "video" in error.details()
    assert str(tmp_path) not in error.details() and "/tmp" not in error.details()


def test_a_video_too_large_for_the_memory_budget_is_refused(start_thumbnailer, tmp_path):
    # One 8000x8000 frame: ~100 MB decoded, 0.4 MB on disk.
    data = ffmpeg("-f", "lavfi", "-i", "color=c=red:s=8000x8000:r=1:d=1", "-c:v", "mjpeg", "-q:v", "31",
                  "-pix_fmt", "yuvj420p", output=tmp_path / "huge.mov")
    tight = start_thumbnailer(settings=Settings(render_memory=96 * 1024 * 1024))
    error = rpc_error(tight.channel, data, "video/quicktime")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "memory" in error.details()
    # The default budget has room for it.
    reply = render(start_thumbnailer().channel, data, "video/quicktime")
    assert (reply.width, reply.height) == (200, 200) and near(centre(open_thumb(reply)), RED)


class FakeFfmpeg:
    """Renders videos with a program that misbehaves (instead of ffmpeg), writing its pid to ``pid``."""

    def __init__(self, folder, body: str):
        self.program = folder / "fake-ffmpeg"
        self.pid = folder / "ffmpeg.pid"
        self.program.write_text(f"#!{sys.executable}\nimport os, time\n"
                                f"open({str(self.pid)!r}, 'w').write(str(os.getpid()))\n{body}\n")
        self.program.chmod(self.program.stat().st_mode | stat.S_IXUSR)

    def started(self) -> int | None:
        text = self.pid.read_text() if self.pid.exists() else ""
        return int(text) if text else None

    @hookimpl
    def upload_thumbnail_renderers(self):
        yield Renderer("fake", ("video/mp4",), partial(render_video, ffmpeg=str(self.program), demuxer="mov"))


def test_ffmpeg_is_stopped_at_its_cpu_budget(tmp_path):
    # The kernel stops it after THUMBNAIL_RENDER_CPU seconds of its own CPU, however long
    # the wall clock allows (here 60 s: a loaded machine gives it its CPU slowly).
    fake = FakeFfmpeg(tmp_path, "while True: pass")
    video = make_sample("mp4", tmp_path)
    with pytest.raises(OverBudget, match="1 s of CPU"):
        _frame(str(fake.program), "mov", str(video), None, (200, 200), Budget(1, 512 * 1024 * 1024),
               time.monotonic() + 60)
    assert gone(fake.started())


def test_an_ffmpeg_that_spins_is_stopped_in_the_service(start_thumbnailer, tmp_path):
    fake = FakeFfmpeg(tmp_path, "while True: pass")
    running = start_thumbnailer(pm=create_plugins(env={}, extra_plugins=[fake]), settings=Settings(render_cpu=1))
    started = time.monotonic()
    error = rpc_error(running.channel, make_sample("mp4", tmp_path).read_bytes(), "video/mp4")
    # Over its CPU budget; or, on a machine too loaded to give it 1 s of CPU within its
    # CPU + 1 s of wall time, past its time. Either way it is stopped, and soon.
    assert error.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED), error.details()
    assert time.monotonic() - started < 10
    assert eventually(lambda: gone(fake.started()))


def test_ffmpeg_that_waits_is_stopped_at_its_time(start_thumbnailer, tmp_path):
    fake = FakeFfmpeg(tmp_path, "time.sleep(600)")
    running = start_thumbnailer(pm=create_plugins(env={}, extra_plugins=[fake]), settings=Settings(render_cpu=1))
    error = rpc_error(running.channel, make_sample("mp4", tmp_path).read_bytes(), "video/mp4")
    # THUMBNAIL_RENDER_CPU + 1 s of wall time: DEADLINE_EXCEEDED (the file may do better later).
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert eventually(lambda: gone(fake.started()))


def test_ffmpeg_goes_with_a_render_whose_caller_went_away(start_thumbnailer, tmp_path):
    fake = FakeFfmpeg(tmp_path, "time.sleep(600)")
    running = start_thumbnailer(pm=create_plugins(env={}, extra_plugins=[fake]), settings=Settings(render_cpu=60))
    call = render_call(running.channel, make_sample("mp4", tmp_path).read_bytes(), "video/mp4", timeout=60)
    assert eventually(lambda: fake.started() is not None)
    call.cancel()
    # The render's whole process group is killed: ffmpeg too, long before its 61 s.
    assert eventually(lambda: gone(fake.started()))
    assert eventually(lambda: not render_children())


def test_no_ffmpeg_means_no_video_renderer(monkeypatch, tmp_path):
    monkeypatch.setenv("THUMBNAIL_FFMPEG", str(tmp_path / "missing-ffmpeg"))
    monkeypatch.setenv("PATH", str(tmp_path))
    from thumbnail_service.servicer import collect_renderers

    renderers = collect_renderers(create_plugins(env={}))
    assert "video/mp4" not in renderers and "application/pdf" in renderers


# --- every renderer at once ---

def mixed_samples(tmp_path) -> dict[str, tuple[bytes, str, tuple[int, int]]]:
    """name: (bytes, MIME type, thumbnail size) of one file per built-in renderer."""
    red = Image.new("RGB", (300, 200), "red")
    return {
        "heic": (heif_bytes(red), "image/heic", (200, 133)),
        "avif": (encode(red, "AVIF"), "image/avif", (200, 133)),
        "jpeg": (encode(red, "JPEG"), "image/jpeg", (200, 133)),
        "pdf": (pdf_page("red", (300, 200)), "application/pdf", (200, 134)),
        "mp4": (ffmpeg("-f", "lavfi", "-i", "color=c=red:s=300x200:r=10:d=1.5", "-pix_fmt", "yuv420p",
                       output=tmp_path / "red.mp4"), "video/mp4", (200, 133)),
        "webm": (ffmpeg("-f", "lavfi", "-i", "color=c=red:s=300x200:r=10:d=1.5", "-c:v", "libvpx-vp9",
                        output=tmp_path / "red.webm"), "video/webm", (200, 133)),
    }


def test_every_renderer_gives_right_answers_to_concurrent_calls(start_thumbnailer, tmp_path):
    samples = mixed_samples(tmp_path)
    running = start_thumbnailer(settings=Settings(workers=len(samples)))
    stub = thumbnail_pb2_grpc.ThumbnailStub(running.channel)
    for _ in range(2):
        calls = {}
        for name, (data, mime, _) in samples.items():
            requests = [thumbnail_pb2.RenderRequest(options=thumbnail_pb2.RenderOptions(mime_type=mime)),
                        thumbnail_pb2.RenderRequest(chunk=data)]
            calls[name] = stub.Render.future(iter(requests), timeout=30)
        for name, call in calls.items():
            reply = call.result()
            expected = samples[name][2]
            assert abs(reply.width - expected[0]) <= 1 and abs(reply.height - expected[1]) <= 1, (name, reply)
            assert near(centre(open_thumb(reply)), RED), name


def test_image_and_pdf_renderers_are_safe_from_several_threads_of_one_process(tmp_path):
    from thumbnail_service.renderers import PILLOW_FORMATS, render_raster

    samples = {name: sample for name, sample in mixed_samples(tmp_path).items() if name in ("heic", "avif", "jpeg", "pdf")}
    failures, results = [], []

    def work(name: str) -> None:
        data, mime, _ = samples[name]
        try:
            for _ in range(8):
                if mime == "application/pdf":
                    im = render_pdf(io.BytesIO(data), (200, 200))
                else:
                    im = render_raster(io.BytesIO(data), (200, 200), formats=PILLOW_FORMATS[mime])
                results.append((name, centre(im)))
        except Exception as exc:  # noqa: BLE001  (reported below)
            failures.append((name, exc))

    threads = [threading.Thread(target=work, args=(name,)) for name in samples for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(results) == 8 * 2 * len(samples)
    assert all(near(pixel, RED) for _, pixel in results)

"""Every render has a budget (thumbnail_service/isolation.py): whatever a file's
bytes or a renderer's code, a render costs bounded CPU and memory, is stopped at
the limit with RESOURCE_EXHAUSTED (a permanent failure for that file), and never
keeps the service from answering health checks and quick calls."""
from __future__ import annotations

import ctypes
import io
import os
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from protos.plugins import hookimpl
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc
from tests.conftest import render
from tests.images import encode, progressive_scan_bomb
from tests.plugin_modules.thumbnail_faults import Waits
from tests.thumbnail_service.test_streaming import render_children
from thumbnail_service.config import Settings
from thumbnail_service.hookspecs import Renderer
from thumbnail_service.server import create_plugins

WAIT = 10  # seconds; only ever reached when something is wrong


def eventually(check, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Misbehaving:
    """Renderers that do what no renderer should, each for its own MIME type. Each
    writes its pid to ``folder`` when it starts (it runs in the render's child)."""

    def __init__(self, folder):
        self.folder = folder

    def _started(self, name: str) -> None:
        (self.folder / f".{name}").write_text(str(os.getpid()))
        (self.folder / f".{name}").rename(self.folder / name)

    def spin(self, source, box):
        self._started("spin")
        while True:
            pass

    def crash(self, source, box):
        self._started("crash")
        ctypes.string_at(0)  # a decoder's segfault, for real

    def started(self, name: str) -> int | None:
        path = self.folder / name
        return int(path.read_text()) if path.exists() else None

    @hookimpl
    def upload_thumbnail_renderers(self):
        yield Renderer("spin", ("application/x-spin",), self.spin)
        yield Renderer("crash", ("application/x-crash",), self.crash)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def start(start_thumbnailer, folder, **settings):
    plugin = Misbehaving(folder)
    return start_thumbnailer(pm=create_plugins(env={}, extra_plugins=[plugin]), settings=Settings(**settings)), plugin


def render_call(channel, data: bytes, mime: str, timeout: float = 30):
    stub = thumbnail_pb2_grpc.ThumbnailStub(channel)
    requests = [thumbnail_pb2.RenderRequest(options=thumbnail_pb2.RenderOptions(mime_type=mime)),
                thumbnail_pb2.RenderRequest(chunk=data)]
    return stub.Render.future(iter(requests), timeout=timeout)


def test_a_progressive_jpeg_of_empty_scans_stops_at_its_cpu_budget(start_thumbnailer):
    # ~4 s of CPU unbounded (it would render in the end); the budget here is 1 s.
    running = start_thumbnailer(settings=Settings(render_cpu=1))
    with pytest.raises(grpc.RpcError) as info:
        render(running.channel, progressive_scan_bomb(scans=3000), "image/jpeg")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1 s of CPU" in info.value.details()
    reply = render(running.channel, encode(Image.new("RGB", (400, 300), "red"), "JPEG"), "image/jpeg")
    assert (reply.width, reply.height) == (200, 150)


def test_a_renderer_that_never_ends_is_stopped_at_its_cpu_budget(start_thumbnailer, tmp_path):
    running, plugin = start(start_thumbnailer, tmp_path, render_cpu=1)
    with pytest.raises(grpc.RpcError) as info:
        render_call(running.channel, b"x" * 100, "application/x-spin", timeout=WAIT).result()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "CPU" in info.value.details()
    assert eventually(lambda: gone(plugin.started("spin")))
    assert eventually(lambda: not render_children())


def test_an_image_over_the_memory_budget_is_refused(start_thumbnailer):
    # 3000x3000 RGBA noise decodes to 36 MB; the budget here is 16 MiB.
    noise = Image.frombytes("RGBA", (3000, 3000), os.urandom(3000 * 3000 * 4))
    data = encode(noise, "PNG", compress_level=1)
    running = start_thumbnailer(settings=Settings(render_memory=16 * 1024 * 1024))
    with pytest.raises(grpc.RpcError) as info:
        render(running.channel, data, "image/png")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "memory" in info.value.details()
    # Within the default budget the same image renders.
    roomy = start_thumbnailer()
    assert render(roomy.channel, data, "image/png").width == 200


def test_health_and_quick_calls_answer_while_every_render_is_busy(start_thumbnailer, tmp_path):
    running, plugin = start(start_thumbnailer, tmp_path, workers=2, render_cpu=30)
    busy = [render_call(running.channel, b"x" * 100, "application/x-spin", timeout=60) for _ in range(2)]
    try:
        assert eventually(lambda: len(list(tmp_path.iterdir())) >= 1)
        time.sleep(0.3)  # both calls hold their render now
        health = health_pb2_grpc.HealthStub(running.channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING
        stub = thumbnail_pb2_grpc.ThumbnailStub(running.channel)
        assert "image/png" in stub.GetRenderers(thumbnail_pb2.GetRenderersRequest(), timeout=1).mime_types
        # One render more is told at once that the service is busy (the caller may retry). Both
        # spins write the same marker, so on a loaded machine the second may not hold its slot
        # yet: a render that still finds one free is made, and the next one tried.
        refused = []

        def one_more_is_refused() -> bool:
            try:
                render(running.channel, encode(Image.new("RGB", (40, 30)), "PNG"), "image/png")
            except grpc.RpcError as error:
                refused.append(error)
                return True
            return False

        assert eventually(one_more_is_refused)
        assert refused[0].code() == grpc.StatusCode.UNAVAILABLE
        assert "busy" in refused[0].details()
    finally:
        for call in busy:
            call.cancel()


def test_a_renderer_that_crashes_is_a_refusal_and_the_service_goes_on(start_thumbnailer, tmp_path):
    running, _ = start(start_thumbnailer, tmp_path)
    with pytest.raises(grpc.RpcError) as info:
        render_call(running.channel, b"x" * 100, "application/x-crash").result()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "crashed" in info.value.details()
    reply = render(running.channel, encode(Image.new("RGB", (400, 300), "red"), "JPEG"), "image/jpeg")
    assert (reply.width, reply.height) == (200, 150)


def test_a_render_whose_caller_went_away_is_stopped_at_once(start_thumbnailer, tmp_path):
    running, plugin = start(start_thumbnailer, tmp_path, render_cpu=60)
    call = render_call(running.channel, b"x" * 100, "application/x-spin", timeout=60)
    assert eventually(lambda: plugin.started("spin") is not None)
    assert plugin.started("spin") in render_children()
    call.cancel()
    # Long before its 60 s budget: the server kills the render when the call ends.
    assert eventually(lambda: gone(plugin.started("spin")))
    assert eventually(lambda: not render_children())


def test_the_pixel_limit_holds_in_the_render_process(start_thumbnailer):
    # THUMBNAIL_MAX_PIXELS reaches the process that decodes (a fresh interpreter,
    # which would otherwise know only Pillow's default).
    running = start_thumbnailer(settings=Settings(max_pixels=10_000))
    with pytest.raises(grpc.RpcError) as info:
        render(running.channel, encode(Image.new("RGB", (200, 100)), "PNG"), "image/png")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "20000" in info.value.details() or "200x100" in info.value.details()
    assert render(running.channel, encode(Image.new("RGB", (100, 100)), "PNG"), "image/png").width == 100


def test_a_render_that_waits_past_its_time_is_deadline_exceeded(start_thumbnailer):
    # Under its CPU budget but still not done CPU + 2 s after its input ended: stopped, and
    # DEADLINE_EXCEEDED (try this file later), not UNAVAILABLE (which says the service is down).
    running = start_thumbnailer(pm=create_plugins(env={}, extra_plugins=[Waits()]), settings=Settings(render_cpu=1))
    with pytest.raises(grpc.RpcError) as info:
        render_call(running.channel, b"x" * 100, "application/x-waits", timeout=WAIT).result()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "longer than" in info.value.details()
    assert eventually(lambda: not render_children())


@pytest.mark.parametrize("name,value", [("THUMBNAIL_RENDER_CPU", "0"), ("THUMBNAIL_RENDER_MEMORY", "1024"),
                                        ("THUMBNAIL_WORKERS", "0"), ("THUMBNAIL_RENDER_CPU", "-3")])
def test_a_budget_that_no_render_could_keep_stops_the_service_with_a_sentence(name, value):
    with pytest.raises(SystemExit) as info:
        Settings.from_env({name: value})
    assert str(info.value).startswith(f"{name} must be at least")


def test_a_thumbnail_too_large_for_one_message_is_made_smaller_not_lost(start_thumbnailer):
    # RGBA noise in a 1024 box: its PNG (4+ MiB) passed gRPC's message limit ("Sent message
    # larger than max", while the server logged OK). It is quantized (or halved) to fit.
    noise = Image.frombytes("RGBA", (1024, 1024), os.urandom(1024 * 1024 * 4))
    running = start_thumbnailer()
    reply = render(running.channel, encode(noise, "PNG", compress_level=1), "image/png", box=(1024, 1024))
    assert len(reply.data) <= 3 * 1024 * 1024
    assert reply.mime_type == "image/png" and max(reply.width, reply.height) <= 1024
    assert Image.open(io.BytesIO(reply.data)).size == (reply.width, reply.height)

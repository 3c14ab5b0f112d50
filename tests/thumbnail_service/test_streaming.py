"""Render while the upload still arrives: the renderer (in its child process,
thumbnail_service/isolation.py) reads as bytes come in, and every way the stream
can fail stops it, with the right code for the caller."""
from __future__ import annotations

import os
import threading
import time

import grpc
import pytest
from PIL import Image

from protos.plugins import hookimpl
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc
from tests.conftest import render
from tests.images import encode
from thumbnail_service.config import Settings
from thumbnail_service.hookspecs import Renderer
from thumbnail_service.server import create_plugins

MIME = "application/x-probe"
WAIT = 5  # seconds; only ever reached when something is wrong


# What a probe reads; module-level functions, since renderers travel to the render's process by pickle.
def read_all(source) -> bytes:
    return source.read()


def read_in_two(source) -> bytes:
    return source.read(1000) + source.read()


class Marker:
    """A file the renderer's child process writes, seen from this process."""

    def __init__(self, path):
        self.path = path

    def is_set(self) -> bool:
        return self.path.exists()

    def wait(self, timeout: float) -> bool:
        return eventually(self.is_set, timeout)

    def read(self) -> bytes | None:
        return self.path.read_bytes() if self.path.exists() else None


class Probe:
    """A renderer that reads as told and reports what it saw. It runs in the
    render's child process, so it reports through files in ``folder``."""

    def __init__(self, read, folder):
        self.read = read  # read(source) -> bytes; may raise
        self.folder = folder
        self.started, self.done = Marker(folder / "started"), Marker(folder / "done")

    def _mark(self, name: str, data: bytes = b"") -> None:
        (self.folder / f".{name}").write_bytes(data)
        (self.folder / f".{name}").rename(self.folder / name)  # whole, or not there at all

    def render(self, source, box):
        self._mark("started", str(os.getpid()).encode())
        try:
            self._mark("data", self.read(source))
        except Exception as exc:
            # Swallowed on purpose: a renderer hiding the failure must not hide it from the caller.
            self._mark("error", type(exc).__name__.encode())
        finally:
            self._mark("done")
        return Image.new("RGB", (10, 10), "teal")

    @property
    def data(self) -> bytes | None:
        return Marker(self.folder / "data").read()

    @property
    def error(self) -> str | None:
        found = Marker(self.folder / "error").read()
        return found.decode() if found is not None else None

    @property
    def pid(self) -> int:
        return int(self.started.read())

    def gone(self) -> bool:
        """The render's child has ended and been reaped: nothing of it is left."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        return False

    @hookimpl
    def upload_thumbnail_renderers(self):
        yield Renderer("probe", (MIME,), self.render)


def start(start_thumbnailer, probe: Probe, **settings):
    return start_thumbnailer(pm=create_plugins(env={}, extra_plugins=[probe]), settings=Settings(**settings))


def options(mime=MIME):
    return thumbnail_pb2.RenderRequest(options=thumbnail_pb2.RenderOptions(mime_type=mime))


def chunks(data: bytes, size: int = 64 * 1024):
    for i in range(0, len(data), size):
        yield thumbnail_pb2.RenderRequest(chunk=data[i:i + size])


def render_children() -> list[int]:
    """The render processes alive now: children of the fork server, which is this process's child."""
    def children_of(parent: int) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == parent and fields[0] != "Z":
                    found.append(int(entry))
        return found

    def is_fork_server(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return b"multiprocessing.forkserver" in f.read()
        except OSError:
            return False

    return [child for server in children_of(os.getpid()) if is_fork_server(server) for child in children_of(server)]


def eventually(check, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def settled_thread_count(running) -> int:
    """Thread count once a call has come and gone: the server's pool thread
    and the channel's threads exist, none of a call's are left."""
    render(running.channel, encode(Image.new("RGB", (40, 30)), "PNG"), "image/png")
    assert eventually(lambda: not render_children())
    time.sleep(0.1)
    return threading.active_count()


def assert_healthy_and_clean(running, baseline: int) -> None:
    assert eventually(lambda: not render_children()), "a render's child process was left behind"
    assert eventually(lambda: threading.active_count() <= baseline), \
        f"{threading.active_count()} threads, {baseline} before the call"
    reply = render(running.channel, encode(Image.new("RGB", (400, 300), "red"), "JPEG"), "image/jpeg")
    assert (reply.width, reply.height) == (200, 150)


def test_renderer_reads_while_the_upload_still_arrives(start_thumbnailer, tmp_path):
    data = os.urandom(400_000)
    probe = Probe(read_in_two, tmp_path)
    running = start(start_thumbnailer, probe)
    overlapped = []

    def stream():
        yield options()
        yield thumbnail_pb2.RenderRequest(chunk=data[:70_000])
        # The rest is sent only once the renderer has started on the first part.
        overlapped.append(probe.started.wait(WAIT))
        yield from chunks(data[70_000:], 30_000)

    stub = thumbnail_pb2_grpc.ThumbnailStub(running.channel)
    reply = stub.Render(stream(), timeout=WAIT * 2)
    assert (reply.width, reply.height) == (10, 10)
    assert overlapped == [True]
    assert probe.error is None and probe.data == data


def test_over_the_limit_while_the_renderer_waits_is_resource_exhausted(start_thumbnailer, tmp_path):
    probe = Probe(read_all, tmp_path)  # waits for the end, which never comes
    running = start(start_thumbnailer, probe, max_input=100_000)
    baseline = settled_thread_count(running)

    def stream():
        yield options()
        yield thumbnail_pb2.RenderRequest(chunk=b"x" * 60_000)
        probe.started.wait(WAIT)
        time.sleep(0.05)  # let it block in read()
        yield from chunks(b"y" * 140_000, 20_000)

    stub = thumbnail_pb2_grpc.ThumbnailStub(running.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Render(stream(), timeout=WAIT * 2)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # The waiting render was stopped (its child killed), not left to wait or finish.
    assert eventually(probe.gone) and not probe.done.is_set()
    assert_healthy_and_clean(running, baseline)


def test_options_mid_stream_while_the_renderer_waits_is_invalid_argument(start_thumbnailer, tmp_path):
    probe = Probe(read_all, tmp_path)
    running = start(start_thumbnailer, probe)

    def stream():
        yield options()
        yield thumbnail_pb2.RenderRequest(chunk=b"x" * 1000)
        probe.started.wait(WAIT)
        yield options()

    stub = thumbnail_pb2_grpc.ThumbnailStub(running.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Render(stream(), timeout=WAIT * 2)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert eventually(probe.gone) and not probe.done.is_set()
    assert eventually(lambda: not render_children())


def test_empty_upload_is_invalid_argument_whatever_the_renderer_says(start_thumbnailer, tmp_path):
    probe = Probe(read_all, tmp_path)
    running = start(start_thumbnailer, probe)
    stub = thumbnail_pb2_grpc.ThumbnailStub(running.channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Render(iter([options()]), timeout=WAIT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in info.value.details()
    assert eventually(lambda: not render_children())


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_client_gone_mid_stream_leaves_nothing_behind(start_thumbnailer, how, tmp_path):
    probe = Probe(read_all, tmp_path)
    running = start(start_thumbnailer, probe)
    baseline = settled_thread_count(running)
    release = threading.Event()

    def stream():
        yield options()
        yield thumbnail_pb2.RenderRequest(chunk=b"x" * 10_000)
        release.wait(WAIT)  # a client that stalls mid-upload

    stub = thumbnail_pb2_grpc.ThumbnailStub(running.channel)
    # The deadline leaves the render child time to start on a loaded machine (0.5 s failed
    # there: the call was over before the probe started), and still ends the call mid-stream.
    call = stub.Render.future(stream(), timeout=3 if how == "deadline" else WAIT * 2)
    try:
        assert probe.started.wait(WAIT)
        if how == "cancel":
            call.cancel()
        # The server notices the call is gone and stops the waiting render. Usually
        # its child is killed while it waits; but grpc may report a call that died as
        # the end of the stream first (the cancelled flag comes a moment later): then
        # the renderer sees the cut-off file end, and its result goes nowhere. Either
        # way nothing of it is left.
        assert eventually(probe.gone, WAIT + 3)
        assert not probe.done.is_set() or probe.data == b"x" * 10_000
        expected = grpc.StatusCode.CANCELLED if how == "cancel" else grpc.StatusCode.DEADLINE_EXCEEDED
        assert call.code() == expected
    finally:
        release.set()  # let the client's request thread finish too
    assert_healthy_and_clean(running, baseline)

"""IncomingFile: a read-only file that the renderer reads while the upload arrives."""
from __future__ import annotations

import io
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from PIL import Image

from tests.images import encode
from thumbnail_service.incoming import IncomingFile, UploadAborted
from thumbnail_service.renderers import render_raster

WAIT = 5  # seconds; only ever reached when something is wrong


@pytest.fixture
def incoming():
    # A tiny spool, so that it rolls over to a disk file in the middle of reads.
    with tempfile.SpooledTemporaryFile(max_size=64) as spool:
        f = IncomingFile(spool)
        yield f
        f.abort()  # never leave a reader blocked, even when a test fails


def background(fn) -> Future:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(fn)
    pool.shutdown(wait=False)
    return future


def assert_waiting(future: Future) -> None:
    with pytest.raises(TimeoutError):
        future.result(timeout=0.1)


def test_read_waits_for_all_the_bytes_it_asks_for(incoming):
    incoming.append(b"abcd")
    read = background(lambda: incoming.read(10))
    assert_waiting(read)
    incoming.append(b"efghij" + b"x" * 100)
    assert read.result(WAIT) == b"abcdefghij"
    assert incoming.tell() == 10


def test_read_comes_back_short_only_at_the_end(incoming):
    incoming.append(b"abc")
    read = background(lambda: incoming.read(10))
    assert_waiting(read)
    incoming.end()
    assert read.result(WAIT) == b"abc"
    assert incoming.read(10) == b""


def test_read_without_size_waits_for_the_end(incoming):
    incoming.append(b"abc")
    read = background(incoming.read)
    assert_waiting(read)
    incoming.append(b"def" * 50)
    assert_waiting(read)
    incoming.end()
    assert read.result(WAIT) == b"abc" + b"def" * 50


def test_seek_to_the_end_waits_for_the_end(incoming):
    incoming.append(b"0123456789")
    seek = background(lambda: incoming.seek(-3, io.SEEK_END))
    assert_waiting(seek)
    incoming.append(b"abcdef")
    incoming.end()
    assert seek.result(WAIT) == 13
    assert incoming.read() == b"def"


def test_seek_past_what_arrived_then_read_waits(incoming):
    data = bytes(range(256)) * 4
    incoming.append(data[:50])
    assert incoming.seek(100) == 100
    read = background(lambda: incoming.read(20))
    assert_waiting(read)
    for i in range(50, len(data), 30):
        incoming.append(data[i:i + 30])
    assert read.result(WAIT) == data[100:120]
    assert incoming.seek(-10, io.SEEK_CUR) == 110
    buffer = bytearray(5)
    assert incoming.readinto(buffer) == 5 and bytes(buffer) == data[110:115]


def test_abort_wakes_a_waiting_reader_and_fails_later_reads(incoming):
    incoming.append(b"abc")
    read = background(lambda: incoming.read(10))
    assert_waiting(read)
    incoming.abort()
    with pytest.raises(UploadAborted):
        read.result(WAIT)
    with pytest.raises(UploadAborted):
        incoming.read(1)  # even bytes that did arrive: the renderer should stop
    with pytest.raises(UploadAborted):
        incoming.seek(0, io.SEEK_END)
    # Pillow and renderers would call an OSError a damaged file.
    assert not issubclass(UploadAborted, OSError)


def test_it_is_read_only_and_has_no_file_descriptor(incoming):
    assert incoming.readable() and incoming.seekable() and not incoming.writable()
    with pytest.raises((OSError, NotImplementedError)):
        incoming.write(b"x")
    # libtiff would read a descriptor directly, past what has arrived.
    with pytest.raises(OSError):
        incoming.fileno()
    assert not hasattr(incoming, "getvalue")


def test_a_closed_reader_refuses_reads_but_the_upload_goes_on(incoming):
    incoming.append(b"abc")
    incoming.close()
    with pytest.raises(ValueError):
        incoming.read(1)
    incoming.append(b"def")  # the writer side is the servicer's, not the renderer's
    incoming.end()


def feed(incoming: IncomingFile, data: bytes, chunk: int = 997) -> threading.Thread:
    """Append ``data`` in small, slightly delayed chunks from another thread."""
    def run():
        try:
            for i in range(0, len(data), chunk):
                incoming.append(data[i:i + chunk])
                if i % (chunk * 8) == 0:
                    time.sleep(0.001)
            incoming.end()
        except BaseException:
            incoming.abort()  # wake the reader rather than leave it waiting
            raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def textured(width: int, height: int) -> Image.Image:
    gradient = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 50)
    return Image.merge("RGB", (gradient, noise, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


@pytest.mark.parametrize("fmt,params", [
    ("JPEG", {"quality": 90}),
    ("PNG", {}),
    ("GIF", {}),
    ("WEBP", {}),
    ("BMP", {}),
    ("TIFF", {"compression": "tiff_deflate"}),  # decoded by libtiff, which prefers a descriptor
])
def test_pillow_renders_while_the_bytes_arrive(incoming, fmt, params):
    data = encode(textured(900, 600), fmt, **params)
    expected = render_raster(io.BytesIO(data), (120, 120))
    feeder = feed(incoming, data)
    im = render_raster(incoming, (120, 120))
    feeder.join(WAIT)
    assert im.size == expected.size and im.mode == expected.mode
    assert im.tobytes() == expected.tobytes()

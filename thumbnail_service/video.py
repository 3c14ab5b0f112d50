"""The built-in video renderer: a poster frame of an mp4, webm or mov, by ffmpeg.

ffmpeg (Debian's package; ``THUMBNAIL_FFMPEG`` names another program) runs as
a program of the render's own process, never through a shell, on a copy of the
upload in a temporary file (an MP4 from a camera keeps its index at the end, so
ffmpeg must be able to seek), and writes one frame to a pipe. The frame is the
one at 1 s, or the first one of a shorter video; the video's rotation and pixel
aspect are applied, and ffmpeg shrinks it to the thumbnail's box itself.

What the video can make ffmpeg do is held like any render (isolation.py), by
limits of its own, set before it starts:

- ``THUMBNAIL_RENDER_CPU`` seconds of CPU (RLIMIT_CPU): past them the kernel
  stops it, and the call is RESOURCE_EXHAUSTED (over budget);
- ``THUMBNAIL_RENDER_MEMORY`` bytes of data (RLIMIT_DATA: what it allocates;
  the ~300 MiB of libraries it maps are not counted): an allocation past it
  fails, and the call is RESOURCE_EXHAUSTED too;
- ``THUMBNAIL_RENDER_CPU`` + 1 seconds of wall time for the whole poster (the
  render's own process allows its renderer CPU + 2 s once the upload is in):
  past it ffmpeg is killed and the call is DEADLINE_EXCEEDED.

It decodes with one thread, reads only the container the MIME type names (the
mov demuxer for MP4 and QuickTime, matroska for WebM: never a playlist or a
concat list that would open other files) from the local file alone
(``-protocol_whitelist file``), and stops with the render: its process group
is the render's, which is killed when the caller goes away.
"""
from __future__ import annotations

import io
import logging
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from functools import partial
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from protos.errors import InvalidInput, TimedOut
from protos.plugins import hookimpl
from thumbnail_service.config import Settings
from thumbnail_service.hookspecs import Renderer
from thumbnail_service.isolation import Budget, OverBudget, current_budget

log = logging.getLogger("upload.thumbnail")

# MIME type (as libmagic names it) -> the ffmpeg demuxer that reads it, and nothing else.
DEMUXERS = {
    "video/mp4": "mov",
    "video/x-m4v": "mov",
    "video/quicktime": "mov",
    "video/webm": "matroska",
}
VIDEO_TYPES = tuple(DEMUXERS)
# Seconds into the video of the poster frame: past a fade-in or a black first frame.
POSTER_AT = 1.0
# The most of ffmpeg's complaints kept for the log.
STDERR_KEPT = 2000
# How ffmpeg says that an allocation failed (ENOMEM; a frame buffer that could not be had, which
# some decoders report as EPERM), or that its libraries did not fit.
_NO_MEMORY = (b"Cannot allocate memory", b"Out of memory", b"failed to map segment", b"get_buffer() failed")


def ffmpeg_program(env=None) -> str | None:
    """The ffmpeg to run (THUMBNAIL_FFMPEG, else ffmpeg on PATH), or None when there is none."""
    env = os.environ if env is None else env
    return shutil.which(env.get("THUMBNAIL_FFMPEG") or "ffmpeg")


def render_video(source: BinaryIO, box: tuple[int, int], ffmpeg: str = "ffmpeg", demuxer: str = "mov") -> Image.Image:
    budget = current_budget() or Budget(Settings.render_cpu, Settings.render_memory)
    with tempfile.NamedTemporaryFile(prefix="upload-video-") as copy:
        shutil.copyfileobj(source, copy, 1024 * 1024)
        copy.flush()
        deadline = time.monotonic() + budget.cpu_seconds + 1
        frame = _frame(ffmpeg, demuxer, copy.name, POSTER_AT, box, budget, deadline)
        if not frame:  # shorter than POSTER_AT: its first frame
            frame = _frame(ffmpeg, demuxer, copy.name, None, box, budget, deadline)
    if not frame:
        raise InvalidInput("The video has no picture ffmpeg could decode.")
    try:
        image = Image.open(io.BytesIO(frame), formats=("PPM",))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"ffmpeg's frame of the video cannot be read ({exc}).") from None
    return image


def _command(ffmpeg: str, demuxer: str, path: str, at: float | None, box: tuple[int, int]) -> list[str]:
    width, height = box
    # Square pixels first (iw*sar), then the largest size that fits the box, never larger
    # than the frame itself; the quotes keep the commas inside the expressions.
    fit = f"min(1,min({width}/(iw*sar),{height}/ih))"
    scale = (f"scale=w='max(1,round(iw*sar*{fit}))':h='max(1,round(ih*{fit}))':flags=area,"
             "setsar=1,format=rgb24")
    seek = ["-ss", f"{at:g}"] if at is not None else []
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
            "-threads", "1", "-filter_threads", "1",
            "-protocol_whitelist", "file", "-f", demuxer, *seek, "-i", path,
            "-map", "0:v:0", "-frames:v", "1", "-an", "-sn", "-dn",
            "-vf", scale, "-f", "image2pipe", "-c:v", "ppm", "pipe:1"]


def _limits(budget: Budget):
    """What ffmpeg may take, set in its process before it starts (preexec_fn). The render's
    process is single-threaded by then: the upload is all in, and its feeding thread done."""
    def apply() -> None:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        resource.setrlimit(resource.RLIMIT_AS, (hard, hard))  # its libraries alone map ~300 MiB
        resource.setrlimit(resource.RLIMIT_DATA, (budget.memory_bytes, budget.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (budget.cpu_seconds, budget.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _frame(ffmpeg: str, demuxer: str, path: str, at: float | None, box: tuple[int, int],
           budget: Budget, deadline: float) -> bytes:
    """One frame as a PPM, or b"" when ffmpeg found none at ``at`` (past the end)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimedOut("Making the video's poster frame took longer than the thumbnail service waits.")
    process = subprocess.Popen(_command(ffmpeg, demuxer, path, at, box), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limits(budget))
    try:
        out, err = process.communicate(timeout=left)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise TimedOut("Making the video's poster frame took longer than the thumbnail service waits.") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    code = process.returncode
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        raise OverBudget(f"ffmpeg needed more than {budget.cpu_seconds} s of CPU for the poster frame.")
    if code == 0 and out:
        return out
    if any(words in err for words in _NO_MEMORY) and b"image parameters invalid" not in err:
        raise OverBudget("ffmpeg needed more memory for the poster frame than a thumbnail may take.")
    if code != 0:
        log.info("ffmpeg could not read a video (exit %s): %s", code, err[-STDERR_KEPT:].decode(errors="replace"))
        last = err.strip().splitlines()[-1].decode(errors="replace") if err.strip() else f"exit status {code}"
        raise InvalidInput(f"The video cannot be read ({last.replace(path, 'the file')[:300]}).")
    return out


@hookimpl
def upload_thumbnail_renderers():
    program = ffmpeg_program()
    if program is None:
        log.warning("no ffmpeg found (THUMBNAIL_FFMPEG or PATH): videos get no thumbnail; "
                    "install Debian's ffmpeg and restart this service")
        return
    for mime, demuxer in DEMUXERS.items():
        yield Renderer("ffmpeg", (mime,), partial(render_video, ffmpeg=program, demuxer=demuxer))

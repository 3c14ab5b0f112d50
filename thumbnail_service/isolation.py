"""Every render runs in a process of its own, under a budget.

Pillow's decoders cannot be stopped from Python, and some inputs make them work
far beyond their size: libjpeg walks the whole image for every scan of a
progressive JPEG, so a 60 KB file of empty scans costs minutes of CPU; an
animated 5000x5000 WebP holds two canvases and a frame. So the render (the
renderer plugin, the shrink and the encoding) runs in a child process, and the
kernel holds it to its budget: RLIMIT_CPU (THUMBNAIL_RENDER_CPU seconds; SIGXCPU
stops it there, SIGKILL a second later) and RLIMIT_AS (THUMBNAIL_RENDER_MEMORY
bytes above what the child starts with; an allocation past it fails, which
Pillow reports as MemoryError). A render over budget is the file's doing:
``OverBudget``, a permanent failure for that file, never worth retrying.

The children come from multiprocessing's fork server: a small process started
once (a fresh interpreter that imports Pillow and the renderers, then renders a
few tiny images so that what Pillow loads on first use is loaded: warmup.py),
forked for each render. Forking the gRPC server itself would copy its threads' state into
every child, where gRPC's fork handlers can abort it. A child costs ~5 ms.
Renderers therefore travel to the child by pickle: module-level functions (and
picklable objects' methods), which ``check_picklable`` verifies at start-up.

The call's thread forwards the upload to the child as it arrives, so decoding
still overlaps the transfer: in the child a thread feeds an IncomingFile that
the renderer reads, exactly as the plugin contract says. The answer (the encoded
thumbnail, or the error's class and sentence) comes back on a second pipe.

A child leads a process group of its own, and stopping a render stops the
group: a program a renderer runs (ffmpeg, for the video renderer) goes with
it. The budget holds as the soft limits; the hard memory limit is left where
it was, so that such a renderer can give the program a budget of its own
(``current_budget()`` says what this render's is).
"""
from __future__ import annotations

import io
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import resource
import signal
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image

from protos import errors, plugin_settings
from protos.errors import InvalidInput, TimedOut, TooLarge, Unavailable, UploadError
from protos.plugins import PluginLoadError
from thumbnail_service.incoming import IncomingFile
from thumbnail_service.types import Renderer, RenderFunction, Transform

_CONTEXT = multiprocessing.get_context("forkserver")
# Uploads up to this size stay in the child's memory while rendering; larger ones spill to disk.
SPOOL_BYTES = 4 * 1024 * 1024
# How long past its CPU budget a child that has all its input may take in wall time before it
# is stopped: it waits for nothing then, so more than this is a loaded machine, not the file.
WALL_SLACK = 2.0
# The largest thumbnail sent back: under gRPC's 4 MiB message limit with room to spare.
MAX_REPLY_BYTES = 3 * 1024 * 1024


class OverBudget(TooLarge):
    """The render needed more CPU time or memory than one thumbnail may take."""


@dataclass(frozen=True)
class Budget:
    cpu_seconds: int  # RLIMIT_CPU counts whole seconds
    memory_bytes: int
    # Pillow's pixel guard (Image.MAX_IMAGE_PIXELS), set in each render's process:
    # the fork server is a fresh interpreter, which knows only Pillow's default.
    max_pixels: int = Image.MAX_IMAGE_PIXELS

    def describe(self) -> str:
        return f"{self.cpu_seconds} s of CPU and {self.memory_bytes // (1024 * 1024)} MiB of memory"

    def exceeded(self) -> OverBudget:
        return OverBudget(f"Rendering this image needs more than the {self.describe()} a thumbnail may take.")


def check_picklable(renderers: Iterable[Renderer], transforms: Iterable[Transform] = ()) -> None:
    """Renders run in another process: a renderer that cannot be sent there is
    a plugin error, said at start-up rather than at the first upload."""
    for item in transforms:
        try:
            pickle.dumps(item.apply)
        except Exception as exc:
            raise PluginLoadError(
                f"The transform {item.name!r} cannot be sent to the process that runs it "
                f"({exc}): make its apply a module-level function or a method of a picklable object."
            ) from None
    for renderer in renderers:
        try:
            pickle.dumps(renderer.render)
        except Exception as exc:
            raise PluginLoadError(
                f"The thumbnail renderer {renderer.name!r} cannot be sent to the process that renders "
                f"({exc}): make its render a module-level function or a method of a picklable object."
            ) from None


def start_fork_server(renderers: Iterable[Renderer], transforms: Iterable[Transform] = ()) -> None:
    """Start the fork server now (not at the first upload), with the renderers'
    modules already imported in it."""
    modules = {"thumbnail_service.isolation", "PIL.Image"}
    # A partial's own module is functools: the function it wraps tells where it lives.
    modules.update(getattr(getattr(r.render, "func", r.render), "__module__", None) or "" for r in renderers)
    modules.update(getattr(getattr(t.apply, "func", t.apply), "__module__", None) or "" for t in transforms)
    try:
        # warmup last: it renders once with everything the renderers' modules brought in.
        _CONTEXT.set_forkserver_preload([*sorted(m for m in modules if m), "thumbnail_service.warmup"])
        multiprocessing.forkserver.ensure_running()
    except ValueError:  # already running (another server in this process started it)
        pass


class RenderChild:
    """One render in a child process. The caller feeds it with ``append`` and
    ``end`` (or ``abort``), then collects ``result()`` exactly once."""

    def __init__(self, render: RenderFunction, box: tuple[int, int], budget: Budget, job=None):
        """``job``: what the child does with the upload, ``job(render, box, source)``
        returning the answer tuple ("ok", ...) or ("error", class names, message);
        by default ``_render`` (``transform`` runs transforms the same way)."""
        self.budget = budget
        self.size = 0  # bytes handed to the child
        self._lock = threading.Lock()
        self._stopped = False  # killed by us (the caller went away, or past its time)
        self._reaped = False  # its exit status is read: its pid may be someone else's now
        data_r, self._data = _CONTEXT.Pipe(duplex=False)
        self._result, result_w = _CONTEXT.Pipe(duplex=False)
        self._process = _CONTEXT.Process(target=_child,
                                         args=(render, box, budget, data_r, result_w, job or _render,
                                               plugin_settings.values()),
                                         name="render", daemon=True)
        try:
            self._process.start()
        except BaseException:
            self._data.close()
            self._result.close()
            raise
        finally:
            data_r.close()
            result_w.close()

    def append(self, data: bytes) -> None:
        self.size += len(data)
        if self._data is None:
            return  # the child stopped reading: its own result (an error) says why
        try:
            self._data.send_bytes(data)
        except OSError:  # BrokenPipeError and kin: the child is gone
            self._close_input()

    def end(self) -> None:
        """All of the upload is here."""
        self._close_input()

    def cancel(self) -> None:
        """Stop the render now (from any thread: the caller went away), and any
        program it runs. Only signals: reading the child's exit status is the call's
        own thread's (``_finish``); until then its pid, which is also its process
        group's id, can be no one else's."""
        with self._lock:
            if not self._reaped:
                self._stopped = True
                try:
                    os.killpg(self._process.pid, signal.SIGKILL)
                except ProcessLookupError:  # not yet its own group's leader: itself alone
                    try:
                        os.kill(self._process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def abort(self) -> None:
        """The upload failed: stop the render and reap it."""
        self.cancel()
        self._finish()

    def result(self, wait: float | None = None) -> tuple:
        """(thumbnail bytes, MIME type, width, height), or the render's error (a
        ``job``'s own answer without its "ok").
        ``wait``: the most wall time a child that has all its input may still take."""
        wait = self.budget.cpu_seconds + WALL_SLACK if wait is None else wait
        answer, timed_out = None, False
        try:
            if self._result.poll(wait):
                answer = pickle.loads(self._result.recv_bytes())
            else:
                timed_out = True
        except (EOFError, OSError, pickle.UnpicklingError):
            pass  # it died without an answer, or in the middle of one
        if answer is None:
            if not timed_out:
                self._process.join(WALL_SLACK)  # its pipe closed: it has ended, or is ending
            if self._process.exitcode is None:  # this thread alone reads the exit status
                self.cancel()
        exitcode = self._finish()
        if answer is not None:
            kind, *payload = answer
            if kind == "ok":
                return tuple(payload)
            raise _rebuild(self.budget, *payload)
        # SIGXCPU at the soft limit, SIGKILL at the hard one (a second later) when we did not kill it.
        if exitcode == -signal.SIGXCPU or (exitcode == -signal.SIGKILL and not self._stopped):
            raise self.budget.exceeded()
        if timed_out:
            # Under its CPU budget but past its time: waiting (a renderer's own I/O) or a loaded
            # machine. DEADLINE_EXCEEDED, not UNAVAILABLE: the caller may try this file again
            # later, but it is no sign that the service is down for every file.
            raise TimedOut("Rendering this file took longer than the thumbnail service waits.")
        if self._stopped:
            raise Unavailable("The render was stopped before it finished.")
        if exitcode is not None and exitcode < 0:
            raise InvalidInput("The image could not be decoded: its decoder crashed on it.")
        raise errors.Internal("The thumbnail service failed to render this file.")

    def _close_input(self) -> None:
        if self._data is not None:
            self._data.close()
            self._data = None

    def _finish(self) -> int | None:
        self._close_input()
        self._result.close()
        self._process.join()
        with self._lock:
            self._reaped = True
        return self._process.exitcode


def _rebuild(budget: Budget, class_names: list[str], message: str) -> UploadError:
    """The child's error as the nearest class of the shared error model."""
    if "OverBudget" in class_names:
        return budget.exceeded()
    for name in class_names:
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, UploadError):
            return cls(message)
    return errors.Internal("The thumbnail service failed to render this file.")


# --- in the child ---

_budget: Budget | None = None  # this process's render budget, in a render's process


def current_budget() -> Budget | None:
    """The budget of the render this process runs (None outside a render's process):
    what a renderer gives a program it starts, which the render's own limits do not hold."""
    return _budget


def _child(render: RenderFunction, box: tuple[int, int], budget: Budget, data, result, job,
           settings: dict) -> None:
    global _budget
    _budget = budget
    plugin_settings.install(settings)  # the fork server's interpreter never read them
    os.setpgid(0, 0)  # a group of its own: stopping the render stops what it started
    Image.MAX_IMAGE_PIXELS = budget.max_pixels
    source = IncomingFile(tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES))
    threading.Thread(target=_feed, args=(data, source), daemon=True).start()
    # Limits last: the feeding thread's stack is already there, and what the child
    # starts with (the interpreter, Pillow, the renderers) is not the render's to pay for.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump a core otherwise
    resource.setrlimit(resource.RLIMIT_CPU, (budget.cpu_seconds, budget.cpu_seconds + 1))
    # The soft limit is the budget. The hard one stays: a program the renderer starts
    # (ffmpeg maps ~300 MiB of libraries) gets a budget of its own (thumbnail_service.video).
    limit = _address_space() + budget.memory_bytes
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    result.send_bytes(pickle.dumps(job(render, box, source), protocol=pickle.HIGHEST_PROTOCOL))


def _render(render: RenderFunction, box: tuple[int, int], source: IncomingFile):
    try:
        im = render(source, box)
        if im.width > box[0] or im.height > box[1]:
            im.thumbnail(box)
        return ("ok", *encode(im))
    except MemoryError:
        return "error", ["OverBudget"], ""
    except UploadError as exc:
        return "error", [c.__name__ for c in type(exc).__mro__], exc.message
    except Exception:
        return "error", ["Internal"], "The thumbnail service failed to render this file."


def transform(applies, how: tuple[str, dict], source: IncomingFile):
    """The transforms' job in the child: ``applies`` is [(name, apply)] for the
    type, run in order on the previous one's output; ``how`` = (MIME type,
    parameters). Answers ("ok", new bytes or None, removed names, transform names)."""
    mime, parameters = how
    try:
        data, removed, names = None, [], []
        for name, apply in applies:
            current = source if data is None else io.BytesIO(data)
            current.seek(0)
            result = apply(current, mime, parameters)
            if result is not None:
                data = bytes(result.data)
                removed += [str(r)[:64] for r in result.removed]
                names.append(name)
        return "ok", data, removed, names
    except MemoryError:
        return "error", ["OverBudget"], ""
    except UploadError as exc:
        return "error", [c.__name__ for c in type(exc).__mro__], exc.message
    except Exception:
        return "error", ["Internal"], "The thumbnail service failed to transform this file."


def _feed(data, source: IncomingFile) -> None:
    try:
        while True:
            source.append(data.recv_bytes())
    except EOFError:
        source.end()
    except BaseException:
        source.abort()


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def encode(im: Image.Image) -> tuple[bytes, str, int, int]:
    """(bytes, MIME type, width, height): PNG where there is transparency to keep,
    JPEG otherwise; never more than MAX_REPLY_BYTES (the reply must fit gRPC's message
    limit): a thumbnail too large (a PNG of noise in a large box) is halved until it
    fits, its kind kept."""
    while True:
        data, mime = _encode(im)
        if len(data) <= MAX_REPLY_BYTES:
            return data, mime, im.width, im.height
        im = im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.BICUBIC)


def _encode(im: Image.Image) -> tuple[bytes, str]:
    out = io.BytesIO()
    if im.mode in ("RGBA", "LA") or "transparency" in im.info:
        im.save(out, "PNG", optimize=True)
        return out.getvalue(), "image/png"
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    im.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue(), "image/jpeg"

"""The Thumbnail gRPC service: stream in, small image out."""
from __future__ import annotations

import io
import logging
import re
import tempfile
import threading
import time

import grpc
import pluggy
from PIL import Image

from protos import thumbnail_pb2, thumbnail_pb2_grpc
from protos.errors import Internal, InvalidInput, TooLarge, UnsupportedType, UploadError, abort
from thumbnail_service import metrics
from thumbnail_service.config import Settings
from thumbnail_service.incoming import IncomingFile
from thumbnail_service.types import Renderer, RenderFunction

log = logging.getLogger("upload.thumbnail")

# Uploads up to this size stay in memory while rendering; larger ones spill to disk.
SPOOL_BYTES = 4 * 1024 * 1024
# No caller needs a preview larger than this; it bounds the work one call can ask for.
MAX_BOX = 1024


class Cancelled(UploadError):
    """The caller went away (cancelled, or its deadline passed) mid-stream."""

    grpc_code = grpc.StatusCode.CANCELLED
    default_message = "The caller cancelled the upload."


class RenderThread(threading.Thread):
    """Runs a renderer on the upload while the call's own thread is still
    receiving it; ``result()`` joins and returns or raises what it did.

    One per call, always joined before the call returns: the receiving side
    ends or aborts the IncomingFile whatever happens, so a renderer waiting
    on it always wakes up."""

    def __init__(self, render: RenderFunction, source: IncomingFile, box: tuple[int, int]):
        # Daemon only so that a renderer stuck in its own code cannot hold up exit.
        super().__init__(name="render", daemon=True)
        self._render, self._source, self._box = render, source, box
        self._image: Image.Image | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._image = self._render(self._source, self._box)
        except BaseException as exc:  # handed to the call's thread by result()
            self._error = exc

    def result(self) -> Image.Image:
        self.join()
        if self._error is not None:
            raise self._error
        return self._image


def outcome_name(error: UploadError) -> str:
    """The error's class as a metric label: UnsupportedType -> unsupported_type."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(error).__name__).lower()


def collect_renderers(pm: pluggy.PluginManager) -> dict[str, Renderer]:
    table: dict[str, Renderer] = {}
    # Registration order, so a later plugin's renderer replaces an earlier one.
    for result in reversed(pm.hook.upload_thumbnail_renderers()):
        for renderer in result or ():
            for mime in renderer.mime_types:
                table[mime] = renderer
    return table


def encode(im: Image.Image) -> tuple[bytes, str]:
    """PNG where there is transparency to keep, JPEG otherwise."""
    out = io.BytesIO()
    if im.mode in ("RGBA", "LA") or "transparency" in im.info:
        im.save(out, "PNG", optimize=True)
        return out.getvalue(), "image/png"
    if im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    im.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue(), "image/jpeg"


class ThumbnailServicer(thumbnail_pb2_grpc.ThumbnailServicer):
    def __init__(self, pm: pluggy.PluginManager, settings: Settings):
        self.renderers = collect_renderers(pm)
        self.settings = settings

    def _receive(self, requests, context, sink: IncomingFile) -> None:
        """Append the stream to ``sink`` and end it; on any failure abort it
        instead, so that a renderer waiting for more bytes stops."""
        try:
            for message in requests:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidInput("Only the first message may carry options; the rest carry bytes.")
                if sink.size + len(message.chunk) > self.settings.max_input:
                    raise TooLarge(f"The file is larger than the {self.settings.max_input} bytes this service renders.")
                sink.append(message.chunk)
            # A call that dies mid-stream may also just end the iterator, as if
            # the upload were complete; don't render a cut-off file for nobody.
            if not context.is_active() or context.time_remaining() <= 0:
                raise Cancelled()
            if sink.size == 0:
                raise InvalidInput("The file is empty.")
        except grpc.RpcError:
            # What the request iterator raises when the client cancels or its deadline passes.
            sink.abort()
            raise Cancelled() from None
        except BaseException:
            sink.abort()
            raise
        sink.end()

    def _box(self, options) -> tuple[int, int]:
        width = options.max_width or self.settings.size
        height = options.max_height or self.settings.size
        if not (0 < width <= MAX_BOX and 0 < height <= MAX_BOX):
            raise InvalidInput(f"max_width and max_height must be between 1 and {MAX_BOX}.")
        return width, height

    def Render(self, request_iterator, context):
        started, received = time.perf_counter(), [0]
        try:
            reply = self._render(request_iterator, context, received)
        except UploadError as exc:
            error = exc
        except Exception:
            log.exception("rendering failed")
            error = Internal("The thumbnail service failed to render this file.")
        else:
            metrics.count_render("ok", time.perf_counter() - started, received[0])
            return reply
        metrics.count_render(outcome_name(error), time.perf_counter() - started, received[0])
        abort(context, error)

    def _render(self, request_iterator, context, received: list[int]):
        """One Render call's work; ``received[0]`` ends up as the bytes that arrived."""
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "options":
            raise InvalidInput("The first message must carry the render options.")
        options = first.options
        mime = options.mime_type or options.info.declared_type
        renderer = self.renderers.get(mime)
        if renderer is None:
            raise UnsupportedType(f"No thumbnail renderer handles {mime or 'files of unknown type'}.")
        box = self._box(options)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            # Decode while the rest is still arriving: the renderer reads on
            # its own thread, waiting for bytes as needed, while this one receives.
            source = IncomingFile(spool)
            rendering = RenderThread(renderer.render, source, box)
            rendering.start()
            try:
                self._receive(request_iterator, context, source)
            finally:
                # A failed upload's error wins over whatever the renderer
                # made of the abort, but only once the renderer has stopped.
                rendering.join()
                received[0] = source.size
            im = rendering.result()
        if im.width > box[0] or im.height > box[1]:
            im.thumbnail(box)
        data, out_mime = encode(im)
        return thumbnail_pb2.ThumbnailImage(data=data, mime_type=out_mime,
                                            width=im.width, height=im.height)

    def GetRenderers(self, request, context):
        return thumbnail_pb2.Renderers(mime_types=sorted(self.renderers))

"""The Thumbnail gRPC service: stream in, small image out."""
from __future__ import annotations

import logging
import re
import threading
import time

import grpc
import pluggy

from protos.errors import Busy, Cancelled, Internal, InvalidInput, TooLarge, UnsupportedType, UploadError, abort
from protos.plugins import loaded_plugins
from protos.upload.v1 import common_pb2, thumbnail_pb2, thumbnail_pb2_grpc
from thumbnail_service import metrics
from thumbnail_service.config import Settings
from thumbnail_service.isolation import Budget, RenderChild, check_picklable, start_fork_server, transform
from thumbnail_service.types import Renderer, Transform

log = logging.getLogger("upload.thumbnail")

RENDER_METHOD = "/upload.v1.Thumbnail/Render"
TRANSFORM_METHOD = "/upload.v1.Thumbnail/Transform"
# Chunks of a transformed file sent back (well under gRPC's 4 MiB message limit).
REPLY_CHUNK = 1024 * 1024
# TransformOptions.parameters: at most this many, each value at most this long.
MAX_PARAMETERS, MAX_PARAMETER = 32, 256
# No caller needs a preview larger than this; it bounds the work one call can ask for.
MAX_BOX = 1024


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


def collect_transforms(pm: pluggy.PluginManager) -> dict[str, list[Transform]]:
    """Every transform of each MIME type, in registration order (all of them run)."""
    table: dict[str, list[Transform]] = {}
    for result in reversed(pm.hook.upload_transforms()):
        for item in result or ():
            for mime in item.mime_types:
                table.setdefault(mime, []).append(item)
    return table


class ThumbnailServicer(thumbnail_pb2_grpc.ThumbnailServicer):
    def __init__(self, pm: pluggy.PluginManager, settings: Settings, built_in: tuple[str, ...] = ()):
        self.renderers = collect_renderers(pm)
        self.transforms = collect_transforms(pm)
        everything = {t.name: t for ts in self.transforms.values() for t in ts}
        check_picklable(self.renderers.values(), everything.values())
        start_fork_server(self.renderers.values(), everything.values())
        self.settings = settings
        self.budget = Budget(settings.render_cpu, settings.render_memory, settings.max_pixels)
        self._slots = threading.BoundedSemaphore(settings.workers)
        # For GetRenderers: what a gateway's GET /policy lists as the thumbnail service's plugins.
        self.plugins = [common_pb2.PluginInfo(name=p["name"], source=p["from"], hooks=p["hooks"])
                        for p in loaded_plugins(pm, set(built_in))]

    def _receive(self, requests, context, sink: RenderChild) -> None:
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
            if context.is_active():
                log.exception("rendering failed")
                error = Internal("The thumbnail service failed to render this file.")
            else:
                # The caller went away (its stream broke, even before the options came):
                # nothing is wrong here, and the interceptor counts it as the caller's.
                error = Cancelled()
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
        # Busy is said at once (the caller retries), never queued: a waiting call would hold
        # a server thread, and those are kept for health checks and quick calls.
        if not self._slots.acquire(blocking=False):
            metrics.GRPC.refuse(RENDER_METHOD, "busy")
            raise Busy(f"All {self.settings.workers} renders are busy; try again shortly.")
        try:
            # The render starts in its own process now and decodes while the rest arrives.
            child = RenderChild(renderer.render, box, self.budget)
            context.add_callback(child.cancel)  # the caller went away: stop it at once
            try:
                self._receive(request_iterator, context, child)
            finally:
                received[0] = child.size
            try:
                data, out_mime, width, height = child.result()
            except UploadError:
                if not context.is_active():
                    raise Cancelled() from None
                raise
        finally:
            self._slots.release()
        return thumbnail_pb2.ThumbnailImage(data=data, mime_type=out_mime, width=width, height=height)

    def GetRenderers(self, request, context):
        return thumbnail_pb2.Renderers(mime_types=sorted(self.renderers), plugins=self.plugins)

    def GetTransforms(self, request, context):
        types: dict[str, set[str]] = {}  # name -> MIME types, in the order the transforms run
        for mime, transforms in self.transforms.items():
            for registered in transforms:
                types.setdefault(registered.name, set()).add(mime)
        return thumbnail_pb2.Transforms(
            mime_types=sorted(self.transforms), names=sorted(types),
            transforms=[thumbnail_pb2.TransformInfo(name=name, mime_types=sorted(mimes)) for name, mimes in types.items()])

    def Transform(self, request_iterator, context):
        """All the work happens before the reply stream is returned (so the call is
        held to the admission limits while it works); the stream only sends."""
        started, received = time.perf_counter(), [0]
        try:
            data, removed, names, mime = self._transform(request_iterator, context, received)
        except UploadError as exc:
            error = exc
        except Exception:
            if context.is_active():
                log.exception("transforming failed")
                error = Internal("The thumbnail service failed to transform this file.")
            else:
                error = Cancelled()
        else:
            metrics.count_transform("changed" if data is not None else "unchanged",
                                    time.perf_counter() - started, received[0])
            return _transform_replies(data, removed, names, mime)
        metrics.count_transform(outcome_name(error), time.perf_counter() - started, received[0])
        abort(context, error)

    def _transform(self, request_iterator, context, received: list[int]):
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "options":
            raise InvalidInput("The first message must carry the transform options.")
        options = first.options
        mime = options.mime_type or options.info.declared_type
        transforms = self.transforms.get(mime)
        if not transforms:
            raise UnsupportedType(f"No transform handles {mime or 'files of unknown type'}.")
        parameters = dict(options.parameters)
        if len(parameters) > MAX_PARAMETERS or any(len(v.encode()) > MAX_PARAMETER for v in parameters.values()):
            raise InvalidInput(f"At most {MAX_PARAMETERS} parameters of at most {MAX_PARAMETER} bytes each.")
        if not self._slots.acquire(blocking=False):
            metrics.GRPC.refuse(TRANSFORM_METHOD, "busy")
            raise Busy(f"All {self.settings.workers} render slots are busy; try again shortly.")
        try:
            child = RenderChild([(t.name, t.apply) for t in transforms], (mime, parameters), self.budget,
                                job=transform)
            context.add_callback(child.cancel)
            try:
                self._receive(request_iterator, context, child)
            finally:
                received[0] = child.size
            try:
                data, removed, names = child.result()
            except UploadError:
                if not context.is_active():
                    raise Cancelled() from None
                raise
        finally:
            self._slots.release()
        return data, removed, names, mime


def _transform_replies(data: bytes | None, removed: list[str], names: list[str], mime: str):
    yield thumbnail_pb2.TransformReply(result=thumbnail_pb2.TransformResult(
        changed=data is not None, removed=removed if data is not None else [], transforms=names,
        size=len(data) if data is not None else 0, mime_type=mime))
    if data is not None:
        view = memoryview(data)
        for at in range(0, len(data), REPLY_CHUNK):
            yield thumbnail_pb2.TransformReply(chunk=bytes(view[at:at + REPLY_CHUNK]))

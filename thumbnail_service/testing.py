"""The thumbnail service, for a plugin's own tests (a pytest plugin installed with the project,
entry point ``pytest11``): ``upload_thumbnailer(*plugins, env=None)`` starts the real service
with its built-in renderers and transforms, the installed plugins and ``plugins``; its
``render`` and ``transform`` go through the service as the gateway's calls do (a render child
per call, a ``source`` without ``fileno()``, the final encoding), concurrent calls included.

    def test_text_gets_a_preview(upload_thumbnailer):
        thumbnail = upload_thumbnailer(my_plugin).render(b"line one\\n", "text/plain")
        assert thumbnail.mime_type == "image/png" and thumbnail.width <= 256

A renderer or transform must be importable by name (a module-level function of an importable
module): it reaches the render child by pickle. Imports are made when the fixture is used.
"""
from __future__ import annotations

import pytest

from protos.testing import Running, starting

CHUNK = 64 * 1024


class RunningThumbnailer(Running):
    """A started thumbnail service and a channel to it."""

    def __init__(self, plugins, env):
        from protos.upload.v1 import thumbnail_pb2_grpc
        from thumbnail_service.config import Settings
        from thumbnail_service.server import create_plugins, create_server

        super().__init__(*create_server("127.0.0.1:0", pm=create_plugins(env=env, extra_plugins=plugins),
                                        settings=Settings.from_env(env)))
        self.stub = thumbnail_pb2_grpc.ThumbnailStub(self.channel)

    def render(self, data: bytes, mime_type: str, box: tuple[int, int] = (0, 0), timeout: float = 60.0):
        """The ThumbnailImage (``data``, ``mime_type``, ``width``, ``height``) the service makes of
        ``data`` (of ``mime_type``, as the validator detected it), within ``box`` (0: its default).
        A file it cannot render raises grpc.RpcError (INVALID_ARGUMENT, UNIMPLEMENTED...)."""
        from protos.streaming import file_info, render_requests
        from protos.upload.v1 import thumbnail_pb2

        options = thumbnail_pb2.RenderOptions(info=file_info("file", len(data)), mime_type=mime_type,
                                              max_width=box[0], max_height=box[1])
        return self.stub.Render(render_requests(options, _chunks(data)), timeout=timeout)

    def transform(self, data: bytes, mime_type: str, parameters: dict[str, str] | None = None,
                  timeout: float = 60.0):
        """(TransformResult, the new bytes: ``data`` itself when nothing changed) for ``data``
        through every transform of ``mime_type``; ``parameters`` as the gateway sends them
        (``{"image_metadata": "strip-location"}`` by default)."""
        from protos.streaming import file_info, transform_requests
        from protos.upload.v1 import thumbnail_pb2

        options = thumbnail_pb2.TransformOptions(
            info=file_info("file", len(data)), mime_type=mime_type,
            parameters={"image_metadata": "strip-location"} if parameters is None else parameters)
        replies = list(self.stub.Transform(transform_requests(options, _chunks(data)), timeout=timeout))
        result = replies[0].result
        return result, (b"".join(reply.chunk for reply in replies[1:]) if result.changed else data)



def _chunks(data: bytes):
    for at in range(0, len(data), CHUNK):
        yield data[at:at + CHUNK]


@pytest.fixture
def upload_thumbnailer():
    """Start a real thumbnail service with the plugins given: ``upload_thumbnailer(my_plugin)``."""
    yield from starting(RunningThumbnailer)

"""Client side of the upload streams: turn a file into request messages."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

from protos.upload.v1 import common_pb2, thumbnail_pb2, validator_pb2

# 64 KiB: the validator's built-in rules decide from the first chunk, so a
# refusal costs one chunk of transfer.
CHUNK_SIZE = 64 * 1024


def read_chunks(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    while chunk := stream.read(chunk_size):
        yield chunk


def write_all(handle: BinaryIO, data: bytes) -> None:
    """Write every byte of ``data`` to an unbuffered file. Its ``write`` may
    store only part (the disk filled up meanwhile): the rest is written again,
    so a full disk raises its OSError (ENOSPC) instead of losing bytes quietly."""
    view = memoryview(data)
    while view:
        written = handle.write(view)
        if written is None:  # a non-blocking file that cannot take more now
            raise BlockingIOError("the file cannot take more bytes now")
        view = view[written:]


def file_info(original_name: str, declared_size: int | None = None, declared_type: str = ""):
    info = common_pb2.FileInfo(original_name=original_name, declared_type=declared_type)
    if declared_size is not None:
        info.declared_size = declared_size
    return info


def validate_requests(info: common_pb2.FileInfo, chunks: Iterable[bytes]):
    yield validator_pb2.ValidateRequest(info=info)
    for chunk in chunks:
        yield validator_pb2.ValidateRequest(chunk=chunk)


def render_requests(options: thumbnail_pb2.RenderOptions, chunks: Iterable[bytes]):
    yield thumbnail_pb2.RenderRequest(options=options)
    for chunk in chunks:
        yield thumbnail_pb2.RenderRequest(chunk=chunk)


def transform_requests(options: thumbnail_pb2.TransformOptions, chunks: Iterable[bytes]):
    yield thumbnail_pb2.TransformRequest(options=options)
    for chunk in chunks:
        yield thumbnail_pb2.TransformRequest(chunk=chunk)

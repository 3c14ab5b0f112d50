"""Loaded by schemathesis (SCHEMATHESIS_HOOKS): tus chunks are raw bytes."""
import schemathesis
from schemathesis.transport.serialization import serialize_binary


@schemathesis.serializer("application/offset+octet-stream")
def tus_chunk(ctx, value):
    return {"data": serialize_binary(value)}

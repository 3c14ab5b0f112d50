"""One call waiting for its stream's bytes never holds up another."""
from __future__ import annotations

import queue
import time

from protos.streaming import file_info
from protos.upload.v1 import validator_pb2, validator_pb2_grpc


def test_a_stream_waiting_for_its_head_does_not_hold_up_other_calls(validator):
    """A stream whose head has not all arrived waits inside the content rule (libmagic
    wants 64 KiB); a Check meanwhile is answered at once. (functools.cached_property on
    Python 3.11 locks across instances: it made the Check wait for the stream.)"""
    stub = validator_pb2_grpc.ValidatorStub(validator.channel)
    release = queue.Queue()

    def slow_upload():
        yield validator_pb2.ValidateRequest(info=file_info("notes.txt", 1_000_000))
        yield validator_pb2.ValidateRequest(chunk=b"plain words\n" * 100)
        release.get()  # the rest of the head never comes while the Check runs

    stream = stub.Validate.future(slow_upload(), timeout=30)
    try:
        time.sleep(0.3)  # the stream is now waiting in the content rule
        started = time.monotonic()
        verdict = stub.Check(validator_pb2.CheckRequest(info=file_info("a.txt"), head=b"hello\n", size=6), timeout=5)
        assert verdict.accepted
        assert time.monotonic() - started < 1
    finally:
        release.put(None)
        stream.cancel()

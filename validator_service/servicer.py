"""The Validator gRPC service: a stream (or one message) in, a verdict out."""
from __future__ import annotations

import logging

import pluggy

from protos.errors import Cancelled, Internal, InvalidInput, UploadError, abort
from protos.upload.v1 import validator_pb2, validator_pb2_grpc
from validator_service import metrics
from validator_service.config import Settings
from validator_service.fileview import FileView
from validator_service.pipeline import WholeFile, judge
from validator_service.policy import Policy

log = logging.getLogger("upload.validator")

# The verdict repeats the name's extension, and refusals quote it: a name of megabytes made
# a reply over gRPC's message limit. File systems stop at 255 bytes; this leaves room.
MAX_NAME_BYTES = 1024


class ValidatorServicer(validator_pb2_grpc.ValidatorServicer):
    def __init__(self, pm: pluggy.PluginManager, policy: Policy, settings: Settings):
        self.pm = pm
        self.policy = policy
        self.settings = settings

    def Validate(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "info":
            return self._judge(None, request_iterator, context)
        return self._judge(first.info, request_iterator, context)

    def Check(self, request, context):
        if request.size < len(request.head):
            error = InvalidInput(f"size is {request.size} but the head alone holds {len(request.head)} bytes.")
            abort(context, error)
        parts = iter([validator_pb2.ValidateRequest(chunk=request.head),
                      validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=request.size))])
        return self._judge(request.info if request.HasField("info") else None, parts, context)

    def _judge(self, info, parts, context):
        try:
            if info is None:
                raise InvalidInput("The first message must carry the file's info (original_name, size, type).")
            if not info.original_name.strip():
                raise InvalidInput("original_name is required: the rules judge the file by its extension.")
            if len(info.original_name.encode()) > MAX_NAME_BYTES:
                raise InvalidInput(f"original_name is longer than {MAX_NAME_BYTES} bytes.")
            if info.HasField("declared_size") and info.declared_size < 0:
                raise InvalidInput("declared_size cannot be negative.")
            file = FileView(info, parts, self.settings.max_head)
            whole = WholeFile(self.policy.whole_file_rules, file) if self.policy.whole_file_rules else None
            try:
                verdict = judge(self.pm, self.policy, file, whole)
            finally:
                if whole is not None:
                    whole.close()
            metrics.count_verdict(verdict)
            if not verdict.accepted and not verdict.head_incomplete:
                # What a person looking up a refusal needs: which file, why, and which rule.
                reason = verdict.reasons[0]
                log.info("refused %r (%d bytes read): %s, by rule %s", info.original_name, verdict.bytes_read,
                         reason.code, reason.rule)
            return verdict
        except UploadError as exc:
            error = exc
        except Exception:
            if context.is_active():
                log.exception("validation failed")
                error = Internal("The validator failed while checking this file; it was not accepted.")
            else:
                # The caller cancelled or its deadline passed, and its stream broke under the
                # rules: nothing is wrong here (the interceptor counts it as the caller's).
                error = Cancelled()
        abort(context, error)

    def GetPolicy(self, request, context):
        return self.policy.to_proto()

"""Runs the rules over one upload and turns their decisions into a Verdict."""
from __future__ import annotations

import logging

import pluggy

from protos.plugins import notify
from protos.upload.v1 import validator_pb2
from validator_service.fileview import FileView
from validator_service.policy import Policy
from validator_service.types import Rejection

log = logging.getLogger("upload.validator")


def _rules_in_call_order(hook):
    # pluggy's own order for a firstresult hook (tryfirst first, then the most
    # recently registered); wrappers are not supported on upload_check.
    return [impl for impl in reversed(hook.get_hookimpls())
            if not (impl.hookwrapper or getattr(impl, "wrapper", False))]


# A rule's words go back in the reply: bounded, so that no plugin can push it over gRPC's
# message limit.
MAX_CODE, MAX_MESSAGE = 64, 2000


def _bounded(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 1] + "…"


def judge(pm: pluggy.PluginManager, policy: Policy, file: FileView) -> validator_pb2.Verdict:
    """Ask each rule in turn until one refuses; record what each decided.

    Same semantics as ``pm.hook.upload_check(...)`` (firstresult), run rule by
    rule so that the verdict can say which rule decided what.
    """
    args = {"file": file, "policy": policy}
    decisions = []
    rejection: Rejection | None = None
    rejected_by = ""
    for impl in _rules_in_call_order(pm.hook.upload_check):
        result = impl.function(**{name: args[name] for name in impl.argnames})
        if result is None:
            decisions.append(validator_pb2.RuleDecision(rule=impl.plugin_name, outcome="pass"))
            continue
        decisions.append(validator_pb2.RuleDecision(
            rule=impl.plugin_name, outcome="reject", code=result.code[:MAX_CODE]))
        rejection, rejected_by = result, impl.plugin_name
        break

    accepted = rejection is None
    if accepted:
        file.finish()
    reasons = [] if accepted else [rejection]
    notify(pm.hook.upload_validated, log, file=file, accepted=accepted, reasons=reasons)

    file_type = policy.type_for(file.extension)
    width, height = file.image_size or (0, 0)
    return validator_pb2.Verdict(
        accepted=accepted,
        detected_type=file.detected_type if accepted else file.known_type,
        reasons=[validator_pb2.Reason(code=r.code[:MAX_CODE], message=_bounded(r.message), rule=rejected_by)
                 for r in reasons],
        width=width,
        height=height,
        extension=file.extension,
        bytes_read=file.bytes_read,
        decisions=decisions,
        is_image=bool(accepted and file_type and file_type.image),
        head_incomplete=file.head_incomplete,
    )

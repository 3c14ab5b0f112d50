"""Runs the rules over one upload and turns their decisions into a Verdict: the
``upload_check`` rules on the head first, then, when whole-file rules are
registered and the head rules pass the file, the rest of the stream through
every whole-file rule's scanner."""
from __future__ import annotations

import logging

import grpc
import pluggy

from protos.errors import Internal, UploadError
from protos.plugins import notify
from protos.upload.v1 import validator_pb2
from validator_service.fileview import FileView
from validator_service.policy import Policy
from validator_service.types import Rejection, Scanner, WholeFileRule

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


WHOLE_FILE_REQUIRED = "whole_file_required"


class WholeFile:
    """The whole-file rules' scanners on one file. Opened before the first byte
    is read; every chunk the view reads is fed to each of them (through its
    ``tap``), whichever rule made the view read it. A scanner that fails while
    the head rules still run is remembered, not raised: a head rule's refusal
    comes first (a renamed program is refused 415 while clamd is down), and
    only a file they pass fails with the scanner's error."""

    def __init__(self, rules: tuple[WholeFileRule, ...], file: FileView):
        self.file = file
        self.scanners: list[tuple[str, Scanner]] = []
        self.failure: BaseException | None = None
        for rule in rules:
            try:
                scanner = rule.open(file)
            except Exception as exc:
                self.failure = exc
                break
            if scanner is not None:
                self.scanners.append((rule.name, scanner))
        if self.scanners:
            file.tap = self._feed

    def _feed(self, data: bytes) -> None:
        if self.failure is not None:
            return
        for _, scanner in self.scanners:
            try:
                scanner.feed(data)
            except Exception as exc:
                self.failure = exc
                return

    def judge(self, decisions: list) -> tuple[Rejection | None, str]:
        """Read the stream to its end, feeding the scanners, then ask each for its
        verdict in turn; the first refusal and its rule's name, else (None, "").
        Raises the error a scanner met (Unavailable: the call fails UNAVAILABLE)."""
        if self.failure is not None:
            raise self.failure
        if not self.scanners:
            return None, ""
        while self.failure is None and self.file.read_on():
            pass
        if self.failure is not None:
            raise self.failure
        if not self.file.whole:
            # The caller sent a head and the size (Check, or `end` after part of the file):
            # these rules could not see every byte, so the file cannot be let in on this call.
            name = self.scanners[0][0]
            self.file.head_incomplete = True
            decisions.append(validator_pb2.RuleDecision(rule=name, outcome="reject", code=WHOLE_FILE_REQUIRED))
            return Rejection(WHOLE_FILE_REQUIRED,
                             f"This file must be checked whole, but only {self.file.bytes_read} of its "
                             "bytes were sent; send every byte."), name
        for name, scanner in self.scanners:
            result = scanner.finish()
            if result is None:
                decisions.append(validator_pb2.RuleDecision(rule=name, outcome="pass"))
                continue
            decisions.append(validator_pb2.RuleDecision(rule=name, outcome="reject", code=result.code[:MAX_CODE]))
            return result, name
        return None, ""

    def close(self) -> None:
        self.file.tap = None
        for name, scanner in self.scanners:
            try:
                scanner.close()
            except Exception:
                log.exception("whole-file rule %s failed to close; ignored", name)


def _run_rule(impl, args: dict, file: FileView) -> Rejection | None:
    """One rule's answer. A rule that raises, or answers anything but a Rejection or None,
    fails the call INTERNAL (never a pass), with a log line that names it; an UploadError it
    raises on purpose (Unavailable: its service is down) goes up as it is."""
    try:
        result = impl.function(**{name: args[name] for name in impl.argnames})
    except (UploadError, grpc.RpcError):
        raise  # an UploadError on purpose; a caller gone while the rule read its stream
    except Exception:
        log.exception("rule %s failed on %r", impl.plugin_name, file.original_name)
        raise Internal(f"The rule {impl.plugin_name} failed while checking this file; it was not accepted.") \
            from None
    if result is None or isinstance(result, Rejection):
        return result
    log.error("rule %s answered %r on %r, neither a Rejection nor None: the file is not accepted",
              impl.plugin_name, result, file.original_name)
    raise Internal(f"The rule {impl.plugin_name} gave no verdict on this file; it was not accepted.")


def judge(pm: pluggy.PluginManager, policy: Policy, file: FileView,
          whole: WholeFile | None = None) -> validator_pb2.Verdict:
    """Ask each rule in turn until one refuses; record what each decided.

    Same semantics as ``pm.hook.upload_check(...)`` (firstresult), run rule by
    rule so that the verdict can say which rule decided what. With ``whole``
    (whole-file rules are registered), a file the head rules pass is read to
    its end and judged by those rules too.
    """
    args = {"file": file, "policy": policy}
    decisions = []
    rejection: Rejection | None = None
    rejected_by = ""
    for impl in _rules_in_call_order(pm.hook.upload_check):
        result = _run_rule(impl, args, file)
        if result is None:
            # A plugin with several upload_check functions (the size rule checks the declared size
            # first and the counted one last) is one rule: one decision, under its name.
            if not any(d.rule == impl.plugin_name for d in decisions):
                decisions.append(validator_pb2.RuleDecision(rule=impl.plugin_name, outcome="pass"))
            continue
        decisions[:] = [d for d in decisions if d.rule != impl.plugin_name]
        decisions.append(validator_pb2.RuleDecision(
            rule=impl.plugin_name, outcome="reject", code=result.code[:MAX_CODE]))
        rejection, rejected_by = result, impl.plugin_name
        break
    if rejection is None and whole is not None:
        rejection, rejected_by = whole.judge(decisions)

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

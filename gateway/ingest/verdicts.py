"""A validator's verdict as the gateway acts on it: a refusal with the rule's
reason, or, when the verdict is not one to act on, the failure it stands for."""
from __future__ import annotations

from protos.errors import Refused, Unavailable, UploadError
from protos.text import human_size


def refusal(verdict, original_name: str, size: int | None = None) -> UploadError:
    """The refusal a verdict stands for (``size``: the file's, when known, for the record)."""
    if verdict.head_incomplete:
        # Not a verdict to act on: a rule wanted more of the file than was sent, because the
        # validator's rules changed since this gateway read its policy (a whole-file rule
        # turned on). Refused, a finished tus upload would lose its bytes; unavailable, it is
        # kept and judged again with the policy read afresh.
        return Unavailable("The validator's rules changed while this file was on its way; "
                           "nothing was stored. Please try again.")
    reason = verdict.reasons[0]
    refused = Refused(reason.code, reason.message, original_name, rule=reason.rule or None)
    refused.size = size
    return refused


def too_large(limit: int, original_name: str | None = None) -> Refused:
    return Refused("file_too_large", f"The file is larger than the {human_size(limit)} limit.", original_name)

"""Hooks of the validator service.

A plugin is a module (or object) with functions named like the hooks below,
marked with ``protos.plugins.hookimpl``. Every hook runs inside the validator
process, on the gRPC worker thread handling the call, so a slow hook slows
that upload (and only that one).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from protos.plugins import hookspec
from validator_service.types import FileType, Rejection

if TYPE_CHECKING:
    from validator_service.fileview import FileView
    from validator_service.policy import Policy

# What the hooks give back, importable from here as the README shows plugin authors.
__all__ = ["FileType", "Rejection"]


@hookspec
def upload_file_types() -> Iterable[FileType]:
    """Register allowed file types. Registration hook: called once at start-up.

    Yield (or return a list of) ``FileType``. A later registration of the same
    extension replaces an earlier one, so a plugin can widen or narrow the MIME
    types of a built-in type. Example::

        @hookimpl
        def upload_file_types():
            yield FileType("md", ("text/markdown", "text/plain"))
    """


@hookspec
def upload_removed_file_types() -> Iterable[str]:
    """Name extensions that must not be accepted, whoever registered them.
    Registration hook: called once at start-up, after ``upload_file_types``.

    Example::

        @hookimpl
        def upload_removed_file_types():
            return ["doc"]   # no legacy Word binaries (macros)
    """


@hookspec(firstresult=True)
def upload_check(file: FileView, policy: Policy) -> Rejection | None:
    """Decide on one file. Decision hook: called for every upload, in order,
    until one returns a ``Rejection``; ``None`` means "no objection".

    Blocking: it runs on the call's worker thread before the verdict is sent.
    ``file.head(n)`` pulls the first ``n`` bytes from the stream (read once,
    shared by all rules; capped by VALIDATOR_MAX_HEAD); ``file.detected_type``
    is libmagic's answer on the head. The built-in rules are marked
    ``tryfirst`` so they run before plugin rules. An exception in a rule fails
    the call with INTERNAL (the file is not accepted). Example::

        @hookimpl
        def upload_check(file, policy):
            if b"EICAR" in file.head(4096):
                return Rejection("malware", "This file contains a test virus signature.")
    """


@hookspec
def upload_validated(file: FileView, accepted: bool, reasons: list[Rejection]) -> None:
    """Be told about every verdict. Notification hook: called after the
    verdict is decided and before it is sent; an exception here is logged and
    never changes or fails the verdict. Keep it fast (it delays the reply).
    Example::

        @hookimpl
        def upload_validated(file, accepted, reasons):
            audit_log.info("%s accepted=%s", file.original_name, accepted)
    """

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
from validator_service.types import FileType, Rejection, Scanner, WholeFileRule

if TYPE_CHECKING:
    from validator_service.fileview import FileView
    from validator_service.policy import Policy

# What the hooks give back, importable from here as the README shows plugin authors.
__all__ = ["FileType", "Rejection", "Scanner", "WholeFileRule"]


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
def upload_whole_file_rules() -> Iterable[WholeFileRule]:
    """Register rules that must see every byte of a file (a virus scanner, a
    search through a whole document). Registration hook: called once at
    start-up; yield (or return a list of) ``WholeFileRule``.

    With at least one registered, the policy says ``whole_file`` and callers
    send every byte: the verdict then comes after the last one. For each file,
    ``open(file)`` is called before its first byte is read and returns a
    ``Scanner`` (or None: nothing to look for in this file); its ``feed(data)``
    gets every byte as it arrives, overlapping with the caller storing them,
    and ``finish()`` returns a ``Rejection`` or None once the last byte is in
    and the ``upload_check`` rules have passed the file (one of them refusing
    still ends the call early). ``close()`` is always called. Blocking: all of
    it runs on the call's worker thread, so keep ``feed`` quick (hand the bytes
    on). Raise ``protos.errors.Unavailable`` when the scanner cannot be reached:
    the call fails UNAVAILABLE (the gateway answers 503 and stores nothing). An
    exception of another kind fails it INTERNAL. Example::

        class FindJavaScript:
            def __init__(self, file):
                self.tail, self.found = b"", False

            def feed(self, data):
                # "/JS" may straddle two pieces: keep the last two bytes of the one before.
                self.found = self.found or b"/JS" in self.tail + data[:2] or b"/JS" in data
                self.tail = (self.tail + data[-2:])[-2:]

            def finish(self):
                if self.found:
                    return Rejection("pdf_javascript", "PDFs with JavaScript are not accepted.")

            def close(self):
                pass

        @hookimpl
        def upload_whole_file_rules():
            yield WholeFileRule("pdf_javascript",
                                lambda file: FindJavaScript(file) if file.extension == "pdf" else None)
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

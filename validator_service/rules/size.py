"""Refuses empty files and files over MAX_FILE_SIZE.

Two checks: a declared size is judged first, before any byte is read; a size
the caller did not declare is judged last, once the other rules have had
their say from the head, so a bad head is refused without waiting for the end.
"""
from __future__ import annotations

from protos.plugins import hookimpl
from protos.text import human_size
from validator_service.hookspecs import Rejection


def too_large(policy) -> Rejection:
    return Rejection("file_too_large", f"The file is larger than the {human_size(policy.max_file_size)} limit.")


EMPTY = Rejection("empty_file", "The file is empty.")


@hookimpl(tryfirst=True)
def upload_check(file, policy):
    if file.declared_size is not None and file.declared_size > policy.max_file_size:
        return too_large(policy)
    if file.declared_size == 0 or not file.head(1):
        return EMPTY
    return None


@hookimpl(specname="upload_check", trylast=True)
def check_counted_size(file, policy):
    if file.declared_size is None and file.exceeds(policy.max_file_size):
        return too_large(policy)
    return None

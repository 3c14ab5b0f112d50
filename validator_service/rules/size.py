"""Refuses empty files and files over MAX_FILE_SIZE."""
from __future__ import annotations

from protos.plugins import hookimpl
from validator_service.hookspecs import Rejection


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1024
    raise AssertionError("unreachable")


# Cheapest rule first: it needs no bytes when the size was declared.
@hookimpl(tryfirst=True)
def upload_check(file, policy):
    if file.exceeds(policy.max_file_size):
        return Rejection(
            "file_too_large",
            f"The file is larger than the {human_size(policy.max_file_size)} limit.",
        )
    if file.declared_size == 0 or not file.head(1):
        return Rejection("empty_file", "The file is empty.")
    return None

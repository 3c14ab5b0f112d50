"""Wording shared by the services, so a limit reads the same everywhere."""
from __future__ import annotations


def human_size(n: int) -> str:
    """1536 -> "1.5 KiB"; 52428800 -> "50 MiB"."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            if unit == "bytes":
                return f"{int(size)} bytes" if int(size) != 1 else "1 byte"
            return f"{size:.1f}".rstrip("0").rstrip(".") + f" {unit}"
        size /= 1024
    raise AssertionError("unreachable")

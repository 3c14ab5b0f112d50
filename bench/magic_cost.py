"""libmagic's CPU per head: the validator's bounded handle against libmagic's
own defaults, on ordinary files and on the text heads that were slow for it."""
from __future__ import annotations

import time

import magic

from bench.common import KIB, Section, fmt_ms, met
from tests.hostile.corpus import ODD_TEXT, SLOW_FOR_LIBMAGIC, genuine
from tests.samples import CSV, TEXT
from validator_service.libmagic import MAGIC_HEAD, bounded_handle

# The bound the README states: no 64 KiB head costs the bounded handle more than this many times prose.
GOAL_TIMES_PROSE = 20


def cpu_ms(handle: magic.Magic, data: bytes, rounds: int) -> float:
    """Median CPU time of this thread per call, ms (CPU, not wall: other processes do not count)."""
    handle.from_buffer(data)
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        handle.from_buffer(data)
        times.append(time.thread_time() - start)
    return sorted(times)[len(times) // 2] * 1000


def heads() -> dict[str, bytes]:
    ordinary = {"prose (64 KiB .txt)": (TEXT.encode() * 1000)[:MAGIC_HEAD],
                "csv (64 KiB)": (CSV.encode() * 2000)[:MAGIC_HEAD]}
    for ext in ("svg", "jpg", "png", "pdf", "doc", "docx", "zip"):
        ordinary[f"sample.{ext}"] = genuine(ext)[:MAGIC_HEAD]
    return {**ordinary, **{f"{k} (64 KiB)": v for k, v in {**SLOW_FOR_LIBMAGIC, **ODD_TEXT}.items()}}


def run(quick: bool) -> Section:
    rounds = 5 if quick else 15
    bounded, defaults = bounded_handle(), magic.Magic(mime=True)
    cases = heads()
    prose = cpu_ms(bounded, cases["prose (64 KiB .txt)"], rounds)
    rows, data = [], []
    for label, head in cases.items():
        before, after = cpu_ms(defaults, head, rounds), cpu_ms(bounded, head, rounds)
        mime, was = bounded.from_buffer(head), defaults.from_buffer(head)
        shown = mime if len(mime) <= 28 else "..." + mime[-25:]
        rows.append([label, fmt_ms(before), fmt_ms(after), f"{after / prose:.1f}x",
                     shown + ("" if mime == was else f" (was {was})"), met(after < GOAL_TIMES_PROSE * prose)])
        data.append({"head": label, "defaults_ms": round(before, 3), "bounded_ms": round(after, 3),
                     "mime": mime, "defaults_mime": was})
    return Section(
        f"libmagic CPU per {MAGIC_HEAD // KIB} KiB head (in-process, median of {rounds})",
        ["head", "defaults ms", "bounded ms", "x prose", "mime", "met"],
        rows,
        notes=["defaults: python-magic's Magic(mime=True) as libmagic ships it",
               "bounded: the validator's handle (validator_service/libmagic.py)",
               f"x prose: bounded ms over the bounded handle's ms on 64 KiB of prose; goal < {GOAL_TIMES_PROSE}x"],
        data={"prose_ms": round(prose, 3), "heads": data},
    )

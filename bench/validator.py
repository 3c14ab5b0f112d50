"""Validator: how much of a big upload is read before the verdict, and how fast
it comes, against what libmagic alone costs on the same heads."""
from __future__ import annotations

import os
import time
from pathlib import Path

import magic

from bench import magic_cost
from bench.common import KIB, MIB, Section, Service, fmt_bytes, fmt_ms, met, summary_ms
from protos.streaming import CHUNK_SIZE, file_info, read_chunks, validate_requests
from protos.upload.v1 import validator_pb2, validator_pb2_grpc
from tests.samples import ALLOWED_EXTENSIONS, TEXT, make_sample

SERVICE_NAME = validator_pb2.DESCRIPTOR.services_by_name["Validator"].full_name
GOAL_BYTES = 64 * KIB
# The verdict's p50 through a unary Check may cost at most this much more than
# libmagic alone on the same head (gRPC, the rules, the image header parse).
GOAL_OVERHEAD_MS = 1.0
TEXT_TYPES = ("txt", "csv", "svg")
# Compressed payloads look random; tar pads with zero blocks.
ZERO_FILLED = ("tar",)

# A PE file's first bytes: DOS header (e_lfanew at 0x3c -> 0x80), stub, "PE\0\0"
# and a COFF header for x86-64, so libmagic sees a real Windows program.
_DOS_HEADER = (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
               b"\xb8" + b"\x00" * 7 + b"\x40" + b"\x00" * 35 + b"\x80\x00\x00\x00")
_DOS_STUB = b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21This program cannot be run in DOS mode.\r\r\n$"
PE_HEAD = (_DOS_HEADER + _DOS_STUB).ljust(0x80, b"\x00") + b"PE\x00\x00" + \
    b"\x64\x86\x03\x00" + b"\x00" * 12 + b"\xf0\x00\x22\x00"


def _text_filler(ext: str) -> bytes:
    """More of what the file already holds, so libmagic's text heuristics see
    a realistic 64 KiB rather than the sample followed by something alien."""
    if ext == "csv":
        rows = (f"Person{i},{20 + i % 50},City{i % 97}\n" for i in range(2000))
        return "".join(rows).encode()
    if ext == "svg":
        shapes = (f'  <circle cx="{i % 64}" cy="{i % 48}" r="{1 + i % 5}" fill="#{i * 2654435761 % 0xFFFFFF:06x}"/>\n'
                  for i in range(2000))
        return "".join(shapes).encode()
    return (TEXT * 200).encode()


def write_padded(ext: str, head: bytes, path: Path, size: int, noise: bytes) -> Path:
    """`head` then filler up to exactly `size` bytes (an SVG keeps its closing tag last)."""
    tail = b""
    if ext == "svg":
        head, tail = head.rsplit(b"</svg>", 1)[0], b"</svg>\n"
    filler = _text_filler(ext) if ext in TEXT_TYPES else \
        bytes(len(noise)) if ext in ZERO_FILLED else noise
    with open(path, "wb") as out:
        out.write(head)
        left = size - len(head) - len(tail)
        while left > 0:
            piece = filler[:left]
            out.write(piece)
            left -= len(piece)
        out.write(tail)
    return path


class _Counting:
    """The client side of the stream: counts what gRPC pulled from it."""

    def __init__(self, chunks):
        self.chunks = chunks
        self.pulled = 0

    def __iter__(self):
        for chunk in self.chunks:
            self.pulled += len(chunk)
            yield chunk


def validate_once(stub, path: Path, name: str) -> tuple[float, validator_pb2.Verdict, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        counting = _Counting(read_chunks(f, CHUNK_SIZE))
        start = time.perf_counter()
        verdict = stub.Validate(validate_requests(file_info(name, size), counting), timeout=60)
        elapsed = time.perf_counter() - start
        # Read before the file closes: what was pulled by the time the verdict came.
        return elapsed, verdict, counting.pulled


def check_once(stub, head: bytes, name: str, size: int) -> tuple[float, validator_pb2.Verdict]:
    """The gateway's usual call: one unary Check carrying the head (see gateway/ingest/services.py)."""
    request = validator_pb2.CheckRequest(info=file_info(name, size), head=head, size=size)
    start = time.perf_counter()
    verdict = stub.Check(request, timeout=60)
    return time.perf_counter() - start, verdict


def time_magic(fn, rounds: int) -> dict:
    fn()  # loads the magic database
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summary_ms(times)


def _case(stub, path: Path, label: str, rounds: int, mime_magic: magic.Magic) -> dict:
    name = path.name
    validate_once(stub, path, name)  # warm the connection and the worker's magic handle
    runs = [validate_once(stub, path, name) for _ in range(rounds)]
    verdict = runs[-1][1]
    with open(path, "rb") as f:
        head = f.read(64 * KIB)
    size = path.stat().st_size
    check_once(stub, head, name, size)
    checks = [check_once(stub, head, name, size) for _ in range(rounds)]
    if checks[-1][1].accepted != verdict.accepted:
        raise RuntimeError(f"{name}: Check and Validate disagree")
    pulled = sorted(r[2] for r in runs)
    magic_64k = time_magic(lambda: mime_magic.from_buffer(head), rounds)
    check = summary_ms([c[0] for c in checks])
    return {
        "label": label, "name": name, "size": path.stat().st_size,
        "accepted": verdict.accepted, "detected_type": verdict.detected_type,
        "reasons": [r.code for r in verdict.reasons],
        "bytes_read": max(r[1].bytes_read for r in runs),
        "client_pulled_median": pulled[len(pulled) // 2], "client_pulled_max": pulled[-1],
        "latency": summary_ms([r[0] for r in runs]),
        "magic_2k": time_magic(lambda: mime_magic.from_buffer(head[:2 * KIB]), rounds),
        "magic_64k": magic_64k,
        "check": check,
        "check_overhead_ms": round(check["p50_ms"] - magic_64k["p50_ms"], 3),
    }


def _row(case: dict, want_accepted: bool) -> list[str]:
    outcome = "accepted" if case["accepted"] else "refused " + ",".join(case["reasons"])
    ok = (case["accepted"] == want_accepted and case["bytes_read"] <= GOAL_BYTES
          and case["check_overhead_ms"] < GOAL_OVERHEAD_MS)
    goal = ("accepted" if want_accepted else "refused") + f", <= 64 KiB, +< {GOAL_OVERHEAD_MS:g} ms"
    detected = case["detected_type"] or "-"
    if len(detected) > 28:
        detected = "..." + detected[-25:]
    return [case["label"], fmt_bytes(case["size"]), outcome, detected,
            fmt_bytes(case["bytes_read"]), fmt_bytes(case["client_pulled_median"]),
            fmt_ms(case["latency"]["p50_ms"]), fmt_ms(case["latency"]["p99_ms"]),
            fmt_ms(case["check"]["p50_ms"]), fmt_ms(case["magic_2k"]["p50_ms"]),
            fmt_ms(case["magic_64k"]["p50_ms"]), fmt_ms(case["check_overhead_ms"]), goal, met(ok)]


def run(workdir: Path, quick: bool) -> list[Section]:
    size = (8 if quick else 50) * MIB
    rounds = 5 if quick else 20
    files = workdir / "validator"
    samples = workdir / "samples"
    files.mkdir(exist_ok=True)
    noise = os.urandom(MIB)
    mime_magic = magic.Magic(mime=True)
    cases, rows = [], []
    with Service("validator_service", "VALIDATOR_ADDR", SERVICE_NAME, workdir / "validator.log") as svc:
        stub = validator_pb2_grpc.ValidatorStub(svc.channel)
        for ext in ALLOWED_EXTENSIONS:
            head = make_sample(ext, samples).read_bytes()
            path = write_padded(ext, head, files / f"big.{ext}", size, noise)
            cases.append(_case(stub, path, f"big.{ext}", rounds, mime_magic))
            rows.append(_row(cases[-1], want_accepted=True))
            path.unlink()  # 50 MiB each: keep at most one on disk
        path = write_padded("exe", PE_HEAD, files / "renamed.jpg", size, bytes(MIB))
        cases.append(_case(stub, path, "renamed.jpg (a PE .exe)", rounds, mime_magic))
        rows.append(_row(cases[-1], want_accepted=False))
        path.unlink()

    main = Section(
        f"Validator: {fmt_bytes(size)} uploads in {CHUNK_SIZE // KIB} KiB chunks, "
        f"subprocess server, {rounds} runs each",
        ["file", "size", "verdict", "detected", "bytes_read", "client sent", "stream p50", "stream p99",
         "Check p50", "magic 2K", "magic 64K", "overhead", "goal", "met"],
        rows,
        notes=["client sent: bytes gRPC pulled from the client's iterator before the verdict "
               "(median; flow-control windows let it run ahead of bytes_read)",
               "stream: Validate fed the whole file in chunks (a multipart upload that arrives in pieces), ms",
               "Check: one unary call with the first 64 KiB (one-piece uploads and tus, the usual path), ms",
               "magic 2K/64K: libmagic from_buffer on that file's head alone, in-process, p50 ms",
               "overhead: Check p50 minus magic 64K p50, ms (gRPC, the other rules, the image header)"],
        data={"file_size": size, "rounds": rounds, "cases": cases},
    )
    return [main, _from_file(workdir, quick, rounds, noise, mime_magic), magic_cost.run(quick)]


def _from_file(workdir: Path, quick: bool, rounds: int, noise: bytes, mime_magic) -> Section:
    """libmagic on a whole big file: what reading only the head saves."""
    size = (16 if quick else 64) * MIB
    rows, data = [], []
    for ext in ("txt", "jpg", "zip"):
        head = make_sample(ext, workdir / "samples").read_bytes()
        path = write_padded(ext, head, workdir / "validator" / f"whole.{ext}", size, noise)
        stats = time_magic(lambda: mime_magic.from_file(str(path)), max(3, rounds // 2))
        mime = mime_magic.from_file(str(path))
        data.append({"file": path.name, "size": size, "mime": mime, **stats})
        rows.append([f"from_file {path.name}", fmt_bytes(size), mime,
                     fmt_ms(stats["p50_ms"]), fmt_ms(stats["p99_ms"])])
        path.unlink()
    return Section("libmagic anchor: magic.from_file on a whole file (in-process)",
                   ["call", "size", "mime", "p50 ms", "p99 ms"], rows, data={"from_file": data})

"""Coverage-guided fuzzing (atheris, libFuzzer) of the validator's rule pipeline.

Each input is a file name, a declared size, a way of cutting the bytes into
messages and the bytes themselves, fed through ValidatorServicer.Validate
exactly as a gRPC call would (first message the info, then chunks, maybe an
`end`), with the built-in rules, libmagic and the image header parser.

What may come out: a Verdict (accepted or refused: refusals are data), or an
abort with a client error (INVALID_ARGUMENT for a broken stream...). A
crash is anything else: an exception in a rule (the servicer turns it into
INTERNAL; this re-raises the original), or a Verdict that breaks its own
invariants (an accepted file with a reason, an image over the limit...).

    make fuzz                       # FUZZ_SECONDS=60 by default
    python fuzz/validator_pipeline.py -max_total_time=60 CORPUS_DIR SEED_DIR
    python fuzz/validator_pipeline.py --make-seeds DIR   # seed corpus from tests/samples.py
    python fuzz/validator_pipeline.py crash-<sha1>       # replay one input

Input layout: CONTROL_BYTES bytes that pick the name, sizes and chunking (see
Control), then the file's bytes; all-zero control bytes are an ordinary call
(exact declared size, 64 KiB chunks, no `end`), so a seed is the name's byte,
six zero bytes and a genuine file.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402

# The image rule reads headers itself (rules/imageheader.py); Pillow only makes the seeds.
with atheris.instrument_imports(include=["validator_service"]):
    import importlib

    from validator_service.config import Settings
    from validator_service.rules import DEFAULT_PLUGINS

    for _rule in DEFAULT_PLUGINS:  # the rules too (create_plugins would import them later, uninstrumented)
        importlib.import_module(_rule)
    from validator_service.fileview import extension_of
    from validator_service.policy import build_policy
    from validator_service.server import create_plugins
    from validator_service.servicer import ValidatorServicer

import grpc  # noqa: E402
from PIL import Image  # noqa: E402

from protos.streaming import file_info  # noqa: E402
from protos.upload.v1 import validator_pb2  # noqa: E402

CONTROL_BYTES = 7

# Every built-in extension, in upper case too, and a few the policy refuses.
EXTENSIONS = ("jpg", "jpeg", "png", "gif", "webp", "svg", "pdf", "doc", "docx", "txt", "csv", "zip", "rar",
              "7z", "tar", "gz", "PNG", "JPG", "Txt", "exe", "html", "", "tar.gz", "png.exe", "exe.png")
ODD_NAMES = ("", " ", ".", "..", ".png", "a.", "a.png.", "a.png ", "dir/a.png", "dir\\a.jpg", "a/", "ж.PNG",
             "\u202egnp.exe", "a.p\u0000ng", "a.\u00b2", "a." + "x" * 40, "C:\\x\\..\\b.gif", "  .jpg")
REASON_CODES = {"extension_not_allowed", "content_mismatch", "executable_content", "file_too_large",
                "empty_file", "corrupt_image", "pixel_flood", "image_too_large", "image_header_out_of_reach"}

PM = create_plugins(env={})
# The defaults, and a tight configuration where the head and the limits are small.
SETTINGS = (Settings(), Settings(max_file_size=4096, max_image_dimension=64, max_head=2048))
SERVICERS = [ValidatorServicer(PM, build_policy(PM, s), s) for s in SETTINGS]


class Aborted(Exception):
    def __init__(self, code, details):
        super().__init__(f"{code}: {details}")
        self.code = code


class Context:
    """What the servicer uses of grpc.ServicerContext: abort, which raises like gRPC's."""

    def abort(self, code, details):
        raise Aborted(code, details)


class _Failures(logging.Handler):
    """Keeps the exception the servicer logs before it answers INTERNAL."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.exc_info = None

    def emit(self, record):
        if record.exc_info:
            self.exc_info = record.exc_info


FAILURES = _Failures()
_log = logging.getLogger("upload.validator")
_log.addHandler(FAILURES)
_log.propagate = False


class Control:
    """The first CONTROL_BYTES bytes of an input, read as the call's shape."""

    def __init__(self, data: bytes):
        c = data[:CONTROL_BYTES].ljust(CONTROL_BYTES, b"\0")
        choice = c[0]
        if choice < len(EXTENSIONS) * 8:
            ext = EXTENSIONS[choice % len(EXTENSIONS)]
            self.name = f"sample.{ext}" if ext else "sample"
        else:
            self.name = ODD_NAMES[choice % len(ODD_NAMES)]
        self.tight = c[1] % 4 == 3
        self.size_mode = c[2] % 8
        self.delta = 1 + int.from_bytes(c[3:5], "little")
        self.chunk = 1 << (16 - c[5] % 17)
        self.end_mode = c[6] % 8


def messages(control: Control, content: bytes):
    """The request stream: info, the content in chunks, maybe an `end`, maybe something out of place."""
    name, delta = control.name, control.delta
    declared = {0: len(content), 1: None, 2: max(0, len(content) - delta), 3: len(content) + delta,
                4: 0, 5: 1 << 40, 6: -delta, 7: None}[control.size_mode]
    yield validator_pb2.ValidateRequest(info=file_info(name, declared))
    chunk = control.chunk
    sent = 0
    for start in range(0, len(content), chunk):
        piece = content[start:start + chunk]
        sent += len(piece)
        yield validator_pb2.ValidateRequest(chunk=piece)
    end_mode = control.end_mode
    if end_mode == 1:
        yield validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=sent))
    elif end_mode == 2:  # the caller stopped sending early: the file is longer
        yield validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=sent + delta))
    elif end_mode == 3:  # an end smaller than what was sent
        yield validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=max(0, sent - delta)))
    elif end_mode == 4:  # something after the end
        yield validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=sent))
        yield validator_pb2.ValidateRequest(chunk=b"x")
    elif end_mode == 5:  # a second info
        yield validator_pb2.ValidateRequest(info=file_info(name, declared))
    elif end_mode == 6:  # an empty message (no part set)
        yield validator_pb2.ValidateRequest()


def check(verdict, name: str, settings: Settings, sent: int) -> None:
    """What every Verdict must hold, whatever the bytes were."""
    reasons = list(verdict.reasons)
    decisions = list(verdict.decisions)
    assert verdict.extension == extension_of(name), (verdict.extension, name)
    assert 0 <= verdict.bytes_read <= sent, (verdict.bytes_read, sent)
    assert decisions, "no rule decided"
    assert all(d.outcome == "pass" for d in decisions[:-1]), decisions
    if verdict.accepted:
        assert not reasons and decisions[-1].outcome == "pass", verdict
        assert verdict.extension, "a file without an extension was accepted"
        if verdict.is_image:
            assert 0 < verdict.width <= settings.max_image_dimension, verdict.width
            assert 0 < verdict.height <= settings.max_image_dimension, verdict.height
    else:
        assert len(reasons) == 1 and decisions[-1].outcome == "reject", verdict
        assert reasons[0].code in REASON_CODES, reasons[0].code
        assert reasons[0].code == decisions[-1].code and reasons[0].rule == decisions[-1].rule
        assert reasons[0].message.strip(), "a refusal without a message"
        assert not verdict.is_image


def TestOneInput(data: bytes) -> None:
    control = Control(data)
    content = data[CONTROL_BYTES:]
    servicer = SERVICERS[1 if control.tight else 0]
    requests = list(messages(control, content))
    FAILURES.exc_info = None
    try:
        verdict = servicer.Validate(iter(requests), Context())
    except Aborted as aborted:
        if aborted.code == grpc.StatusCode.INTERNAL:
            if FAILURES.exc_info is not None:
                raise FAILURES.exc_info[1].with_traceback(FAILURES.exc_info[2])
            raise
        return  # a broken call, refused as one (INVALID_ARGUMENT...)
    check(verdict, control.name, servicer.settings, len(content))


def make_seeds(directory: str) -> None:
    """One seed per sample type (tests/samples.py), a few image edge cases, and the fixtures."""
    from tests.images import encode, png_header_only
    from tests.samples import ALLOWED_EXTENSIONS, ELF_HEADER, MZ_HEADER, make_sample

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".samples"
    control = bytes(CONTROL_BYTES)

    def seed(label: str, ext: str, body: bytes) -> None:
        # Control byte 0 picks the name: the index of the extension in EXTENSIONS.
        head = bytes([EXTENSIONS.index(ext)]) + control[1:]
        (out / f"seed-{label}").write_bytes(head + body)

    for ext in ALLOWED_EXTENSIONS:
        seed(ext, ext, make_sample(ext, work).read_bytes())
    seed("rar4", "rar", (ROOT / "tests" / "fixtures" / "sample-rar4.rar").read_bytes())
    seed("png-flood", "png", png_header_only(60000, 60000))
    seed("png-wide", "png", png_header_only(6000, 10))
    seed("gif-tiny", "gif", encode(Image.new("P", (1, 1)), "GIF"))
    seed("exe-as-jpg", "jpg", MZ_HEADER)
    seed("elf-as-png", "png", ELF_HEADER)
    for sample in work.iterdir():
        sample.unlink()
    work.rmdir()
    print(f"{len(list(out.iterdir()))} seeds in {out}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--make-seeds":
        make_seeds(sys.argv[2])
        return
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

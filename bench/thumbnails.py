"""Thumbnail latency: the gRPC service (transfer included) against pyvips on
the same files in the same run, with the service's own Pillow code timed
in-process to split transport from decoding."""
from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pyvips

from bench.common import Section, Service, fmt_bytes, fmt_ms, met, summary_ms
from bench.images import write_jpeg, write_png
from protos.streaming import file_info, read_chunks, render_requests
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc
from thumbnail_service.isolation import encode
from thumbnail_service.renderers import render_raster

SERVICE_NAME = thumbnail_pb2.DESCRIPTOR.services_by_name["Thumbnail"].full_name
BOX = 200
GOAL_RATIO = 1.2

# 12 MP, 24 MP JPEG and 12 MP PNG; --quick halves each side.
IMAGES = (
    (write_jpeg, 4000, 3000, "image/jpeg"),
    (write_jpeg, 6000, 4000, "image/jpeg"),
    (write_png, 4000, 3000, "image/png"),
)


def render_via_service(stub, path: Path, mime: str) -> thumbnail_pb2.ThumbnailImage:
    options = thumbnail_pb2.RenderOptions(info=file_info(path.name, path.stat().st_size), mime_type=mime)
    with open(path, "rb") as f:
        return stub.Render(render_requests(options, read_chunks(f)), timeout=120)


def transfer_only(stub, path: Path, mime: str) -> None:
    """Random bytes of the photo's size: the service spools them all, then
    refuses them at Image.open, so this is the call's transport share."""
    try:
        render_via_service(stub, path, mime)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise


def render_pyvips(path: Path) -> bytes:
    # Same output as the service: a JPEG at quality 85 with optimised Huffman tables.
    return pyvips.Image.thumbnail(str(path), BOX).write_to_buffer(".jpg[Q=85,optimize_coding]")


def render_in_process(path: Path) -> bytes:
    with open(path, "rb") as f:
        return encode(render_raster(f, (BOX, BOX)))[0]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(workdir: Path, quick: bool) -> list[Section]:
    rounds = 5 if quick else 20
    scale = 2 if quick else 1
    # The operation cache would hand back the previous round's thumbnail.
    pyvips.cache_set_max(0)
    images, noise = [], {}
    for writer, w, h, mime in IMAGES:
        w, h, kind = w // scale, h // scale, mime.split("/")[1]
        path = writer(workdir / f"photo_{w}x{h}.{kind}", w, h)
        images.append((f"{w * h / 1e6:.0f} MP {kind.upper()} {w}x{h}", path, mime))
        noise[path] = workdir / f"noise_{path.stat().st_size}.bin"
        noise[path].write_bytes(os.urandom(path.stat().st_size))

    contenders = ("service", "transfer", "in_process", "pyvips")
    times = {label: {c: [] for c in contenders} for label, _, _ in images}
    with Service("thumbnail_service", "THUMBNAIL_ADDR", SERVICE_NAME, workdir / "thumbnail.log") as svc:
        stub = thumbnail_pb2_grpc.ThumbnailStub(svc.channel)
        calls = {
            "service": lambda path, mime: render_via_service(stub, path, mime),
            "transfer": lambda path, mime: transfer_only(stub, noise[path], mime),
            "in_process": lambda path, mime: render_in_process(path),
            "pyvips": lambda path, mime: render_pyvips(path),
        }
        outputs = {label: calls["service"](path, mime) for label, path, mime in images}  # warm-up
        for label, path, mime in images:
            calls["transfer"](path, mime)
            calls["pyvips"](path, mime)
        for i in range(rounds):
            # Alternate the order so neither side always runs on a warmer cache.
            order = contenders if i % 2 == 0 else contenders[::-1]
            for label, path, mime in images:
                for name in order:
                    times[label][name].append(_timed(lambda: calls[name](path, mime)))

    rows, data = [], []
    for label, path, mime in images:
        stats = {name: summary_ms(times[label][name]) for name in contenders}
        ratio = stats["service"]["p50_ms"] / stats["pyvips"]["p50_ms"]
        is_jpeg = mime == "image/jpeg"
        out = outputs[label]
        data.append({"image": label, "path_size": path.stat().st_size, "mime": mime,
                     "thumbnail": [out.width, out.height, out.mime_type, len(out.data)],
                     "ratio_p50": round(ratio, 3), **stats})
        rows.append([label, fmt_bytes(path.stat().st_size),
                     fmt_ms(stats["service"]["p50_ms"]), fmt_ms(stats["service"]["p99_ms"]),
                     fmt_ms(stats["transfer"]["p50_ms"]),
                     fmt_ms(stats["in_process"]["p50_ms"]),
                     fmt_ms(stats["pyvips"]["p50_ms"]), fmt_ms(stats["pyvips"]["p99_ms"]),
                     f"{ratio:.2f}x", f"<= {GOAL_RATIO}x" if is_jpeg else "-",
                     met(ratio <= GOAL_RATIO if is_jpeg else None)])
    return [Section(
        f"Thumbnails to {BOX}px: gRPC service (subprocess, transfer included) vs pyvips, {rounds} rounds",
        ["image", "file", "service p50", "service p99", "transfer p50", "Pillow in-proc p50", "pyvips p50",
         "pyvips p99", "ratio p50", "goal", "met"],
        rows,
        notes=["ms; transfer: the same number of random bytes through Render (spooled, then refused)",
               "Pillow in-proc: the service's render_raster + encode on the file, no gRPC",
               "pyvips: pyvips.Image.thumbnail(path, 200) -> .jpg buffer (Q=85), in-process, "
               f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} threads on all cores"],
        data={"rounds": rounds, "box": BOX, "images": data},
    )]

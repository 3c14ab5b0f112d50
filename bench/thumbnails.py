"""Thumbnail latency: the gRPC service (transfer included) against pyvips on
the same files in the same run, with the service's own Pillow code timed
in-process to split transport from decoding."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import grpc
import pyvips

from bench.common import Section, Service, fmt_bytes, fmt_ms, met, summary_ms
from bench.images import write_jpeg, write_png
from protos.streaming import file_info, read_chunks, render_requests, transform_requests
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc
from thumbnail_service.isolation import encode
from thumbnail_service.metadata import strip_jpeg
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

    return [_thumbnail_section(rounds, images, times, outputs, contenders), strip_section(workdir, quick)]


def _thumbnail_section(rounds, images, times, outputs, contenders) -> Section:
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
    return Section(
        f"Thumbnails to {BOX}px: gRPC service (subprocess, transfer included) vs pyvips, {rounds} rounds",
        ["image", "file", "service p50", "service p99", "transfer p50", "Pillow in-proc p50", "pyvips p50",
         "pyvips p99", "ratio p50", "goal", "met"],
        rows,
        notes=["ms; transfer: the same number of random bytes through Render (spooled, then refused)",
               "Pillow in-proc: the service's render_raster + encode on the file, no gRPC",
               "pyvips: pyvips.Image.thumbnail(path, 200) -> .jpg buffer (Q=85), in-process, "
               f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} threads on all cores"],
        data={"rounds": rounds, "box": BOX, "images": data},
    )


def _jpeg_with_gps(path: Path, width: int, height: int) -> Path:
    from bench.images import photo_like
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Bench Camera"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 29.0), "E", (2.0, 17.0, 40.0)
    photo_like(width, height).save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path


def strip_section(workdir: Path, quick: bool) -> Section:
    """The cost of IMAGE_METADATA=strip-location on a 12 MP JPEG: the shipped
    transform in-process and through the service (the bytes go there and back),
    against what a user would do instead: re-save with Pillow (re-encodes: lossy,
    and the cost of a decode and an encode) or exiftool (lossless, a program)."""
    rounds = 5 if quick else 20
    scale = 2 if quick else 1
    w, h = 4000 // scale, 3000 // scale
    path = _jpeg_with_gps(workdir / f"gps_{w}x{h}.jpg", w, h)
    data = path.read_bytes()

    def via_service(stub):
        options = thumbnail_pb2.TransformOptions(info=file_info(path.name, len(data)), mime_type="image/jpeg",
                                                 parameters={"image_metadata": "strip-location"})
        replies = list(stub.Transform(transform_requests(options, read_chunks(io.BytesIO(data), 1 << 20)),
                                      timeout=120))
        assert replies[0].result.changed

    def pillow_resave():
        from PIL import Image
        im = Image.open(io.BytesIO(data))
        exif = im.getexif()
        exif.get_ifd(0x8825).clear()
        del exif[0x8825]
        im.save(io.BytesIO(), "JPEG", quality=95, exif=exif.tobytes())

    exiftool = shutil.which("exiftool")

    def run_exiftool():
        copy = workdir / "exiftool.jpg"
        copy.write_bytes(data)
        subprocess.run([exiftool, "-q", "-overwrite_original", "-gps:all=", "-xmp:gps*=", str(copy)], check=True)

    contenders = {"in-process": lambda: strip_jpeg(data, "strip-location")}
    times: dict[str, list[float]] = {}
    with Service("thumbnail_service", "THUMBNAIL_ADDR", SERVICE_NAME, workdir / "thumbnail-strip.log") as svc:
        stub = thumbnail_pb2_grpc.ThumbnailStub(svc.channel)
        contenders["service (transfer both ways)"] = lambda: via_service(stub)
        contenders["Pillow re-save (q95, lossy)"] = pillow_resave
        if exiftool:
            contenders["exiftool -gps:all="] = run_exiftool
        for fn in contenders.values():
            fn()  # warm-up
        for i in range(rounds):
            for name, fn in contenders.items():
                times.setdefault(name, []).append(_timed(fn))
    rows, out = [], []
    for name, samples in times.items():
        stats = summary_ms(samples)
        mb_s = len(data) / 1e6 / (stats["p50_ms"] / 1000)
        rows.append([name, fmt_ms(stats["p50_ms"]), fmt_ms(stats["p99_ms"]), f"{mb_s:,.0f}"])
        out.append({"contender": name, "mb_per_s": round(mb_s, 1), **stats})
    return Section(
        f"Stripping image metadata (location) from a {w * h / 1e6:.0f} MP JPEG ({fmt_bytes(len(data))}), "
        f"{rounds} rounds",
        ["contender", "p50", "p99", "MB/s p50"],
        rows,
        notes=["ms; in-process: thumbnail_service.metadata.strip_jpeg (container edit, pixels untouched)",
               "service: Thumbnail.Transform with the file sent and the new one received, render child included",
               "Pillow re-save: decode + encode at quality 95, the GPS IFD removed (what a script would do; lossy)"]
              + ([] if exiftool else ["exiftool: not installed here, so not measured"]),
        data={"rounds": rounds, "size": len(data), "results": out},
    )

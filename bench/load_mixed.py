"""A burst of concurrent uploads of mixed sizes and kinds (text, tar of
random bytes, real JPEG and PNG photos) through the real gateway, validator
and thumbnail services; every stored file is then checked against what was
sent, by the sha256 in its 201 and by downloading it back.

Clients are stdlib http.client in threads (one connection each, all released
at once by a barrier), streaming each file from disk with sendfile so that
200 Python threads can feed the gateway without becoming the bottleneck."""
from __future__ import annotations

import hashlib
import http.client
import io
import json
import math
import os
import random
import secrets
import tarfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.common import KIB, MIB, Section, met, percentile
from bench.images import write_jpeg, write_png
from bench.upload import HttpServer
from tests.samples import TEXT

# Generous: with GATEWAY_THREADS=16 most of the burst waits its turn, sending
# nothing meanwhile; a stuck upload must fail the run, not hang it.
CLIENT_TIMEOUT = 120.0
MB = 1_000_000
IMAGE_EVERY = 6  # one upload in six is a photo


@dataclass
class Upload:
    path: Path
    content_type: str
    size: int
    sha256: str
    is_image: bool


def _done(path: Path, content_type: str, is_image: bool = False) -> Upload:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return Upload(path, content_type, path.stat().st_size, digest, is_image)


def _text(path: Path, size: int, n: int) -> Upload:
    # A line of its own first: no two uploads have the same bytes.
    block = (f"upload {n}\n" + TEXT * 4000).encode()[:size]
    with open(path, "wb") as out:
        out.write(block)
        left = size - len(block)
        while left > 0:
            left -= out.write(block[:left])
    return _done(path, "text/plain")


def _tar(path: Path, size: int) -> Upload:
    # Random bytes: incompressible binary content the validator knows as a tar.
    data = os.urandom(max(size - 3 * 512, 1))
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return _done(path, "application/x-tar")


def make_uploads(folder: Path, count: int, largest: int, quick: bool) -> list[Upload]:
    """Sizes log-uniform between 10 KiB and ``largest`` (as many 20 KiB files as
    10 MiB ones within a factor of two), seeded so every run sends the same mix."""
    folder.mkdir(exist_ok=True)
    # (width, height, format): 1, 3 MP in quick (under 4 MiB), 1-12 MP in full.
    shapes = ([(1155, 866, "jpg"), (2000, 1500, "jpg"), (1155, 866, "png")] if quick else
              [(1155, 866, "jpg"), (2309, 1732, "jpg"), (4000, 3000, "jpg"), (1155, 866, "png"),
               (1633, 1225, "png")])
    images = []
    for w, h, fmt in shapes:
        path = folder / f"photo-{w}x{h}.{fmt}"
        (write_jpeg if fmt == "jpg" else write_png)(path, w, h)
        images.append(_done(path, "image/jpeg" if fmt == "jpg" else "image/png", is_image=True))
    rng = random.Random(7)
    uploads = []
    for n in range(count):
        if n % IMAGE_EVERY == IMAGE_EVERY - 1:
            uploads.append(images[(n // IMAGE_EVERY) % len(images)])
            continue
        size = int(math.exp(rng.uniform(math.log(10 * KIB), math.log(largest))))
        uploads.append(_text(folder / f"doc-{n}.txt", size, n) if n % 2 else _tar(folder / f"data-{n}.tar", size))
    return uploads


def post(port: int, up: Upload, barrier: threading.Barrier) -> dict:
    """POST one file as multipart: seconds from connecting to the answer read,
    the status (None: the connection failed) and the record."""
    boundary = "----bench" + secrets.token_hex(12)
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{up.path.name}"\r\n'
            f"Content-Type: {up.content_type}\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    barrier.wait()
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    result = {"file": up.path.name, "size": up.size, "status": None, "start": start}
    try:
        conn.putrequest("POST", "/upload")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(len(head) + up.size + len(tail)))
        conn.endheaders(head)
        try:
            with open(up.path, "rb") as f:
                conn.sock.sendfile(f)
            conn.send(tail)
        except OSError as e:  # an early answer closes the connection: read it below
            result["send_error"] = repr(e)
        reply = conn.getresponse()
        body = reply.read()
        result["status"] = reply.status
        result["record"] = json.loads(body) if reply.status == 201 else body[:200].decode(errors="replace")
    except (OSError, http.client.HTTPException, ValueError) as e:
        result["error"] = repr(e)
    finally:
        conn.close()
    result["end"] = time.perf_counter()
    result["seconds"] = result["end"] - start
    return result


def downloaded_sha256(port: int, url: str) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request("GET", url)
        reply = conn.getresponse()
        if reply.status != 200:
            return None
        digest = hashlib.sha256()
        while piece := reply.read(256 * KIB):
            digest.update(piece)
        return digest.hexdigest()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def run(workdir: Path, gateway: HttpServer, threads: int, quick: bool) -> Section:
    count, largest = (40, 4 * MIB) if quick else (200, 20 * MIB)
    uploads = make_uploads(workdir / "mixed", count, largest, quick)
    barrier = threading.Barrier(count)
    results: list[dict] = [{} for _ in uploads]

    def one(i: int) -> None:
        results[i] = post(gateway.port, uploads[i], barrier)

    os.sync()
    clients = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)

    stored = [(up, r) for up, r in zip(uploads, results) if r["status"] == 201]
    statuses = Counter(str(r["status"] or "failed") for r in results)
    errors = count - len(stored)
    hashed = sum(r["record"].get("sha256") == up.sha256 for up, r in stored)
    # Downloads are not part of the timed burst: a few at a time, after it.
    with ThreadPoolExecutor(4) as pool:
        back = list(pool.map(lambda p: downloaded_sha256(gateway.port, p[1]["record"]["download_url"]), stored))
    matched = sum(got == up.sha256 for got, (up, _) in zip(back, stored))
    images = [r for up, r in stored if up.is_image]
    thumbs = sum(bool(r["record"].get("thumbnail_url")) for r in images)
    seconds = [r["seconds"] for r in results]
    total = sum(up.size for up in uploads)
    status_text = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
    failures = [r.get("error") or r.get("record") for r in results if r["status"] != 201][:3]
    rows = [
        ["uploads answered 201", f"{len(stored)} of {count}", "all", met(len(stored) == count)],
        ["errors (any other status, failed connections)", str(errors), "0", met(errors == 0)],
        ["sha256 in the 201 equals the bytes sent", f"{hashed} of {count}", "all", met(hashed == count)],
        ["sha256 of the file downloaded back equals them", f"{matched} of {count}", "all", met(matched == count)],
        ["latency p50 / p99, s", f"{percentile(seconds, 50):.2f} / {percentile(seconds, 99):.2f}", "-", "-"],
        ["whole burst: wall s, MB/s", f"{wall:.1f}, {total / MB / wall:.0f}", "-", "-"],
        ["images with a thumbnail in their 201", f"{thumbs} of {len(images)}", "-", "-"],
    ]
    sizes = sorted(up.size for up in uploads)
    return Section(
        f"Load, mixed: {count} concurrent uploads of 10 KiB-{largest // MIB} MiB through gateway, validator, "
        "thumbnail",
        ["figure", "result", "goal", "met"], rows,
        notes=[f"{count} http.client connections released at once; {total / MIB:.0f} MiB in all, median file "
               f"{percentile(sizes, 50) / MIB:.2f} MiB (text, tar of random bytes, one in {IMAGE_EVERY} a "
               f"{'1-3' if quick else '1-12'} MP JPEG or PNG)",
               f"same gateway as above: GATEWAY_THREADS={threads} serve at once, the rest wait their turn "
               "(their time counts in the latency); VALIDATOR_WORKERS and THUMBNAIL_WORKERS at their defaults",
               "latency: from connecting to the answer read; downloads (GET download_url) after the burst",
               f"statuses: {status_text}" + (f"; first failures: {failures}" if failures else "")],
        data={"count": count, "largest": largest, "total_bytes": total, "wall_s": round(wall, 2),
              "p50_s": round(percentile(seconds, 50), 3), "p99_s": round(percentile(seconds, 99), 3),
              "statuses": dict(statuses), "sha256_in_record_match": hashed, "download_match": matched,
              "images": len(images), "thumbnails": thumbs,
              "uploads": [{k: v for k, v in r.items() if k not in ("record", "start", "end")} for r in results]},
    )

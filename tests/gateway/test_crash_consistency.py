"""SIGKILL the gateway at random moments during 200 uploads (multipart and
tus, several clients at once), restart it each time, and check that nothing
acknowledged is lost, nothing listed is wrong, and nothing is left behind."""
from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import signal
import threading
import time

import pytest
import requests
from PIL import Image

from gateway.storage.local import LocalStorage
from tests.conftest import free_port, start_gateway_process

pytestmark = pytest.mark.timeout(300)

UPLOADS = 200
CLIENTS = 4
ORPHAN_AGE = 4.0  # well above the render time between placing bytes and writing their row
TUS = {"Tus-Resumable": "1.0.0"}


class Gateway:
    """The gateway process, killed and restarted on the same port and data."""

    def __init__(self, data_dir, validator, thumbnailer):
        self.data_dir, self.validator, self.thumbnailer = data_dir, validator, thumbnailer
        self.port = free_port()
        self.lock = threading.Lock()
        self.ready = threading.Event()  # clients start an upload only while it runs
        self.kills = 0
        self.proc = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # Reconcile runs while uploads are in flight (every RECONCILE_INTERVAL), and takes
        # what a killed request left once it is ORPHAN_AGE old: it must never take more.
        self.proc = start_gateway_process(self.data_dir, self.validator.address, self.thumbnailer.address,
                                          port=self.port, ORPHAN_AGE=ORPHAN_AGE, RECONCILE_INTERVAL=0.5,
                                          GATEWAY_THREADS=8).proc
        self.ready.set()

    def kill_and_restart(self) -> None:
        with self.lock:
            self.ready.clear()
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.kills += 1
            self.start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)


def payload(n: int) -> tuple[str, bytes]:
    """Text files of 1 KiB to 2 MiB, and every fifth a PNG (so thumbnails are made too)."""
    rng = random.Random(n)
    if n % 5 == 0:
        out = io.BytesIO()
        Image.new("RGB", (320, 240), (n % 256, rng.randrange(256), 90)).save(out, "PNG")
        return f"u{n:03d}.png", out.getvalue()
    size = rng.choice([1, 2, 8, 64, 512, 2048]) * 1024 + rng.randrange(1024)
    line = f"upload {n} ".encode()
    return f"u{n:03d}.txt", (line * (size // len(line) + 1))[:size]


# Names of uploads a kill cut off (a tus upload may be cut off and resumed several times).
INTERRUPTED: list[str] = []


def multipart(gateway: Gateway, name: str, data: bytes) -> str | None:
    try:
        response = requests.post(gateway.url + "/upload", files={"file": (name, data)}, timeout=20)
    except requests.RequestException:
        INTERRUPTED.append(name)
        return None
    return response.json()["id"] if response.status_code == 201 else None


def tus(gateway: Gateway, name: str, data: bytes) -> str | None:
    """Create, then PATCH in pieces; after a failure, HEAD and resume where the server says."""
    meta = "filename " + base64.b64encode(name.encode()).decode()
    location = None
    for _attempt in range(6):
        try:
            if location is None:
                created = requests.post(gateway.url + "/tus/", timeout=10, headers={
                    **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta})
                if created.status_code != 201:
                    return None
                location = created.headers["Location"]
            head = requests.head(gateway.url + location, headers=TUS, timeout=10)
            if head.status_code != 200:
                return None
            if head.headers.get("Upload-File-Id"):
                return head.headers["Upload-File-Id"]
            offset = int(head.headers["Upload-Offset"])
            while offset < len(data):
                piece = data[offset:offset + 256 * 1024]
                answer = requests.patch(gateway.url + location, data=piece, timeout=10, headers={
                    **TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
                if answer.status_code != 204:
                    raise requests.ConnectionError(f"PATCH answered {answer.status_code}")
                offset = int(answer.headers["Upload-Offset"])
                if answer.headers.get("Upload-File-Id"):
                    return answer.headers["Upload-File-Id"]
        except requests.RequestException:
            INTERRUPTED.append(name)
            time.sleep(0.3)  # the gateway is being restarted
    return None


def test_sigkill_during_uploads_loses_nothing_acknowledged_and_leaves_nothing(tmp_path, validator, thumbnailer):
    data_dir = tmp_path / "data"
    gateway = Gateway(data_dir, validator, thumbnailer)
    acknowledged: dict[str, tuple[str, str]] = {}  # file id -> (name, sha256 the client sent)
    attempts = iter(range(UPLOADS))
    taken = threading.Lock()
    done = threading.Event()

    def client():
        while True:
            with taken:
                n = next(attempts, None)
            if n is None:
                return
            name, data = payload(n)
            gateway.ready.wait()
            file_id = (tus if n % 3 == 0 else multipart)(gateway, name, data)
            if file_id:
                acknowledged[file_id] = (name, hashlib.sha256(data).hexdigest())

    def killer():
        rng = random.Random(7)
        while not done.wait(rng.uniform(0.05, 0.4)):  # of uptime: uploads are in flight
            gateway.kill_and_restart()

    clients = [threading.Thread(target=client) for _ in range(CLIENTS)]
    chaos = threading.Thread(target=killer)
    try:
        chaos.start()
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        done.set()
        chaos.join()
        time.sleep(ORPHAN_AGE + 0.2)  # what the last kills left is old enough to be taken
        gateway.kill_and_restart()  # one last crash; the restart reconciles

        assert gateway.kills >= 10
        assert INTERRUPTED, "the kills should cut some uploads off mid-way"
        assert len(acknowledged) >= UPLOADS // 3, "most uploads should get through between kills"
        listed = {}
        url = "/files?limit=200"
        while url:
            page = requests.get(gateway.url + url, timeout=10).json()
            listed.update({r["id"]: r for r in page["files"]})
            url = f"/files?limit=200&cursor={page['next_cursor']}" if page["next_cursor"] else None

        # Nothing acknowledged is lost, and it is exactly what the client sent.
        for file_id, (name, digest) in acknowledged.items():
            assert file_id in listed, f"{name} was acknowledged, then lost"
            assert listed[file_id]["sha256"] == digest, name
        # Every listed file's bytes match its sha256 (acknowledged or not).
        for record in listed.values():
            body = requests.get(gateway.url + record["download_url"], timeout=10).content
            assert hashlib.sha256(body).hexdigest() == record["sha256"], record["original_name"]

        # Nothing left behind: no temp files, no bytes without a record, no record without bytes;
        # only unfinished tus uploads keep partial bytes (they can still be resumed).
        entries = list(LocalStorage(data_dir).entries("files"))
        assert [e.filename for e in entries if e.kind == "temp"] == []
        stored = {e.filename for e in entries if e.kind == "stored"}
        assert stored == {r["filename"] for r in listed.values()}
        thumbs = list(LocalStorage(data_dir).entries("thumbnails"))
        assert [e.filename for e in thumbs if e.kind == "temp"] == []
        # Every thumbnail on disk belongs to a listed file (the retry may add one meanwhile,
        # hence the second listing), and every thumbnail a record names is there.
        named_before = {r["thumbnail_url"].rsplit("/", 1)[1] for r in listed.values() if r["thumbnail_url"]}
        on_disk = {e.filename for e in thumbs if e.kind == "stored"}
        after = requests.get(gateway.url + "/files?limit=200", timeout=10).json()["files"]
        named_after = {r["thumbnail_url"].rsplit("/", 1)[1] for r in after if r["thumbnail_url"]}
        assert named_before <= on_disk <= named_after | named_before
        assert any(r["is_image"] for r in listed.values())
    finally:
        done.set()
        gateway.stop()

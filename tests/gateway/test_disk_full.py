"""A full disk, for real: the gateway's DATA_DIR is a tmpfs of a few MiB.

The tmpfs is mounted in a mount namespace of the gateway's own
(`unshare --user --map-root-user --mount`, which needs no root on a Linux with
user namespaces), or, failing that and running as root, mounted here and
unmounted afterwards. The test reads the gateway's files through
/proc/<pid>/root, which shows them whichever way the tmpfs was mounted.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.conftest import free_port
from tests.images import encode
from tests.processes import ROOT

MiB = 1024 * 1024
PAGE = 4096
TUS = {"Tus-Resumable": "1.0.0"}


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


class TmpfsGateway:
    """`python -m gateway` whose DATA_DIR is a fresh tmpfs of ``size`` bytes."""

    def __init__(self, data_dir: Path, size: int, validator_addr: str, thumbnail_addr: str, **env):
        data_dir.mkdir(parents=True)
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "GATEWAY_PORT": str(self.port), "DATA_DIR": str(data_dir),
                    "VALIDATOR_ADDR": validator_addr, "THUMBNAIL_ADDR": thumbnail_addr,
                    "THUMBNAIL_RETRY_INTERVAL": "0.5", "PYTHON": sys.executable,
                    **{k: str(v) for k, v in env.items()}}
        mount = f'mount -t tmpfs -o size={size} tmpfs "$DATA_DIR"'
        self.mounted_here = False
        if _unshare_works():
            command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                       f'{mount} && exec "$PYTHON" -m gateway']
        elif os.geteuid() == 0:
            subprocess.run(["sh", "-c", mount], env=full_env, check=True)
            self.mounted_here = True
            command = [sys.executable, "-m", "gateway"]
        else:
            pytest.skip("needs user namespaces (unshare --user --map-root-user) or root to mount a tmpfs")
        self.proc = subprocess.Popen(command, cwd=ROOT, env=full_env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/healthz", timeout=1)
                break
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("the gateway did not start: " + self.proc.stderr.read().decode()[-2000:])
                time.sleep(0.1)
        # The gateway's view of DATA_DIR, whichever mount namespace it is in.
        self.view = Path(f"/proc/{self.proc.pid}/root") / data_dir.relative_to("/")
        assert os.statvfs(self.view).f_blocks * os.statvfs(self.view).f_frsize == size

    def free(self) -> int:
        stat = os.statvfs(self.view)
        return stat.f_bavail * stat.f_frsize

    def files(self) -> list[str]:
        """Every file under DATA_DIR (hidden temp and tus files included), relative names."""
        return sorted(str(Path(d, f).relative_to(self.view)) for d, _, names in os.walk(self.view) for f in names)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()
        if self.mounted_here:
            subprocess.run(["umount", str(self.data_dir)], check=False)


@pytest.fixture
def tmpfs_gateway(tmp_path, validator, thumbnailer):
    started = []

    def start(size: int = 4 * MiB, **env) -> TmpfsGateway:
        gateway = TmpfsGateway(tmp_path / f"data{len(started)}", size, validator.address, thumbnailer.address,
                               **env)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.close()


def post(gateway, name: str, data: bytes) -> requests.Response:
    response = requests.post(f"{gateway.url}/upload", files={"file": (name, data)}, timeout=30)
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    return response


def text(size: int) -> bytes:
    line = b"the quick brown fox jumps over the lazy dog\n"
    return (line * (size // len(line) + 1))[:size]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pages(size: int) -> int:
    return -(-size // PAGE) * PAGE


def assert_full_disk_answer(response: requests.Response) -> None:
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert "storage space" in error and "nothing was stored" in error


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_a_full_disk_is_507_leaves_nothing_and_passes_once_there_is_room(tmpfs_gateway, tmp_path):
    # The database on another disk: the data disk filling up costs uploads, nothing else.
    gateway = tmpfs_gateway(DATABASE_URL=f"sqlite:///{tmp_path}/uploads.db", DISK_RESERVE=0)
    photo = encode(Image.effect_noise((320, 240), 40).convert("RGB"), "JPEG")
    kept = post(gateway, "kept.jpg", photo)
    assert kept.status_code == 201 and kept.json()["thumbnail_url"]

    filler = text(gateway.free() - 256 * 1024)
    big = post(gateway, "filler.txt", filler)
    assert big.status_code == 201
    before = gateway.files()

    # POST /upload: the next file does not fit.
    refused = post(gateway, "next.txt", text(1 * MiB))
    assert_full_disk_answer(refused)
    assert gateway.files() == before  # no temp file, no partial bytes
    listed = requests.get(f"{gateway.url}/files", timeout=10).json()["files"]
    assert sorted(r["original_name"] for r in listed) == ["filler.txt", "kept.jpg"]

    # Several files in one request: the one that fitted goes too.
    batch = requests.post(f"{gateway.url}/upload", files=[("file", ("small.txt", b"fits\n")),
                                                          ("file", ("large.txt", text(1 * MiB)))], timeout=30)
    assert_full_disk_answer(batch)
    assert gateway.files() == before

    # tus: a PATCH that does not fit stores nothing and the offset does not move.
    meta = "filename " + base64.b64encode(b"resumable.txt").decode()
    data = text(1 * MiB)
    created = requests.post(f"{gateway.url}/tus/", headers={**TUS, "Upload-Length": str(len(data)),
                                                            "Upload-Metadata": meta}, timeout=10)
    assert created.status_code == 201
    location = gateway.url + created.headers["Location"]
    patch_headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    patched = requests.patch(location, data=data, headers=patch_headers, timeout=30)
    assert_full_disk_answer(patched)
    head = requests.head(location, headers=TUS, timeout=10)
    assert head.headers["Upload-Offset"] == "0"
    partial = [name for name in gateway.files() if name.endswith(".part")]
    assert len(partial) == 1 and os.path.getsize(gateway.view / partial[0]) == 0

    # Downloads keep working.
    download = requests.get(gateway.url + kept.json()["download_url"], timeout=10)
    assert download.status_code == 200 and sha256(download.content) == kept.json()["sha256"] == sha256(photo)
    assert requests.get(gateway.url + kept.json()["thumbnail_url"], timeout=10).status_code == 200
    assert sha256(requests.get(gateway.url + big.json()["download_url"], timeout=30).content) == sha256(filler)

    # Room again: both ways of uploading work.
    assert requests.delete(f"{gateway.url}/files/{big.json()['id']}", timeout=10).status_code == 204
    again = post(gateway, "next.txt", text(1 * MiB))
    assert again.status_code == 201
    resumed = requests.patch(location, data=data, headers=patch_headers, timeout=30)
    assert resumed.status_code == 204 and resumed.headers["Upload-File-Id"]
    record = requests.get(f"{gateway.url}/files/{resumed.headers['Upload-File-Id']}", timeout=10).json()
    assert record["sha256"] == sha256(data)


def test_a_thumbnail_that_does_not_fit_is_made_once_there_is_room(tmpfs_gateway, tmp_path):
    gateway = tmpfs_gateway(DATABASE_URL=f"sqlite:///{tmp_path}/uploads.db", DISK_RESERVE=0)
    photo = encode(Image.effect_noise((640, 480), 60).convert("RGB"), "JPEG", quality=95)
    # Leave exactly room for the photo's own bytes, none for its thumbnail.
    filler = post(gateway, "filler.txt", text(gateway.free() - pages(len(photo))))
    assert filler.status_code == 201
    assert gateway.free() == pages(len(photo))

    response = post(gateway, "photo.jpg", photo)
    assert response.status_code == 201
    rec = response.json()
    assert rec["thumbnail_url"] is None
    assert sha256(requests.get(gateway.url + rec["download_url"], timeout=10).content) == sha256(photo)
    assert not [name for name in gateway.files() if name.startswith("thumbnails/")]  # no truncated one

    assert requests.delete(f"{gateway.url}/files/{filler.json()['id']}", timeout=10).status_code == 204
    url = wait_for(lambda: requests.get(f"{gateway.url}/files/{rec['id']}", timeout=10).json()["thumbnail_url"])
    thumb = requests.get(gateway.url + url, timeout=10)
    assert thumb.status_code == 200
    assert Image.open(io.BytesIO(thumb.content)).size == (200, 150)


def test_with_sqlite_on_the_data_disk_the_reserve_keeps_the_database_writable(tmpfs_gateway):
    # The default layout: uploads.db in DATA_DIR, beside the files. DISK_RESERVE
    # keeps uploads from taking the last bytes the database needs.
    gateway = tmpfs_gateway(DISK_RESERVE=1 * MiB)
    assert "uploads.db" in gateway.files()
    first = post(gateway, "first.txt", text(1 * MiB))
    assert first.status_code == 201

    # More than the disk has left above the reserve: refused, nothing kept.
    before = gateway.files()
    assert_full_disk_answer(post(gateway, "too-much.txt", text(gateway.free() - 512 * 1024)))
    assert gateway.files() == before

    filler = post(gateway, "filler.txt", text(gateway.free() - 1 * MiB - 256 * 1024))
    assert filler.status_code == 201
    assert_full_disk_answer(post(gateway, "next.txt", text(512 * 1024)))
    # The database still takes writes: a share of sessions, deletes, records.
    assert requests.get(f"{gateway.url}/files/{first.json()['id']}", timeout=10).status_code == 200
    assert requests.delete(f"{gateway.url}/files/{filler.json()['id']}", timeout=10).status_code == 204
    assert post(gateway, "next.txt", text(512 * 1024)).status_code == 201
    names = sorted(r["original_name"] for r in requests.get(f"{gateway.url}/files", timeout=10).json()["files"])
    assert names == ["first.txt", "next.txt"]

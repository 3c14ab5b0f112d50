"""Helpers for the tus tests: a thin raw-HTTP tus client, sample data, gateway processes.

Everything here follows the tus 1.0.0 protocol (https://tus.io/protocols/resumable-upload)
and the gateway's contract (`/tus/` endpoint, upload URLs `/tus/<32 lowercase hex>`).
"""
from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import os
import random
import re
import signal
import socket
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from gateway.serving.processes import BACKGROUND_LOCK
from tests.conftest import start_gateway_process

TUS_VERSION = "1.0.0"
OFFSET_STREAM = "application/offset+octet-stream"
UPLOAD_PATH = re.compile(r"^/tus/[0-9a-f]{32}$")
# RFC 7231 section 7.1.1.1: senders MUST generate the IMF-fixdate form.
IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT$")
KiB = 1024
MiB = 1024 * 1024

# What may stay in DATA_DIR once an upload is gone: the metadata database.
DB_FILE = re.compile(r"\.(db|sqlite|sqlite3)(-wal|-shm|-journal)?$")

WORDS = ("apple river stone cloud maple orbit lantern copper meadow violet harbor timber "
         "falcon quartz ember willow summit prairie glacier canyon").split()


@functools.lru_cache(maxsize=16)
def text_bytes(size: int, seed: int = 0) -> bytes:
    """`size` bytes of plain ASCII prose (numbered lines, no commas: libmagic says text/plain).

    Every line carries its number, so a byte in the wrong place changes the sha256."""
    rng = random.Random(seed)
    parts, total, n = [], 0, 0
    while total < size:
        line = f"{n:08d} " + " ".join(rng.choices(WORDS, k=12)) + ".\n"
        parts.append(line)
        total += len(line)
        n += 1
    return "".join(parts).encode("ascii")[:size]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def encode_metadata(metadata: dict) -> str:
    """`Upload-Metadata`: comma-separated `key base64(value)`; a None value is sent as the bare key."""
    pairs = []
    for key, value in metadata.items():
        pairs.append(key if value is None else f"{key} {b64(value)}")
    return ",".join(pairs)


def parse_metadata(header: str) -> dict:
    """The inverse of encode_metadata: {key: bytes or None}."""
    result = {}
    for pair in header.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, _, value = pair.partition(" ")
        result[key] = base64.b64decode(value, validate=True) if value else None
    return result


def upload_id(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def leftover_files(data_dir) -> list[str]:
    """Every file under data_dir except the SQLite databases (the records; rate-limit counters
    with several workers) and the background-work lock of a gateway with several workers."""
    found = []
    for directory, _, names in os.walk(data_dir):
        for name in names:
            if not DB_FILE.search(name) and name != BACKGROUND_LOCK:
                found.append(os.path.relpath(os.path.join(directory, name), data_dir))
    return sorted(found)


class Tus:
    """A raw tus 1.0.0 client over `requests`: every request is spelled out by the caller."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self.endpoint = self.base + "/tus/"
        self.http = requests.Session()

    def close(self):
        self.http.close()

    def url(self, location: str) -> str:
        """An upload URL made absolute (Location may be absolute or path-absolute)."""
        return urljoin(self.endpoint, location)

    @staticmethod
    def _headers(extra: dict | None, **base) -> dict:
        headers = {"Tus-Resumable": TUS_VERSION, **base}
        headers.update(extra or {})
        return {k: v for k, v in headers.items() if v is not None}

    def options(self, headers: dict | None = None, url: str | None = None) -> requests.Response:
        return self.http.options(url or self.endpoint, headers=headers or {}, timeout=30)

    def create(self, length: int | str | None = None, metadata: dict | None = None, *,
               defer: bool = False, concat: str | None = None, data: bytes | None = None,
               headers: dict | None = None) -> requests.Response:
        base = {}
        if length is not None:
            base["Upload-Length"] = str(length)
        if defer:
            base["Upload-Defer-Length"] = "1"
        if metadata is not None:
            base["Upload-Metadata"] = encode_metadata(metadata)
        if concat is not None:
            base["Upload-Concat"] = concat
        if data is not None:
            base["Content-Type"] = OFFSET_STREAM
        return self.http.post(self.endpoint, data=data if data is not None else b"",
                              headers=self._headers(headers, **base), timeout=60)

    def new(self, length: int | None = None, metadata: dict | None = None, **kwargs) -> str:
        """Create an upload, check the 201, return its absolute URL."""
        response = self.create(length, metadata, **kwargs)
        assert response.status_code == 201, (response.status_code, response.text)
        location = response.headers.get("Location")
        assert location, "201 without Location"
        return self.url(location)

    def head(self, url: str, headers: dict | None = None) -> requests.Response:
        return self.http.head(url, headers=self._headers(headers), timeout=30)

    def patch(self, url: str, offset: int | str | None, data: bytes, headers: dict | None = None,
              content_type: str | None = OFFSET_STREAM) -> requests.Response:
        base = {"Content-Type": content_type}
        if offset is not None:
            base["Upload-Offset"] = str(offset)
        return self.http.patch(url, data=data, headers=self._headers(headers, **base), timeout=60)

    def delete(self, url: str, headers: dict | None = None) -> requests.Response:
        return self.http.delete(url, headers=self._headers(headers), timeout=30)

    def offset(self, url: str) -> int:
        response = self.head(url)
        assert response.status_code == 200, response.status_code
        return int(response.headers["Upload-Offset"])

    def send(self, url: str, data: bytes, start: int = 0, chunk: int = 4 * MiB) -> requests.Response:
        """PATCH data[start:] in chunks, checking each 204; returns the last response."""
        offset, response = start, None
        while offset < len(data):
            piece = data[offset:offset + chunk]
            response = self.patch(url, offset, piece)
            assert response.status_code == 204, (offset, response.status_code, response.text)
            assert int(response.headers["Upload-Offset"]) == offset + len(piece)
            offset += len(piece)
        return response

    def upload(self, data: bytes, metadata: dict, chunk: int = 4 * MiB) -> tuple[str, requests.Response]:
        """A whole upload: create, PATCH everything; returns (url, last PATCH response)."""
        url = self.new(len(data), metadata)
        return url, self.send(url, data, chunk=chunk)

    def files(self) -> list[dict]:
        response = self.http.get(self.base + "/files", timeout=30)
        assert response.status_code == 200
        return response.json()["files"]

    def record(self, file_id: str) -> requests.Response:
        return self.http.get(f"{self.base}/files/{file_id}", timeout=30)

    def policy(self) -> dict:
        return self.http.get(self.base + "/policy", timeout=30).json()


# ---------------------------------------------------------------- raw sockets


def open_patch(url: str, offset: int, content_length: int, headers: dict | None = None) -> socket.socket:
    """Start a PATCH by hand: request line and headers only; the caller writes (part of) the body."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    lines = [f"PATCH {parts.path} HTTP/1.1", f"Host: {parts.netloc}",
             f"Tus-Resumable: {TUS_VERSION}", f"Content-Type: {OFFSET_STREAM}",
             f"Upload-Offset: {offset}", f"Content-Length: {content_length}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return sock


def read_response(sock: socket.socket, timeout: float = 30) -> tuple[int, dict, bytes]:
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock, method="PATCH")
    response.begin()
    body = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    return response.status, headers, body


def interrupted_patch(url: str, offset: int, content_length: int, body: bytes, pause: float = 0.3) -> None:
    """A PATCH whose connection dies mid-body: announce `content_length`, send `body` (shorter), close."""
    assert len(body) < content_length
    sock = open_patch(url, offset, content_length)
    try:
        sock.sendall(body)
        time.sleep(pause)
    finally:
        sock.close()


def wait_stable_offset(tus: Tus, url: str, settle: float = 0.3, timeout: float = 10) -> int:
    """HEAD until the offset stops moving (the server has finished with an interrupted PATCH)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        response = tus.head(url)
        assert response.status_code == 200, response.status_code
        current = int(response.headers["Upload-Offset"])
        if current == last or time.monotonic() > deadline:
            return current
        last = current
        time.sleep(settle)


# ---------------------------------------------------------------- processes


def gateway_pids(proc) -> list[int]:
    """The gunicorn master and all its descendants (its worker)."""
    pids, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            pass
    return pids


def kill_gateway(proc) -> None:
    """SIGKILL the gateway: the master (proc.kill()) and, at once, its worker."""
    pids = gateway_pids(proc)
    proc.kill()
    for pid in pids[1:]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)
    # The worker is not our child: wait until it is really gone.
    deadline = time.monotonic() + 10
    for pid in pids[1:]:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            try:
                if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                    break
            except OSError:
                break
            time.sleep(0.05)


def stop_gateway(gateway) -> None:
    """Stop a gateway quickly: SIGINT is gunicorn's quick shutdown (SIGTERM waits ~1.3 s)."""
    if gateway.proc.poll() is not None:
        return
    gateway.proc.send_signal(signal.SIGINT)
    try:
        gateway.proc.wait(timeout=15)
    except Exception:
        kill_gateway(gateway.proc)


@pytest.fixture
def gateways(validator, thumbnailer):
    """Start gateway processes on a given data dir; whatever still runs is stopped at teardown."""
    started = []

    def start(data_dir, validator_addr=None, **env):
        gateway = start_gateway_process(data_dir, validator_addr or validator.address,
                                        thumbnailer.address, **env)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        stop_gateway(gateway)


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory, validator, thumbnailer):
    """One gateway process for a whole module (tests that do not need an empty data dir)."""
    data_dir = tmp_path_factory.mktemp("tus-shared") / "data"
    gateway = start_gateway_process(data_dir, validator.address, thumbnailer.address)
    yield gateway
    stop_gateway(gateway)


@pytest.fixture
def tus(shared_gateway):
    client = Tus(shared_gateway.url)
    yield client
    client.close()


@pytest.fixture
def fresh_gateway(gateways, tmp_path):
    """A gateway process of its own, on an empty data dir (like live_gateway, quicker to stop)."""
    return gateways(tmp_path / "fresh-data")


@pytest.fixture
def fresh_tus(fresh_gateway):
    client = Tus(fresh_gateway.url)
    yield client
    client.close()


@pytest.fixture
def live_tus(live_gateway):
    """A tus client on the live_gateway fixture's gateway (fresh, empty data dir)."""
    client = Tus(live_gateway.url)
    yield client
    client.close()

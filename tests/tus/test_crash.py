"""tus uploads survive a gateway killed mid-PATCH, and concurrent PATCHes never interleave."""
from __future__ import annotations

import select
import threading
import time

import pytest

from tests.tus.conftest import (
    KiB, MiB, Tus, kill_gateway, open_patch, read_response, sha256, text_bytes,
)

TXT = {"filename": "survivor.txt", "filetype": "text/plain"}


def test_an_upload_survives_a_gateway_killed_during_a_patch(gateways, tmp_path):
    data_dir = tmp_path / "data"
    data = text_bytes(8 * MiB, seed=200)
    acknowledged = MiB

    first = gateways(data_dir)
    client = Tus(first.url)
    try:
        url = client.new(len(data), TXT)
        client.send(url, data[:acknowledged])
        path = url[len(client.base):]

        # A PATCH for all the rest; 3 MiB of it are sent, then the gateway dies (SIGKILL).
        sent = 3 * MiB
        sock = open_patch(url, acknowledged, len(data) - acknowledged)
        try:
            for start in range(acknowledged, acknowledged + sent, 256 * KiB):
                sock.sendall(data[start:start + 256 * KiB])
            time.sleep(0.5)  # let the server write what it has received
            kill_gateway(first.proc)
        finally:
            sock.close()
    finally:
        client.close()

    second = gateways(data_dir)
    client = Tus(second.url)
    try:
        url = client.base + path
        head = client.head(url)
        assert head.status_code == 200, head.status_code
        assert head.headers["Upload-Length"] == str(len(data))
        offset = int(head.headers["Upload-Offset"])
        # What was acknowledged (204) is kept; nothing that was never sent is claimed.
        assert acknowledged <= offset <= acknowledged + sent

        # Resume from the server's offset: if the bytes before it are not really the file's,
        # the sha256 below says so.
        last = client.send(url, data, start=offset, chunk=2 * MiB)
        file_id = last.headers["Upload-File-Id"]
        record = client.record(file_id).json()
        assert record["sha256"] == sha256(data)
        assert record["size"] == len(data)
        assert [r["id"] for r in client.files()] == [file_id]
        assert client.http.get(client.base + record["download_url"]).content == data
    finally:
        client.close()


def test_a_killed_gateway_does_not_leave_the_upload_locked(gateways, tmp_path):
    """After the crash the upload answers PATCH at its offset at once (no stale lock: no 423)."""
    data_dir = tmp_path / "data"
    data = text_bytes(2 * MiB, seed=201)
    first = gateways(data_dir)
    client = Tus(first.url)
    try:
        url = client.new(len(data), TXT)
        path = url[len(client.base):]
        sock = open_patch(url, 0, len(data))
        try:
            sock.sendall(data[:512 * KiB])
            time.sleep(0.3)
            kill_gateway(first.proc)
        finally:
            sock.close()
    finally:
        client.close()

    second = gateways(data_dir)
    client = Tus(second.url)
    try:
        url = client.base + path
        offset = client.offset(url)
        assert 0 <= offset <= 512 * KiB
        response = client.patch(url, offset, data[offset:])
        assert response.status_code == 204, response.status_code
        assert client.record(response.headers["Upload-File-Id"]).json()["sha256"] == sha256(data)
    finally:
        client.close()


def _slow_patch(url: str, offset: int, body: bytes, pieces: int, pause: float, result: dict):
    """PATCH `body` in `pieces`, pausing between them; stop sending once the server answers."""
    try:
        sock = open_patch(url, offset, len(body))
        try:
            size = -(-len(body) // pieces)
            for start in range(0, len(body), size):
                if select.select([sock], [], [], 0)[0]:
                    break  # answered early: stop sending, read the answer
                try:
                    sock.sendall(body[start:start + size])
                except OSError:
                    break
                time.sleep(pause)
            status, headers, _ = read_response(sock)
            result["status"] = status
            result["offset"] = headers.get("upload-offset")
        finally:
            sock.close()
    except Exception as exc:  # noqa: BLE001 - reported by the main thread
        result["error"] = repr(exc)


@pytest.mark.parametrize("lock_wait", [None, "0.2"], ids=["default-lock-wait", "short-lock-wait"])
def test_concurrent_patches_at_the_same_offset_never_interleave(gateways, tmp_path, lock_wait):
    """Two PATCHes at the same offset, both sending slowly: one wins (204), the other gets 409
    (it waited, then the offset had moved) or 423 (Locked); the bytes are one or the other's."""
    env = {"TUS_LOCK_WAIT": lock_wait} if lock_wait else {}
    gateway = gateways(tmp_path / "data", **env)
    tus = Tus(gateway.url)
    try:
        loser = _race(tus)
    finally:
        tus.close()
    if lock_wait:
        # The first PATCH holds the upload for about a second, far past TUS_LOCK_WAIT.
        assert loser == 423


def _race(tus):
    n = 512 * KiB
    start = 100 * KiB
    data = text_bytes(start + n + 100 * KiB, seed=202)
    # Same length, other (valid text) bytes: whichever PATCH wins, the file tells which.
    other = text_bytes(n, seed=203).upper()
    assert other != data[start:start + n]

    url = tus.new(len(data), TXT)
    tus.send(url, data[:start])

    a, b = {}, {}
    thread_a = threading.Thread(target=_slow_patch, args=(url, start, data[start:start + n], 32, 0.03, a))
    thread_b = threading.Thread(target=_slow_patch, args=(url, start, other, 32, 0.03, b))
    thread_a.start()
    time.sleep(0.2)
    thread_b.start()
    thread_a.join(60)
    thread_b.join(60)
    assert "error" not in a and "error" not in b, (a, b)

    statuses = sorted([a["status"], b["status"]])
    assert statuses.count(204) == 1, (a, b)
    loser = a if b["status"] == 204 else b
    assert loser["status"] in (409, 423), (a, b)
    winner_bytes = data[start:start + n] if a["status"] == 204 else other
    winner = a if a["status"] == 204 else b
    assert winner["offset"] == str(start + n)
    assert tus.offset(url) == start + n

    last = tus.send(url, data, start=start + n)
    expected = data[:start] + winner_bytes + data[start + n:]
    record = tus.record(last.headers["Upload-File-Id"]).json()
    assert record["sha256"] == sha256(expected)
    assert record["size"] == len(data)
    return loser["status"]

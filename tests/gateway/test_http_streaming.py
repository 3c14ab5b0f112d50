"""Over real HTTP (gunicorn, as `make run` serves it): bodies are streamed,
limits are enforced while the bytes arrive, memory stays flat."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import urllib.parse

import pytest

from tests.conftest import start_gateway_process
from tests.samples import MZ_HEADER

BOUNDARY = "----uploadtestboundary"


def multipart_head(name: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()


TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def connect(url: str) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def chunked_upload(url: str, name: str, body_chunks) -> tuple[int, dict]:
    """POST with Transfer-Encoding: chunked (no Content-Length): the size is unknown up front."""
    conn = connect(url)
    conn.putrequest("POST", "/upload")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for chunk in [multipart_head(name), *body_chunks, TAIL]:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered early and stopped reading
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


@pytest.fixture
def small_limit_gateway(tmp_path, start_validator, thumbnailer):
    from validator_service.config import Settings

    validator = start_validator(settings=Settings(max_file_size=1024 * 1024))
    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address,
                                    MAX_FILE_SIZE=1024 * 1024)
    yield gateway
    gateway.proc.terminate()
    gateway.proc.wait(timeout=15)


def leftover_files(data_dir) -> list[str]:
    return [f for _, _, names in os.walk(data_dir / "files") for f in names]


def test_chunked_upload_is_stored(live_gateway):
    chunks = [os.urandom(100_000) for _ in range(5)]
    text = b"".join(chunks).hex().encode()[:300_000] + b"\n"
    status, body = chunked_upload(live_gateway.url, "big.txt", [text[i:i + 65536] for i in range(0, len(text), 65536)])
    assert status == 201, body
    assert body["sha256"] == hashlib.sha256(text).hexdigest()
    assert body["size"] == len(text)


def test_chunked_body_growing_past_the_limit_is_413(small_limit_gateway):
    status, body = chunked_upload(small_limit_gateway.url, "big.txt", [b"a" * 65536] * 40)
    assert status == 413
    assert body["code"] == "file_too_large"
    assert leftover_files(small_limit_gateway.data_dir) == []


def test_content_length_over_the_limit_is_answered_before_the_body(small_limit_gateway):
    conn = connect(small_limit_gateway.url)
    conn.putrequest("POST", "/upload")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Content-Length", str(500 * 1024 * 1024))
    conn.endheaders()
    # Not one byte of the body is sent: the answer comes from the headers alone.
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["code"] == "file_too_large"


def curl_upload(url: str, path, name: str) -> tuple[int, dict]:
    result = subprocess.run(
        ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-F", f"file=@{path};filename={name}", f"{url}/upload"],
        capture_output=True, text=True, timeout=60)
    body, _, code = result.stdout.rpartition("\n")
    return int(code), json.loads(body)


def test_curl_sees_413_for_an_oversized_file(small_limit_gateway, tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * (3 * 1024 * 1024))
    status, body = curl_upload(small_limit_gateway.url, path, "big.txt")
    assert status == 413 and body["code"] == "file_too_large"


def test_curl_sees_the_refusal_of_a_renamed_executable(live_gateway, tmp_path):
    path = tmp_path / "setup.bin"
    path.write_bytes(MZ_HEADER.ljust(64 * 1024, b"\0") + os.urandom(8 * 1024 * 1024))
    status, body = curl_upload(live_gateway.url, path, "holiday.jpg")
    assert status == 415 and body["code"] == "executable_content"
    assert leftover_files(live_gateway.data_dir) == []


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def gunicorn_worker(pid: int) -> int:
    children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    return int(children[0])


def test_gateway_memory_stays_flat_for_a_large_upload(live_gateway, tmp_path):
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello\n" * 200)
    assert curl_upload(live_gateway.url, small, "small.txt")[0] == 201
    worker = gunicorn_worker(live_gateway.proc.pid)
    before = peak_rss_kib(worker)

    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        line = b"the quick brown fox jumps over the lazy dog\n" * 1000
        for _ in range(1000):
            f.write(line)  # 44 MB of text
    status, body = curl_upload(live_gateway.url, big, "big.txt")
    assert status == 201, body
    growth_mib = (peak_rss_kib(worker) - before) / 1024
    assert growth_mib < 16, f"the gateway's peak memory grew by {growth_mib:.1f} MiB"


def test_broken_chunked_framing_is_400(live_gateway):
    conn = connect(live_gateway.url)
    conn.putrequest("POST", "/upload")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"ZZ\r\nnot a chunk size\r\n0\r\n\r\n")
    response = conn.getresponse()
    assert response.status == 400
    assert "chunked" in json.loads(response.read())["error"]

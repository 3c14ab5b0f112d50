"""Slow and abusive clients against the gateway as `make run` serves it (gunicorn).

Most tests use a gateway with ONE request thread: if an abusive request kept its
thread, the next ordinary request would wait for ever, so "a later request
still works" proves the thread was released.
"""
from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import threading
import time
import urllib.parse

import pytest
import requests

from tests.conftest import start_gateway_process

BOUNDARY = "----abusiveclientboundary"
MiB = 1024 * 1024
MAX_REQUEST_SIZE = 16 * MiB
HEADER_TIMEOUT = 2.0
IDLE_TIMEOUT = 2.0


def stop(gateway) -> None:
    gateway.proc.terminate()
    gateway.proc.wait(timeout=15)


@pytest.fixture
def one_thread_gateway(tmp_path, validator, thumbnailer):
    gateway = start_gateway_process(
        tmp_path / "data", validator.address, thumbnailer.address, GATEWAY_THREADS=1,
        CLIENT_HEADER_TIMEOUT=HEADER_TIMEOUT, CLIENT_IDLE_TIMEOUT=IDLE_TIMEOUT, CLIENT_MIN_RATE=1000,
        MAX_REQUEST_SIZE=MAX_REQUEST_SIZE)
    yield gateway
    stop(gateway)


def address(gateway) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(gateway.url)
    return parts.hostname, parts.port


def connect(gateway, timeout: float = 30) -> socket.socket:
    return socket.create_connection(address(gateway), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict, dict]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    assert response.getheader("Content-Type", "").startswith("application/json"), body[:300]
    return response.status, dict(response.getheaders()), json.loads(body)


def assert_still_serving(gateway) -> None:
    """The gateway's only thread is free: an ordinary request is answered at once."""
    started = time.monotonic()
    assert requests.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
    assert time.monotonic() - started < 2


def leftover_files(gateway) -> list[str]:
    return [f for _, _, names in os.walk(gateway.data_dir / "files") for f in names]


def part_head(name: str = "file", filename: str = "a.txt") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def upload_headers(gateway, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (f"POST /upload HTTP/1.1\r\nHost: {address(gateway)[0]}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{framing}\r\n\r\n").encode()


class Flood(threading.Thread):
    """Sends pieces on a socket until told to stop or the server stops reading."""

    def __init__(self, sock: socket.socket, pieces):
        super().__init__(daemon=True)
        self.sock = sock
        self.pieces = pieces
        self.sent = 0
        self.halt = threading.Event()

    def run(self):
        try:
            for piece in self.pieces:
                if self.halt.is_set():
                    return
                self.sock.sendall(piece)
                self.sent += len(piece)
        except OSError:
            pass


def chunked(pieces):
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)


def endless(piece: bytes):
    while True:
        yield piece


def flood_and_answer(gateway, head: bytes, pieces) -> tuple[int, dict, int]:
    """Send ``head``, then ``pieces`` for as long as the server takes them; returns
    the answer's status and JSON body and how many bytes had been sent when it came."""
    sock = connect(gateway)
    sock.sendall(head)
    flood = Flood(sock, pieces)
    flood.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        sent_at_answer = flood.sent
        body = response.read()
        assert response.getheader("Content-Type", "").startswith("application/json"), body[:300]
        return response.status, json.loads(body), sent_at_answer
    finally:
        flood.halt.set()
        sock.close()
        flood.join(timeout=10)


# --- what gunicorn refuses before the application sees it: JSON too ---


def test_an_oversized_request_line_is_414_json(one_thread_gateway):
    sock = connect(one_thread_gateway)
    sock.sendall(b"GET /files?q=" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = read_response(sock)
    assert status == 414 and "request line" in body["error"]
    assert headers["Connection"] == "close"
    sock.close()
    assert_still_serving(one_thread_gateway)


def test_an_oversized_header_is_431_json(one_thread_gateway):
    sock = connect(one_thread_gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
    status, _, body = read_response(sock)
    assert status == 431 and "headers are too large" in body["error"]
    sock.close()
    assert_still_serving(one_thread_gateway)


def test_too_many_headers_is_431_json(one_thread_gateway):
    sock = connect(one_thread_gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n")
    status, _, body = read_response(sock)
    assert status == 431 and "at most 100 headers" in body["error"]
    sock.close()
    assert_still_serving(one_thread_gateway)


def test_a_malformed_request_is_400_json(one_thread_gateway):
    sock = connect(one_thread_gateway)
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    status, _, body = read_response(sock)
    assert status == 400 and body["error"].startswith("The request is not valid HTTP")
    sock.close()
    assert_still_serving(one_thread_gateway)


# --- bodies that never end ---


def test_an_endless_multipart_preamble_is_400(one_thread_gateway):
    status, body, sent = flood_and_answer(one_thread_gateway, upload_headers(one_thread_gateway, None),
                                          chunked(endless(b"x" * 65536)))
    assert status == 400 and "preamble or part header" in body["error"]
    assert sent < 2 * MAX_REQUEST_SIZE
    assert_still_serving(one_thread_gateway)
    assert leftover_files(one_thread_gateway) == []


def test_an_endless_part_header_is_400(one_thread_gateway):
    length = 8 * MiB  # a Content-Length this time; the header never ends within it

    def pieces():
        yield part_head()[:-4] + b"\r\nX-Padding: "
        sent = len(part_head())
        while sent < length:
            yield b"p" * min(65536, length - sent)
            sent += 65536

    status, body, _ = flood_and_answer(one_thread_gateway, upload_headers(one_thread_gateway, length), pieces())
    assert status == 400 and "preamble or part header" in body["error"]
    assert_still_serving(one_thread_gateway)
    assert leftover_files(one_thread_gateway) == []


def test_a_chunked_body_that_never_ends_is_413_once_max_request_size_passes(one_thread_gateway):
    # A part the gateway does not store (not named "file"): only MAX_REQUEST_SIZE stops it.
    pieces = chunked(itertools.chain([part_head(name="other", filename="x.bin")], endless(os.urandom(65536))))
    status, body, sent = flood_and_answer(one_thread_gateway, upload_headers(one_thread_gateway, None), pieces)
    assert status == 413
    assert MAX_REQUEST_SIZE < sent < 2 * MAX_REQUEST_SIZE, sent  # answered once the limit passed, not later
    assert_still_serving(one_thread_gateway)
    assert leftover_files(one_thread_gateway) == []


# --- silent and slow clients ---


def test_a_client_that_sends_headers_then_nothing_gets_408(one_thread_gateway):
    sock = connect(one_thread_gateway)
    sock.sendall(upload_headers(one_thread_gateway, 100_000) + part_head())
    started = time.monotonic()
    status, _, body = read_response(sock)
    waited = time.monotonic() - started
    assert status == 408 and "nothing was stored" in body["error"]
    assert IDLE_TIMEOUT - 0.2 < waited < IDLE_TIMEOUT + 3
    sock.close()
    assert_still_serving(one_thread_gateway)
    assert leftover_files(one_thread_gateway) == []


def test_headers_sent_slowly_get_408_after_the_header_timeout(one_thread_gateway):
    sock = connect(one_thread_gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    try:
        for _ in range(int(HEADER_TIMEOUT * 4) + 8):  # one header byte every 0.5 s: never idle for long
            sock.sendall(b"X")
            time.sleep(0.5)
    except OSError:
        pass  # the gateway gave up and closed
    status, _, body = read_response(sock)
    assert status == 408 and "did not arrive in time" in body["error"]
    assert time.monotonic() - started < HEADER_TIMEOUT + 5
    sock.close()
    assert_still_serving(one_thread_gateway)


def test_a_connection_that_sends_nothing_is_closed(one_thread_gateway):
    sock = connect(one_thread_gateway)
    assert_still_serving(one_thread_gateway)  # it holds no thread meanwhile
    started = time.monotonic()
    sock.settimeout(HEADER_TIMEOUT + 5)
    assert sock.recv(1) == b""  # closed by the gateway
    assert time.monotonic() - started < HEADER_TIMEOUT + 3
    sock.close()


def test_a_body_slower_than_the_minimum_rate_is_given_up(one_thread_gateway):
    sock = connect(one_thread_gateway)
    sock.sendall(upload_headers(one_thread_gateway, 100_000) + part_head())
    flood = Flood(sock, (time.sleep(0.2) or b"z" for _ in range(200)))  # 5 bytes a second
    flood.start()
    started = time.monotonic()
    status, _, body = read_response(sock)
    assert status == 408 and "slower than the 1000" in body["error"]
    assert time.monotonic() - started < IDLE_TIMEOUT + 3
    flood.halt.set()
    sock.close()
    flood.join(timeout=5)
    assert_still_serving(one_thread_gateway)
    assert leftover_files(one_thread_gateway) == []


def test_a_client_that_does_not_read_its_answer_is_given_up(one_thread_gateway):
    big = b"a line of text to download\n" * (12 * MiB // 27)  # more than the socket buffers hold
    response = requests.post(f"{one_thread_gateway.url}/upload", files={"file": ("big.txt", big)}, timeout=60)
    assert response.status_code == 201, response.text
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address(one_thread_gateway))
    sock.sendall(f"GET {response.json()['download_url']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(IDLE_TIMEOUT + 2)  # and never reads: the gateway's only thread is stuck sending, then gives up
    assert_still_serving(one_thread_gateway)
    sock.close()


def test_a_stalled_tus_patch_keeps_what_arrived(one_thread_gateway):
    url = one_thread_gateway.url
    created = requests.post(f"{url}/tus/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "310000",
                                                    "Upload-Metadata": "filename YS50eHQ="}, timeout=10)
    assert created.status_code == 201
    data = b"some text that arrives in time\n" * 10000  # 310,000 bytes
    sock = connect(one_thread_gateway)
    sock.sendall((f"PATCH {created.headers['Location']} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
                  "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                  f"Content-Length: {len(data)}\r\n\r\n").encode() + data[:100_000])
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 204
    assert response.getheader("Upload-Offset") == "100000"
    sock.close()
    head = requests.head(url + created.headers["Location"], headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    assert head.headers["Upload-Offset"] == "100000"
    assert_still_serving(one_thread_gateway)


def test_clients_trickling_a_byte_a_second_do_not_starve_others(tmp_path, validator, thumbnailer):
    """More tricklers than threads: without the minimum rate they would hold every
    thread for hours and the uploads below would time out."""
    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address,
                                    GATEWAY_THREADS=2, CLIENT_IDLE_TIMEOUT=2, CLIENT_MIN_RATE=500)
    tricklers = []
    try:
        for _ in range(4):
            sock = connect(gateway)
            sock.sendall(upload_headers(gateway, 10_000) + part_head())
            trickle = Flood(sock, (time.sleep(1) or b"t" for _ in range(10_000)))
            trickle.start()
            tricklers.append((sock, trickle))
        for n in range(6):
            response = requests.post(f"{gateway.url}/upload",
                                     files={"file": (f"note{n}.txt", f"note {n}\n".encode() * 1000)}, timeout=20)
            assert response.status_code == 201
        # Each trickler was answered 408 and let go.
        for sock, trickle in tricklers:
            sock.settimeout(10)
            answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert len([r for r in requests.get(f"{gateway.url}/files", timeout=10).json()["files"]]) == 6
    finally:
        for sock, trickle in tricklers:
            trickle.halt.set()
            sock.close()
        stop(gateway)

"""The upload page sends large files with tus (tus-js-client, served from node_modules):
progress, pause and resume, carrying on after a reload or a dropped network, and the
server's refusals shown as it words them. Debian's Chromium driven by Playwright, against
the gateway served the way `make run` serves it."""
from __future__ import annotations

import hashlib
import random
import re
import time
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import requests
from playwright.sync_api import expect

from gateway.http.page import TUS_DIST
from tests.gateway.conftest import emulate_offline, throttle_upload
from tests.gateway.test_page import RECORD_PROGRESS, STRICT_CSP, item_named, open_page
from tests.samples import MZ_HEADER

pytestmark = pytest.mark.timeout(60)
needs_tus = pytest.mark.skipif(not (Path(TUS_DIST) / "tus.min.js").exists(),
                               reason="tus-js-client is not installed: run `make install`")

MiB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}


def big_text(path: Path, size: int = 20 * MiB) -> Path:
    """Plain text a little over `size` bytes: more than two tus chunks (the policy's chunk is 8 MiB)."""
    line = b"The quick brown fox jumps over the lazy dog; a line of a large text file.\n"
    path.write_bytes(line * (size // len(line) + 1))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class TusTraffic:
    """Every request the page makes to /tus/, with its headers, and the upload's URL."""

    def __init__(self, page, base_url: str):
        self.page = page
        self.base_url = base_url
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self.locations: list[str] = []
        self.patch_answers: list[int] = []
        self.failures: list[tuple[str, str]] = []  # (method, Chromium's error)
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("requestfailed", self._failed)

    def _request(self, request):
        if urlparse(request.url).path.startswith("/tus/"):
            self.requests.append((request.method, urlparse(request.url).path, request.headers))

    def _failed(self, request):
        if urlparse(request.url).path.startswith("/tus/"):
            self.failures.append((request.method, request.failure or ""))

    def _response(self, response):
        request = response.request
        if not urlparse(request.url).path.startswith("/tus/"):
            return
        if request.method == "POST" and response.status == 201:
            self.locations.append(urljoin(self.base_url, response.headers["location"]))
        elif request.method == "PATCH":
            self.patch_answers.append(response.status)

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.requests]

    def patch_offsets(self) -> list[int]:
        return [int(headers["upload-offset"]) for method, _, headers in self.requests if method == "PATCH"]

    def url(self) -> str:
        deadline = time.monotonic() + 10
        while not self.locations:
            assert time.monotonic() < deadline, "the page never created a tus upload"
            self.page.wait_for_timeout(50)  # Playwright delivers events while it waits
        return self.locations[-1]


def server_offset(url: str) -> tuple[int, int]:
    """(Upload-Offset, Upload-Length) as the server has them."""
    response = requests.head(url, headers=TUS, timeout=5)
    assert response.status_code == 200, response.status_code
    return int(response.headers["Upload-Offset"]), int(response.headers["Upload-Length"])


def wait_for_server_offset(page, url: str, at_least: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while True:
        offset, _ = server_offset(url)
        if offset >= at_least:
            return offset
        assert time.monotonic() < deadline, f"the server has only {offset} bytes"
        page.wait_for_timeout(100)


def progress_value(item) -> int:
    return int(item.locator("progress").evaluate("(p) => p.value"))


def with_strict_csp(page, base_url: str) -> None:
    """Serve the page with the strictest CSP it should work under, and record violations."""
    def handle(route):
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "content-security-policy": STRICT_CSP})

    page.route(base_url + "/", handle)
    page.add_init_script("""window.__violations = [];
        document.addEventListener("securitypolicyviolation",
            (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));""")


@needs_tus
def test_the_library_is_served_and_cached_only_under_its_fingerprint(client):
    html = client.get("/").get_data(as_text=True)
    src = re.search(r'<script src="(/vendor/tus\.min\.js\?v=([0-9a-f]{12}))" defer></script>', html)
    assert src, html
    assert html.index(src.group(1)) < html.index("/static/app.js")  # run before app.js
    body = (Path(TUS_DIST) / "tus.min.js").read_bytes()
    assert src.group(2) == hashlib.sha256(body).hexdigest()[:12]
    fingerprinted = client.get(src.group(1))
    assert fingerprinted.status_code == 200 and fingerprinted.data == body
    assert fingerprinted.mimetype == "text/javascript"
    assert fingerprinted.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    for url in ("/vendor/tus.min.js", "/vendor/tus.min.js?v=000000000000"):
        assert client.get(url).headers["Cache-Control"] == "no-cache", url
    missing = client.get("/vendor/nothing.js")
    assert missing.status_code == 404 and missing.is_json


def test_without_the_library_the_page_does_without_it(client, monkeypatch, tmp_path):
    from gateway.http import page

    monkeypatch.setattr(page, "TUS_DIST", str(tmp_path / "none"))
    monkeypatch.setattr(page.vendor, "static_folder", str(tmp_path / "none"))
    html = client.get("/").get_data(as_text=True)
    assert "/vendor/" not in html and "/static/app.js?v=" in html
    response = client.get("/vendor/tus.min.js")
    assert response.status_code == 404
    assert "make install" in response.get_json()["error"]


@needs_tus
def test_large_file_goes_through_tus_with_progress(live_gateway, page, tmp_path):
    big = big_text(tmp_path / "big.txt")
    posts_to_upload = []
    page.on("request", lambda r: posts_to_upload.append(r.url) if urlparse(r.url).path == "/upload" else None)
    page.add_init_script(RECORD_PROGRESS)
    with_strict_csp(page, live_gateway.url)
    throttle_upload(page, 12 * MiB)
    open_page(page, live_gateway.url)
    tus = TusTraffic(page, live_gateway.url)

    page.set_input_files("#file-input", str(big))
    item = item_named(page, "big.txt")
    expect(item.locator(".progress-text")).to_have_text(
        re.compile(r"^\d{1,2}% · [\d.]+ (bytes|KiB|MiB)/s · .+ left$"))
    expect(item.get_by_role("button", name="Pause upload of big.txt")).to_be_visible()
    expect(item).to_have_attribute("data-state", "done", timeout=30_000)

    size = big.stat().st_size
    chunk = page.context.request.get(live_gateway.url + "/policy").json()["tus"]["chunk_size"]
    assert posts_to_upload == [], "a file larger than a tus chunk went through POST /upload"
    assert tus.methods() == ["POST", "PATCH", "PATCH", "PATCH"], tus.methods()
    assert tus.patch_offsets() == [0, chunk, 2 * chunk]
    assert tus.patch_answers == [204, 204, 204]
    post_headers = tus.requests[0][2]
    assert post_headers["upload-length"] == str(size)
    assert "filename YmlnLnR4dA==" in post_headers["upload-metadata"]  # base64("big.txt")

    values = page.evaluate("window.__progress")
    assert max(values) == 100 and any(0 < v < 100 for v in values), values
    expect(item.locator("[data-slot=sha256]")).to_have_text(sha256(big))
    expect(item.locator("[data-slot=type]")).to_have_text(re.compile(r"^text/plain"))
    expect(item.locator(".badge")).to_have_text("Uploaded")
    expect(item.locator("[data-action=pause]")).to_be_hidden()
    record = page.context.request.get(live_gateway.url + "/files").json()["files"][0]
    assert record["original_name"] == "big.txt" and record["size"] == size
    assert page.context.request.get(live_gateway.url + record["download_url"]).body() == big.read_bytes()
    assert page.evaluate("typeof window.tus.Upload") == "function"
    assert page.evaluate("window.__violations") == []
    # Finished: nothing left in localStorage to resume.
    assert page.evaluate("Object.keys(localStorage).filter((k) => k.startsWith('tus::'))") == []


@needs_tus
def test_pause_then_resume_with_the_keyboard(live_gateway, page, tmp_path):
    big = big_text(tmp_path / "big.txt")
    throttle_upload(page, 4 * MiB)
    open_page(page, live_gateway.url)
    tus = TusTraffic(page, live_gateway.url)
    page.set_input_files("#file-input", str(big))
    item = item_named(page, "big.txt")
    url = tus.url()
    # Some of the second chunk is on its way.
    page.wait_for_function("(p) => p.value >= 50", arg=item.locator("progress").element_handle())

    item.get_by_role("button", name="Pause upload of big.txt").click()
    expect(item).to_have_attribute("data-state", "paused")
    expect(item.locator(".badge")).to_have_text("Paused")
    expect(item.locator(".progress-text")).to_contain_text("Paused at")
    resume = item.get_by_role("button", name="Resume upload of big.txt")
    expect(resume).to_be_focused()
    expect(item.get_by_role("button", name="Pause upload of big.txt")).to_be_hidden()
    paused_at = progress_value(item)
    page.wait_for_timeout(1000 * 0.5)  # the aborted PATCH ends on the server
    offset, length = server_offset(url)
    page.wait_for_timeout(1000 * 1.5)
    assert progress_value(item) == paused_at, "progress moved while paused"
    assert server_offset(url) == (offset, length), "the server kept receiving while paused"
    assert 0 < offset < length == big.stat().st_size
    requests_while_paused = len(tus.requests)

    page.keyboard.press("Enter")
    expect(item).to_have_attribute("data-state", re.compile("uploading|processing|done"))
    expect(item).to_have_attribute("data-state", "done", timeout=30_000)
    expect(item.locator("[data-slot=sha256]")).to_have_text(sha256(big))
    # The same upload went on from where the server was: no second creation.
    assert tus.methods().count("POST") == 1, tus.methods()
    after = tus.requests[requests_while_paused:]
    assert [m for m, _, _ in after][0] == "HEAD", after
    assert int([h for m, _, h in after if m == "PATCH"][0]["upload-offset"]) >= offset


@needs_tus
def test_reload_then_choose_the_same_file_again_resumes(live_gateway, page, tmp_path):
    big = big_text(tmp_path / "big.txt")
    page.on("dialog", lambda dialog: dialog.accept())  # "leave the page?" while uploading
    throttle_upload(page, 8 * MiB)
    open_page(page, live_gateway.url)
    tus = TusTraffic(page, live_gateway.url)
    page.set_input_files("#file-input", str(big))
    url = tus.url()
    wait_for_server_offset(page, url, 1)  # the first chunk is on the server

    page.reload()
    throttle_upload(page, -1)
    expect(page.locator("#policy-summary")).to_contain_text("Allowed types")
    # The PATCH under way was cut off by the reload.
    assert [f for f in tus.failures if f[0] == "PATCH"] == [("PATCH", "net::ERR_ABORTED")], tus.failures
    offset, length = server_offset(url)
    assert 0 < offset < length
    notice = page.locator("#unfinished")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("big.txt")
    expect(notice).to_contain_text("Choose the same file again")
    before = len(tus.requests)

    page.set_input_files("#file-input", str(big))
    item = item_named(page, "big.txt")
    expect(item).to_have_attribute("data-state", "done", timeout=30_000)
    expect(item.locator("[data-slot=sha256]")).to_have_text(sha256(big))
    expect(notice).to_be_hidden()
    after = tus.requests[before:]
    assert "POST" not in [m for m, _, _ in after], after
    patches = [h for m, _, h in after if m == "PATCH"]
    assert int(patches[0]["upload-offset"]) > 0, "the upload started again from the beginning"
    assert int(patches[0]["upload-offset"]) >= offset
    assert len(page.context.request.get(live_gateway.url + "/files").json()["files"]) == 1


@needs_tus
def test_a_dropped_network_is_waited_out(live_gateway, page, tmp_path):
    big = big_text(tmp_path / "big.txt")
    throttle_upload(page, 8 * MiB)
    open_page(page, live_gateway.url)
    tus = TusTraffic(page, live_gateway.url)
    page.set_input_files("#file-input", str(big))
    item = item_named(page, "big.txt")
    url = tus.url()
    wait_for_server_offset(page, url, 1)

    emulate_offline(page, True)
    expect(item.locator(".progress-text")).to_contain_text("Offline")
    expect(item).to_have_attribute("data-state", "uploading")
    page.wait_for_timeout(1000 * 0.5)
    offset, _ = server_offset(url)
    assert ("PATCH", "net::ERR_INTERNET_DISCONNECTED") in tus.failures, tus.failures
    emulate_offline(page, False)
    expect(item).to_have_attribute("data-state", "done", timeout=30_000)
    expect(item.locator("[data-slot=sha256]")).to_have_text(sha256(big))
    assert tus.methods().count("POST") == 1, tus.methods()
    assert offset in tus.patch_offsets()[1:], (offset, tus.patch_offsets())


@needs_tus
def test_renamed_program_is_refused_with_the_servers_sentence(live_gateway, page, tmp_path):
    data = (MZ_HEADER + bytes(MiB - len(MZ_HEADER))) + random.Random(7).randbytes(9 * MiB)
    posts_to_upload = []
    page.on("request", lambda r: posts_to_upload.append(r.url) if urlparse(r.url).path == "/upload" else None)
    open_page(page, live_gateway.url)
    tus = TusTraffic(page, live_gateway.url)
    with page.expect_response(lambda r: r.request.method == "PATCH") as answer:
        page.set_input_files("#file-input", files=[{"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": data}])
    assert answer.value.status == 415
    sentence = answer.value.json()["error"]
    assert "program" in sentence
    item = item_named(page, "photo.jpg")
    expect(item).to_have_attribute("data-state", "failed")
    expect(item.locator(".item-error")).to_have_text(sentence)
    assert item.locator(".item-error").text_content() == sentence
    expect(page.locator("[role=alert]")).to_contain_text(sentence)
    expect(item.locator("[data-action=retry]")).to_be_hidden()
    assert tus.methods() == ["POST", "PATCH"], tus.methods()  # a refusal is not retried
    assert posts_to_upload == []
    assert requests.head(tus.url(), headers=TUS, timeout=5).status_code == 410
    assert page.context.request.get(live_gateway.url + "/files").json()["files"] == []

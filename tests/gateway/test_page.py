"""The upload page (GET /) in a real browser: Debian's Chromium driven by Playwright,
against the gateway served the way `make run` serves it."""
from __future__ import annotations

import base64
import hashlib
import random
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.conftest import start_gateway_process
from tests.gateway.conftest import throttle_upload
from tests.samples import MZ_HEADER, make_sample
from validator_service.config import Settings

pytestmark = pytest.mark.timeout(60)

# Records every value a <progress> takes (setting .value sets the attribute).
RECORD_PROGRESS = """
window.__progress = [];
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.target instanceof HTMLProgressElement) window.__progress.push(r.target.value);
    }
  }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ["value"] });
});
"""

# Replaces the clipboard so "Copy link" can be checked without clipboard permissions.
FAKE_CLIPBOARD = """
window.__copied = [];
Object.defineProperty(Navigator.prototype, "clipboard", {
  configurable: true,
  get() { return { writeText: async (text) => { window.__copied.push(text); } }; },
});
"""

# Counts the XMLHttpRequests to /upload open at the same time.
COUNT_UPLOADS = """
window.__uploads = { now: 0, most: 0 };
const open = XMLHttpRequest.prototype.open;
XMLHttpRequest.prototype.open = function (method, url, ...rest) {
  if (String(url).endsWith("/upload")) {
    this.addEventListener("loadstart", () => {
      window.__uploads.now += 1;
      window.__uploads.most = Math.max(window.__uploads.most, window.__uploads.now);
    });
    // Not "loadend": it comes after the page's own "load" handler has started the next one.
    for (const type of ["load", "error", "abort", "timeout"]) {
      this.addEventListener(type, () => { window.__uploads.now -= 1; });
    }
  }
  return open.call(this, method, url, ...rest);
};
"""

STRICT_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
              "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def noisy_jpeg(path: Path, side: int = 600) -> Path:
    """A JPEG of random noise: it barely compresses (~300 KiB), so its progress can be watched."""
    pixels = random.Random(side).randbytes(side * side * 3)
    Image.frombytes("RGB", (side, side), pixels).save(path, "JPEG", quality=90)
    return path


def open_page(page, base_url: str):
    page.goto(base_url + "/")
    expect(page.locator("#policy-summary")).to_contain_text("Allowed types")
    expect(page.locator("#recent-list")).to_have_attribute("aria-busy", "false")
    return page


def upload_requests(page) -> list:
    """Every request the page makes to POST /upload, from now on."""
    seen = []
    page.on("request", lambda request: seen.append(request) if urlparse(request.url).path == "/upload" else None)
    return seen


def item_named(page, name: str):
    return page.locator("#queue > li", has=page.locator(".item-name", has_text=name))


def recent_named(page, name: str):
    return page.locator("#recent-list > li", has=page.locator(".recent-name", has_text=name))


def api_upload(context, base_url: str, name: str, data: bytes, mime: str) -> dict:
    response = context.request.post(base_url + "/upload",
                                    multipart={"file": {"name": name, "mimeType": mime, "buffer": data}})
    assert response.status == 201, response.text()
    return response.json()


def test_selected_jpeg_shows_progress_then_a_result_card(live_gateway, page, tmp_path):
    photo = noisy_jpeg(tmp_path / "noise photo.jpg")
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    page.add_init_script(RECORD_PROGRESS)
    page.add_init_script(FAKE_CLIPBOARD)
    throttle_upload(page, 192 * 1024)
    open_page(page, live_gateway.url)

    page.set_input_files("#file-input", str(photo))
    item = item_named(page, "noise photo.jpg")
    expect(item.locator("progress")).to_be_visible()
    # Percent, speed and time left while it goes.
    expect(item.locator(".progress-text")).to_have_text(
        re.compile(r"^\d{1,2}% · [\d.]+ (bytes|KiB|MiB)/s · .+ left$"))
    expect(item).to_have_attribute("data-state", "done")

    values = page.evaluate("window.__progress")
    assert max(values) == 100, values
    assert any(0 < v < 100 for v in values), values
    started = values[values.index(0) + 1:] if 0 in values else values
    assert started == sorted(started), f"progress went backwards: {values}"

    record = page.context.request.get(live_gateway.url + "/files").json()["files"][0]
    assert record["original_name"] == "noise photo.jpg"
    expect(item.locator(".item-name")).to_have_text("noise photo.jpg")
    expect(item.locator("[data-slot=sha256]")).to_have_text(digest)
    expect(item.locator("[data-slot=size]")).to_have_text(record["size_formatted"])
    expect(item.locator("[data-slot=type]")).to_have_text("image/jpeg")
    expect(item.locator("[data-slot=dimensions]")).to_have_text("600 × 600 px")
    expect(item.locator(".badge")).to_have_text("Uploaded")
    expect(item.locator("progress")).to_be_hidden()

    thumb = item.locator(".thumb img")
    expect(thumb).to_have_attribute("src", record["thumbnail_url"])
    expect(thumb).to_have_attribute("alt", "Preview of noise photo.jpg")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())

    download = item.get_by_role("link", name="Download noise photo.jpg")
    expect(download).to_have_attribute("href", record["download_url"])
    assert page.context.request.get(live_gateway.url + record["download_url"]).body() == photo.read_bytes()

    item.get_by_role("button", name="Copy link to noise photo.jpg").click()
    expect(item.locator("[data-action=copy]")).to_have_text("Copied")
    assert page.evaluate("window.__copied") == [live_gateway.url + record["download_url"]]

    # The recent list was refreshed after the upload and shows it with its thumbnail.
    recent = recent_named(page, "noise photo.jpg")
    expect(recent).to_have_count(1)
    expect(recent.locator(".recent-meta")).to_contain_text(record["size_formatted"])
    expect(recent.locator("time")).to_have_attribute("datetime", record["uploaded_at"])
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=recent.locator(".thumb img").element_handle())


def test_dropped_files_upload_two_at_a_time(live_gateway, page, tmp_path):
    files = [make_sample(ext, tmp_path / ext) for ext in ("png", "gif", "pdf")]
    page.add_init_script(COUNT_UPLOADS)
    throttle_upload(page, 24 * 1024)
    open_page(page, live_gateway.url)

    payload = [[f"dropped-{path.name}", base64.b64encode(path.read_bytes()).decode()] for path in files]
    data_transfer = page.evaluate_handle("""(files) => {
        const dt = new DataTransfer();
        for (const [name, b64] of files) {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            dt.items.add(new File([bytes], name));
        }
        return dt;
    }""", payload)
    dropzone = page.locator("#dropzone")
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": data_transfer})
    expect(dropzone).to_have_attribute("data-state", "dragging")
    expect(dropzone).to_contain_text("Drop to upload")
    page.dispatch_event("#dropzone", "dragover", {"dataTransfer": data_transfer})
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": data_transfer})
    expect(dropzone).to_have_attribute("data-state", "idle")

    for path in files:
        item = item_named(page, f"dropped-{path.name}")
        expect(item).to_have_attribute("data-state", "done")
        expect(item.locator("[data-slot=sha256]")).to_have_text(hashlib.sha256(path.read_bytes()).hexdigest())
        expect(recent_named(page, f"dropped-{path.name}")).to_have_count(1)
    most = page.evaluate("window.__uploads.most")
    assert most == 2, f"{most} uploads ran at once; the page sends two at a time"
    expect(page.locator("#queue-summary")).to_have_text("3 of 3 uploaded")
    # The PDF has a thumbnail like the images (its first page).
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=item_named(page, "dropped-sample.pdf").locator(".thumb img").element_handle())


def test_refused_type_is_never_sent_and_server_refusals_are_shown_verbatim(live_gateway, page):
    uploads = upload_requests(page)
    open_page(page, live_gateway.url)
    policy = page.context.request.get(live_gateway.url + "/policy").json()
    expect(page.locator("#policy-summary")).to_contain_text(policy["max_file_size_formatted"])
    expect(page.locator("#policy-summary")).to_contain_text(", ".join(policy["extensions"]))
    assert page.get_attribute("#file-input", "accept") == policy["accept"]

    page.set_input_files("#file-input", files=[
        {"name": "setup.exe", "mimeType": "application/x-msdownload", "buffer": MZ_HEADER + bytes(2000)}])
    item = item_named(page, "setup.exe")
    expected = f"Files of type .exe are not allowed; allowed types are: {', '.join(policy['extensions'])}."
    expect(item.locator(".item-error")).to_have_text(expected, timeout=1000)
    expect(item).to_have_attribute("data-state", "failed")
    expect(item.locator(".badge")).to_have_text("Not uploaded")
    expect(item.locator("[data-action=retry]")).to_be_hidden()
    expect(page.locator("[role=alert]")).to_contain_text(f"setup.exe was not uploaded: {expected}")
    page.wait_for_timeout(300)
    assert uploads == [], "a refused file was sent anyway"

    # A renamed program passes the page's checks; the server refuses it and says why.
    with page.expect_response(lambda response: urlparse(response.url).path == "/upload") as answer:
        page.set_input_files("#file-input", files=[
            {"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": MZ_HEADER + bytes(4000)}])
    assert answer.value.status == 415
    sentence = answer.value.json()["error"]
    assert "program" in sentence
    item = item_named(page, "photo.jpg")
    expect(item).to_have_attribute("data-state", "failed")
    expect(item.locator(".item-error")).to_have_text(sentence)
    assert item.locator(".item-error").text_content() == sentence
    expect(page.locator("[role=alert]")).to_contain_text(sentence)
    assert len(uploads) == 1
    # Neither appears among the uploads.
    expect(page.locator("#recent-list > li")).to_have_count(0)
    expect(page.locator("#recent-empty")).to_be_visible()


def test_size_limit_comes_from_the_policy(page, tmp_path, start_validator, thumbnailer):
    small = start_validator(settings=Settings(max_file_size=1000))
    gateway = start_gateway_process(tmp_path / "data", small.address, thumbnailer.address, MAX_FILE_SIZE=1000)
    try:
        uploads = upload_requests(page)
        open_page(page, gateway.url)
        expect(page.locator("#policy-summary")).to_contain_text("Up to 1000 bytes per file")

        page.set_input_files("#file-input", files=[
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"a line of text\n" * 400}])
        item = item_named(page, "notes.txt")
        expect(item.locator(".item-error")).to_have_text(
            "The file is 5.9 KiB, larger than the 1000 bytes limit.", timeout=1000)
        page.wait_for_timeout(300)
        assert uploads == [], "a file over the limit was sent anyway"

        # The same kind of file under the limit goes through.
        page.set_input_files("#file-input", files=[
            {"name": "short.txt", "mimeType": "text/plain", "buffer": b"a line of text\n" * 20}])
        expect(item_named(page, "short.txt")).to_have_attribute("data-state", "done")
        assert len(uploads) == 1
    finally:
        gateway.proc.terminate()
        gateway.proc.wait(timeout=15)


def test_delete_from_recent_uploads(live_gateway, page, tmp_path):
    pdf = make_sample("pdf", tmp_path).read_bytes()
    keep = api_upload(page.context, live_gateway.url, "keep.pdf", pdf, "application/pdf")
    gone = api_upload(page.context, live_gateway.url, "remove-me.pdf", pdf, "application/pdf")
    open_page(page, live_gateway.url)
    rows = page.locator("#recent-list > li")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("remove-me.pdf")  # newest first

    with page.expect_response(lambda r: r.request.method == "DELETE") as answer:
        page.get_by_role("button", name="Delete remove-me.pdf").click()
    assert answer.value.status == 204
    expect(recent_named(page, "remove-me.pdf")).to_have_count(0)
    expect(rows).to_have_count(1)
    # Focus moves to the neighbour's Delete button rather than falling back to the page.
    expect(page.get_by_role("button", name="Delete keep.pdf")).to_be_focused()
    expect(page.locator("#announce-polite")).to_contain_text("Deleted remove-me.pdf.")

    request = page.context.request
    assert request.get(live_gateway.url + gone["download_url"]).status == 404
    assert request.get(f"{live_gateway.url}/files/{gone['id']}").status == 404
    assert request.get(live_gateway.url + keep["download_url"]).status == 200

    page.reload()
    open_page(page, live_gateway.url)
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("keep.pdf")


def test_keyboard_reaches_the_picker_and_completion_is_announced(live_gateway, page, tmp_path):
    sample = make_sample("jpg", tmp_path)
    # Intercept file choosers from the start: Playwright subscribes to them without waiting,
    # and a chooser that opens before the subscription lands is lost (and blocks later ones).
    page.on("filechooser", lambda chooser: None)
    open_page(page, live_gateway.url)
    polite = page.locator("[aria-live=polite]")
    expect(polite).to_have_count(1)
    expect(page.locator("[role=alert][aria-live=assertive]")).to_have_count(1)

    stops = []
    for _ in range(5):
        page.keyboard.press("Tab")
        stops.append(page.evaluate("document.activeElement.id || document.activeElement.className"))
        if stops[-1] == "browse":
            break
    assert stops == ["skip-link", "browse"], stops
    browse = page.get_by_role("button", name="Choose files")
    expect(browse).to_be_focused()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    # The button's description carries the rules.
    expect(browse).to_have_attribute("aria-describedby", "policy-summary")

    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert chooser.value.is_multiple()
    chooser.value.set_files(str(sample))
    expect(polite).to_contain_text("sample.jpg uploaded")
    expect(item_named(page, "sample.jpg").locator(".item-name")).to_have_attribute("id", re.compile("-name$"))
    expect(browse).to_be_focused()  # nothing stole focus

    with page.expect_file_chooser():
        page.keyboard.press(" ")


def test_late_thumbnail_is_fetched_again(live_gateway, page, tmp_path):
    """The thumbnail service may be slow: a record without a thumbnail is re-read until it has one."""
    sample = make_sample("png", tmp_path)
    rereads = []
    page.on("request", lambda r: rereads.append(r.url) if re.search(r"/files/[0-9a-f]{32}$", r.url) else None)

    def without_thumbnail(route):
        # Playwright cannot forward an intercepted file body, so the file is sent from here.
        record = api_upload(page.context, live_gateway.url, sample.name, sample.read_bytes(), "image/png")
        assert record["thumbnail_url"]
        route.fulfill(status=201, json={**record, "thumbnail_url": None})

    page.route("**/upload", without_thumbnail)
    open_page(page, live_gateway.url)
    page.set_input_files("#file-input", str(sample))
    item = item_named(page, "sample.png")
    expect(item).to_have_attribute("data-state", "done")
    thumb = item.locator(".thumb img")
    expect(thumb).to_have_attribute("src", re.compile(r"^/thumbnails/"))
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    assert rereads, "the page never asked for the record again"


def test_page_is_self_contained_and_works_under_a_strict_csp(live_gateway, page, tmp_path):
    html = page.context.request.get(live_gateway.url + "/").text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script\s*>", html, re.S | re.I)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts), scripts
    assert not re.search(r"<[^>]+\sstyle\s*=", html, re.I)
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html, re.I)
    assert "<style" not in html.lower()

    def with_csp(route):
        response = route.fetch()
        route.fulfill(response=response, headers={**response.headers, "content-security-policy": STRICT_CSP})

    page.route(live_gateway.url + "/", with_csp)
    page.add_init_script("""window.__violations = [];
        document.addEventListener("securitypolicyviolation",
            (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));""")
    urls = []
    page.on("request", lambda request: urls.append(request.url))
    open_page(page, live_gateway.url)
    page.set_input_files("#file-input", str(make_sample("jpg", tmp_path)))
    item = item_named(page, "sample.jpg")
    expect(item).to_have_attribute("data-state", "done")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=item.locator(".thumb img").element_handle())

    assert page.evaluate("window.__violations") == []
    gateway = urlparse(live_gateway.url)
    foreign = [url for url in urls if urlparse(url).netloc != gateway.netloc]
    assert not foreign, f"requests outside the gateway: {foreign}"
    assert page.evaluate("Array.from(document.scripts).every((s) => s.src && !s.textContent.trim())")
    assert page.evaluate("document.querySelectorAll('[style]').length") == 0
    assert page.evaluate("""Array.from(document.querySelectorAll('*'))
        .flatMap((el) => Array.from(el.attributes)).filter((a) => a.name.startsWith('on')).length""") == 0
    assert page.evaluate("Array.from(document.styleSheets).every((s) => s.href)")


def test_narrow_screen_has_no_horizontal_scroll(live_gateway, page, tmp_path):
    page.set_viewport_size({"width": 320, "height": 800})
    open_page(page, live_gateway.url)
    page.set_input_files("#file-input", str(make_sample("jpg", tmp_path)))
    expect(item_named(page, "sample.jpg")).to_have_attribute("data-state", "done")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_cancel_then_try_again(live_gateway, page, tmp_path):
    photo = noisy_jpeg(tmp_path / "slow.jpg", side=500)
    throttle_upload(page, 64 * 1024)
    open_page(page, live_gateway.url)
    page.set_input_files("#file-input", str(photo))
    item = item_named(page, "slow.jpg")
    expect(item.locator(".progress-text")).to_contain_text("/s")
    item.get_by_role("button", name="Cancel upload of slow.jpg").click()
    expect(item).to_have_attribute("data-state", "cancelled")
    retry = item.get_by_role("button", name="Try uploading slow.jpg again")
    expect(retry).to_be_focused()
    assert page.context.request.get(live_gateway.url + "/files").json()["files"] == []

    throttle_upload(page, -1)
    retry.click()
    expect(item).to_have_attribute("data-state", "done")
    expect(item.locator("[data-slot=sha256]")).to_have_text(hashlib.sha256(photo.read_bytes()).hexdigest())
    expect(page.locator("#recent-list > li")).to_have_count(1)


def test_validator_down_is_explained_and_can_be_retried(page, tmp_path, thumbnailer):
    from tests.conftest import free_port

    gateway = start_gateway_process(tmp_path / "data", f"127.0.0.1:{free_port()}", thumbnailer.address,
                                    HEALTH_TIMEOUT=0.2)
    try:
        page.goto(gateway.url + "/")
        expect(page.locator("#policy-error")).to_be_visible()
        expect(page.locator("#policy-summary")).to_have_text("The upload rules could not be loaded.")
        with page.expect_response(lambda response: urlparse(response.url).path == "/upload") as answer:
            page.set_input_files("#file-input", str(make_sample("jpg", tmp_path)))
        assert answer.value.status == 503
        item = item_named(page, "sample.jpg")
        expect(item).to_have_attribute("data-state", "failed")
        expect(item.locator(".item-error")).to_have_text(answer.value.json()["error"])
        expect(item.get_by_role("button", name="Try uploading sample.jpg again")).to_be_visible()
    finally:
        gateway.proc.terminate()
        gateway.proc.wait(timeout=15)


def test_the_page_is_served_with_a_strict_content_security_policy(client):
    policy = client.get("/").headers["Content-Security-Policy"]
    script_src = next(d for d in policy.split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and "'self'" in script_src
    assert "frame-ancestors 'none'" in policy

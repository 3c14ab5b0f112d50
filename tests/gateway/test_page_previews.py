"""PDFs, videos and HEIC/AVIF photos show in the upload page like images: a
thumbnail in their card and in the recent list (Debian's Chromium, Playwright)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.gateway.test_page import api_upload, item_named, open_page, recent_named
from tests.samples import make_sample

pytestmark = pytest.mark.timeout(60)

LOADED = "(img) => img.complete && img.naturalWidth > 0"


def test_pdf_video_and_heic_uploads_show_their_thumbnails(live_gateway, page, tmp_path):
    files = [make_sample(ext, tmp_path / ext) for ext in ("pdf", "mp4", "heic", "webm")]
    open_page(page, live_gateway.url)
    page.set_input_files("#file-input", [str(path) for path in files])
    for path in files:
        item = item_named(page, path.name)
        expect(item).to_have_attribute("data-state", "done")
        thumb = item.locator(".thumb img")
        expect(thumb).to_have_attribute("alt", f"Preview of {path.name}")
        page.wait_for_function(LOADED, arg=thumb.element_handle())
        recent = recent_named(page, path.name)
        expect(recent).to_have_count(1)
        page.wait_for_function(LOADED, arg=recent.locator(".thumb img").element_handle())
    # The card's preview is the server's thumbnail, the PDF's first page (portrait A4).
    size = page.evaluate("(img) => [img.naturalWidth, img.naturalHeight]",
                         item_named(page, "sample.pdf").locator(".thumb img").element_handle())
    assert size == [142, 200]
    page.screenshot(path=str(tmp_path / "previews.png"))


def test_a_late_video_thumbnail_is_fetched_again(live_gateway, page, tmp_path):
    """As for images: a video whose thumbnail was not ready is re-read until it has one."""
    video = make_sample("mp4", tmp_path).read_bytes()

    def without_thumbnail(route):
        # Playwright cannot forward an intercepted file body, so the file is sent from here.
        record = api_upload(page.context, live_gateway.url, "late.mp4", video, "video/mp4")
        assert record["thumbnail_url"]
        route.fulfill(status=201, json={**record, "thumbnail_url": None})

    page.route("**/upload", without_thumbnail)
    open_page(page, live_gateway.url)
    page.set_input_files("#file-input", files=[{"name": "late.mp4", "mimeType": "video/mp4", "buffer": video}])
    item = item_named(page, "late.mp4")
    expect(item).to_have_attribute("data-state", "done")
    page.wait_for_function(LOADED, arg=item.locator(".thumb img").element_handle(timeout=10_000))


def test_a_file_without_a_renderer_keeps_its_tile(live_gateway, page):
    api_upload(page.context, live_gateway.url, "notes.txt", b"plain words\n", "text/plain")
    open_page(page, live_gateway.url)
    expect(recent_named(page, "notes.txt").locator(".thumb-ext")).to_have_text("TXT")

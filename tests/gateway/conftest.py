"""Browser fixtures: Debian's Chromium driven by Playwright (never `playwright install`)."""
from __future__ import annotations

import os

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def launch_browser():
    """Start Playwright and Chromium; the caller closes the browser and stops Playwright."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except BaseException:
        playwright.stop()
        raise
    return playwright, browser


@pytest.fixture(scope="session")
def browser():
    pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    playwright, browser = launch_browser()
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def context(browser):
    """A fresh browser profile per test (no shared cookies, storage or cache)."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


_cdp_sessions: dict[int, object] = {}


def throttle_upload(page, bytes_per_second: int) -> None:
    """Slow this page's uploads down (Chromium's network emulation), so progress is visible;
    -1 lifts the limit. Emulation belongs to the CDP session that set it, so one is kept per page."""
    cdp = _cdp_sessions.get(id(page))
    if cdp is None:
        cdp = _cdp_sessions[id(page)] = page.context.new_cdp_session(page)
        page.on("close", lambda _: _cdp_sessions.pop(id(page), None))
        cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second,
    })


def emulate_offline(page, offline: bool, upload_bytes_per_second: int = -1) -> None:
    """Take this page's network away (navigator.onLine turns false, new requests fail) or give
    it back, through the same CDP session as throttle_upload (whose limit this replaces)."""
    if id(page) not in _cdp_sessions:
        throttle_upload(page, upload_bytes_per_second)
    _cdp_sessions[id(page)].send("Network.emulateNetworkConditions", {
        "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": upload_bytes_per_second,
    })

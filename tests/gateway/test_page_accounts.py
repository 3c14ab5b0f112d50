"""The page with accounts on (AUTH=token), in a real browser: sign in, upload,
make a share link with one click, open it in a fresh browser, see it expire."""
from __future__ import annotations

import hashlib
import json
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.accounts import ADMIN_TOKEN
from tests.conftest import start_gateway_process
from tests.gateway.test_page import FAKE_CLIPBOARD, item_named, noisy_jpeg, recent_named

pytestmark = pytest.mark.timeout(90)

SHARE_TTL = 4  # seconds: long enough to open the link, short enough to watch it expire


@pytest.fixture
def token_gateway(tmp_path, validator, thumbnailer):
    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address,
                                    AUTH="token", ADMIN_TOKEN=ADMIN_TOKEN, SHARE_TTL=SHARE_TTL)
    yield gateway
    gateway.proc.terminate()
    gateway.proc.wait(timeout=15)


def api_create_user(base_url: str, username: str, password: str) -> dict:
    request = urllib.request.Request(
        base_url + "/users", method="POST",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        return json.load(response)


def sign_in(page, base_url: str, username: str, password: str) -> None:
    page.goto(base_url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#account-name")).to_have_text(username)
    expect(page.locator("#policy-summary")).to_contain_text("Allowed types")


def test_sign_in_upload_share_and_see_the_link_expire(token_gateway, page, browser, tmp_path):
    base = token_gateway.url
    api_create_user(base, "alice", "alice password 1")
    photo = noisy_jpeg(tmp_path / "holiday.jpg", side=300)
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    page.add_init_script(FAKE_CLIPBOARD)

    # A wrong password keeps the form and says so.
    page.goto(base + "/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not her password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("username or password is not right")

    sign_in(page, base, "alice", "alice password 1")
    page.set_input_files("#file-input", str(photo))
    item = item_named(page, "holiday.jpg")
    expect(item).to_have_attribute("data-state", "done")  # the upload carried the CSRF token
    expect(item.locator("[data-slot=sha256]")).to_have_text(digest)
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0",
                           arg=item.locator(".thumb img").element_handle())

    item.get_by_role("button", name="Make a share link for holiday.jpg").click()
    url_box = item.locator("[data-slot=share-url]")
    page.wait_for_function("(el) => el.value.includes('/s/')", arg=url_box.element_handle())
    link = url_box.input_value()
    made = time.monotonic()
    assert link.startswith(base + "/s/")
    assert page.evaluate("window.__copied") == [link]
    expect(item.locator("[data-slot=share-expires]")).to_contain_text("Works without signing in until")

    # A fresh browser (no cookie, no token) downloads the exact bytes through the link...
    stranger = browser.new_context()
    try:
        response = stranger.request.get(link)
        assert response.status == 200
        assert response.headers["content-type"] == "image/jpeg"
        assert hashlib.sha256(response.body()).hexdigest() == digest
        # ...but nothing else: the file's own download URL wants a sign-in.
        record_url = item.locator("[data-slot=download]").get_attribute("href")
        assert stranger.request.get(base + record_url).status == 401

        # Once the link has expired, the same browser is refused with a sentence.
        time.sleep(max(0.0, SHARE_TTL + 0.5 - (time.monotonic() - made)))
        expired_page = stranger.new_page()
        response = expired_page.goto(link)
        assert response.status == 410
        expect(expired_page.locator("body")).to_contain_text("expired")
    finally:
        stranger.close()

    # Signing out leads back to the sign-in form; the files stay the user's.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.context.request.get(base + "/files").status == 401


def test_a_user_sees_only_their_own_recent_uploads(token_gateway, page, tmp_path):
    base = token_gateway.url
    alice = api_create_user(base, "alice", "alice password 1")
    api_create_user(base, "bob", "bob password 12")
    request = urllib.request.Request(
        base + "/upload", method="POST", data=(
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"alice-notes.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\nAlice's private notes.\n\r\n--b--\r\n"),
        headers={"Authorization": f"Bearer {alice['token']}", "Content-Type": "multipart/form-data; boundary=b"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201

    sign_in(page, base, "bob", "bob password 12")
    expect(page.locator("#recent-list")).to_have_attribute("aria-busy", "false")
    expect(recent_named(page, "alice-notes.txt")).to_have_count(0)
    expect(page.locator("#recent-empty")).to_be_visible()

"""GET /dashboard and GET /dashboard/data: the numbers follow real uploads, the
answers conform to the OpenAPI document, only admins see them with AUTH=token,
and the page (in a real browser, under the strict CSP) redraws itself."""
from __future__ import annotations

import io
import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from gateway.http.dashboard import WINDOW_MINUTES
from tests.accounts import ADMIN, TOKEN_SETTINGS, create_user
from tests.gateway.test_openapi import conforms
from tests.samples import MZ_HEADER

# Metadata on SQLite and PostgreSQL alike: the per-minute counts are the database's.
ON_BOTH_BACKENDS = True


def upload(client, name: str, data: bytes, headers=None):
    return client.post("/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data",
                       headers=headers or {})


def test_the_numbers_follow_uploads_and_refusals(client):
    before = client.get("/dashboard/data").get_json()
    assert upload(client, "a.txt", b"hello\n").status_code == 201
    assert upload(client, "b.txt", b"hello again\n").status_code == 201
    assert upload(client, "setup.exe", MZ_HEADER).status_code == 415
    response = client.get("/dashboard/data")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    after = response.get_json()

    assert len(after["per_minute"]) == after["window_minutes"] == WINDOW_MINUTES
    minutes = [datetime.fromisoformat(m["minute"]) for m in after["per_minute"]]
    assert all(later - earlier == minutes[1] - minutes[0] for earlier, later in zip(minutes, minutes[1:]))
    assert (minutes[1] - minutes[0]).total_seconds() == 60
    now = datetime.now(timezone.utc)
    assert minutes[-1] <= now and (now - minutes[-1]).total_seconds() < 120
    assert sum(m["uploads"] for m in after["per_minute"]) == after["window"]["uploads"] == 2
    assert after["window"]["bytes"] == len(b"hello\n") + len(b"hello again\n")
    assert after["stored"] == {"files": 2, "bytes": after["window"]["bytes"]}
    assert after["outcomes"]["stored"] - before["outcomes"]["stored"] == 2
    assert after["outcomes"]["refused"] - before["outcomes"]["refused"] == 1
    counts = {r["reason"]: r["count"] for r in after["refusals"]}
    was = {r["reason"]: r["count"] for r in before["refusals"]}
    assert counts["extension_not_allowed"] - was.get("extension_not_allowed", 0) == 1
    assert [r["count"] for r in after["refusals"]] == sorted((r["count"] for r in after["refusals"]), reverse=True)
    assert after["services"] == {"validator": "SERVING", "thumbnail": "SERVING"}
    assert after["thumbnails_pending"] == 0

    # A deleted file leaves the per-minute counts (they are the database's).
    file_id = client.get("/files").get_json()["files"][0]["id"]
    assert client.delete(f"/files/{file_id}").status_code == 204
    assert client.get("/dashboard/data").get_json()["window"]["uploads"] == 1


def test_polls_do_not_read_the_whole_files_table_each_time(client):
    """The stored totals are a count over the whole table: with many open pages polling every
    few seconds that is a scan of millions of rows each time. Only the first poll reads the
    whole table; later ones count the recent uploads (the uploaded_at index), and still see
    what is uploaded and deleted at once."""
    statements = []
    engine = client.application.extensions["files"].engine
    sa.event.listen(engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *args: statements.append(" ".join(statement.split())))

    def whole_table_reads() -> int:
        return sum(1 for s in statements if "count(" in s and re.search(r"\bFROM files\b", s) and " WHERE " not in s)

    old, new = b"before the first poll\n", b"after it\n"
    assert upload(client, "old.txt", old).status_code == 201
    assert client.get("/dashboard/data").get_json()["stored"] == {"files": 1, "bytes": len(old)}
    assert whole_table_reads() == 1
    assert upload(client, "new.txt", new).status_code == 201
    assert client.get("/dashboard/data").get_json()["stored"] == {"files": 2, "bytes": len(old) + len(new)}
    file_id = client.get("/files").get_json()["files"][0]["id"]
    assert client.delete(f"/files/{file_id}").status_code == 204
    for _ in range(3):
        assert client.get("/dashboard/data").get_json()["stored"] == {"files": 1, "bytes": len(old)}
    assert whole_table_reads() == 1


def test_answers_conform_to_the_openapi_document(client):
    spec = client.get("/openapi.json").get_json()
    upload(client, "a.txt", b"hello\n")
    conforms(spec, "GET", "/dashboard/data", client.get("/dashboard/data"))
    page = client.get("/dashboard")
    conforms(spec, "GET", "/dashboard", page)
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    html = page.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\sstyle=", html), "inline style"
    assert re.search(r'<script src="/static/dashboard\.js\?v=[0-9a-f]{12}" defer>', html)


# --- AUTH=token: admins only ---

@pytest.fixture
def token_client(make_app):
    return make_app(**TOKEN_SETTINGS).test_client()


def sign_in(client, username: str, password: str) -> str:
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["csrf_token"]


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/data", "/refusals"])
def test_without_credentials_it_is_401(token_client, path):
    response = token_client.get(path)
    assert response.status_code == 401 and response.get_json()["error"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/data", "/refusals"])
def test_a_user_who_is_not_an_admin_gets_403(token_client, make_app, path):
    alice = create_user(token_client, "alice", password="alice password 1")
    response = token_client.get(path, headers=alice["headers"])
    assert response.status_code == 403 and "admin" in response.get_json()["error"]
    browser = token_client.application.test_client()
    sign_in(browser, "alice", "alice password 1")
    assert browser.get(path).status_code == 403


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/data", "/refusals"])
def test_an_admin_sees_it_with_a_token_or_signed_in(token_client, path):
    assert token_client.get(path, headers=ADMIN).status_code == 200
    create_user(token_client, "root", admin=True, password="root password 1")
    browser = token_client.application.test_client()
    sign_in(browser, "root", "root password 1")
    assert browser.get(path).status_code == 200


def test_an_admin_sees_everyones_uploads(token_client):
    alice = create_user(token_client, "alice")
    assert upload(token_client, "a.txt", b"alice's\n", alice["headers"]).status_code == 201
    assert upload(token_client, "b.txt", b"admin's\n", ADMIN).status_code == 201
    data = token_client.get("/dashboard/data", headers=ADMIN).get_json()
    assert data["window"]["uploads"] == 2 and data["stored"]["files"] == 2


# --- in a real browser ---

@pytest.fixture
def csp_violations(page):
    seen = []
    page.on("console", lambda message: seen.append(message.text)
            if "Content Security Policy" in message.text else None)
    yield seen
    assert not seen, seen


@pytest.mark.timeout(90)
def test_the_page_redraws_itself_after_uploads(live_gateway, page, context, csp_violations):
    base = live_gateway.url
    page.goto(base + "/dashboard")
    expect(page.locator("#dashboard")).to_have_attribute("aria-busy", "false")
    expect(page.locator("#window-uploads")).to_have_text("0")
    expect(page.locator("#services li[data-service=validator] .badge")).to_have_text("up")
    expect(page.locator("#services li[data-service=thumbnail] .badge")).to_have_text("up")
    expect(page.locator("#refusals-empty")).to_be_visible()
    expect(page.locator("#recent-refusals-empty")).to_be_visible()
    assert page.locator("#per-minute-chart rect").count() == WINDOW_MINUTES
    requests_seen = []
    page.on("request", lambda request: requests_seen.append(request.url) if "/dashboard/data" in request.url else None)

    stored = context.request.post(base + "/upload", multipart={
        "file": {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"dashboard test\n" * 100}})
    assert stored.status == 201, stored.text()
    refused = context.request.post(base + "/upload", multipart={
        "file": {"name": "setup.exe", "mimeType": "application/octet-stream", "buffer": MZ_HEADER}})
    assert refused.status == 415

    # No reload: the page's own polling brings the new numbers.
    expect(page.locator("#window-uploads")).to_have_text("1", timeout=20_000)
    expect(page.locator("#window-bytes")).to_have_text("1.5 KiB")
    expect(page.locator("#stored-files")).to_have_text("1 file")
    expect(page.locator("#outcome-refused")).to_have_text("1")
    reason = page.locator("#refusals li[data-reason=extension_not_allowed]")
    expect(reason.locator(".count")).to_have_text("1")
    expect(page.locator("#refusals-empty")).to_be_hidden()
    recent = page.locator("#recent-refusals tr[data-code=extension_not_allowed] td")
    expect(recent.nth(1)).to_have_text("setup.exe")  # who, when, what, which rule: looked up
    expect(recent.nth(4)).to_have_text("validator_service.rules.filetypes")
    expect(page.locator("#recent-refusals-empty")).to_be_hidden()
    expect(page.locator("#per-minute-chart rect[data-value='1']")).to_have_count(1)
    assert requests_seen, "the page did not poll"
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded

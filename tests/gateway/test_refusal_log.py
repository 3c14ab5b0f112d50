"""Refusals can be looked up (gateway/metadata/refusals.py): every refusal the gateway answers
is recorded (who, when, which file, its size, which rule, why, how it came) and listed for
admins by GET /refusals and the dashboard, kept REFUSALS_KEEP_DAYS."""
from __future__ import annotations

import base64
import io
from datetime import datetime, timedelta, timezone

import pytest

from tests.accounts import ADMIN, TOKEN_SETTINGS, create_user
from tests.samples import MZ_HEADER

ON_BOTH_BACKENDS = True
PROGRAM = MZ_HEADER + bytes(300)


def upload(client, name: str, data: bytes, headers=None):
    return client.post("/upload", data={"file": (io.BytesIO(data), name)}, headers=headers or {})


def tus_upload(client, name: str, data: bytes, headers=None):
    headers = {"Tus-Resumable": "1.0.0", **(headers or {})}
    created = client.post("/tus/", headers={**headers, "Upload-Length": str(len(data)),
                                            "Upload-Metadata": "filename " + base64.b64encode(name.encode()).decode()})
    assert created.status_code == 201, created.get_json()
    return client.patch(created.headers["Location"], data=data, headers={
        **headers, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})


def test_refusals_by_multipart_and_tus_are_listed_newest_first(client):
    assert upload(client, "photo.jpg", PROGRAM).status_code == 415
    assert tus_upload(client, "setup.jpg", PROGRAM).status_code == 415
    assert upload(client, "notes.txt", b"fine\n").status_code == 201  # not a refusal: not listed
    listed = client.get("/refusals").get_json()
    assert listed["next_cursor"] is None
    newest, oldest = listed["refusals"]
    assert (newest["original_name"], newest["via"], newest["size"]) == ("setup.jpg", "tus", len(PROGRAM))
    assert (oldest["original_name"], oldest["via"]) == ("photo.jpg", "upload")
    for refusal in (newest, oldest):
        assert refusal["code"] == "executable_content" and refusal["rule"] == "validator_service.rules.content"
        assert refusal["user_id"] is None  # AUTH=off
        assert datetime.fromisoformat(refusal["refused_at"]) > datetime.now(timezone.utc) - timedelta(minutes=1)
    # The dashboard shows the latest too.
    assert [r["id"] for r in client.get("/dashboard/data").get_json()["recent_refusals"]] == \
        [newest["id"], oldest["id"]]


def test_the_gateways_own_refusals_are_listed_without_a_rule(make_app):
    client = make_app(MAX_REQUEST_SIZE=1000).test_client()
    assert upload(client, "big.txt", b"x" * 5000).status_code == 413
    [refusal] = client.get("/refusals").get_json()["refusals"]
    assert (refusal["code"], refusal["rule"]) == ("file_too_large", "")


def test_the_listing_is_paged(client):
    for n in range(3):
        assert upload(client, f"p{n}.jpg", PROGRAM).status_code == 415
    first = client.get("/refusals?limit=2").get_json()
    second = client.get(f"/refusals?limit=2&cursor={first['next_cursor']}").get_json()
    names = [r["original_name"] for r in first["refusals"] + second["refusals"]]
    assert names == ["p2.jpg", "p1.jpg", "p0.jpg"] and second["next_cursor"] is None
    assert client.get("/refusals?cursor=nonsense").status_code == 400


def test_old_refusals_are_forgotten_and_none_kept_with_keep_days_0(make_app):
    app = make_app(REFUSALS_KEEP_DAYS=1)
    log = app.extensions["refusals"]
    log.add("old.jpg", "content_mismatch", now=datetime.now(timezone.utc) - timedelta(days=2))
    client = app.test_client()
    assert upload(client, "new.jpg", PROGRAM).status_code == 415
    assert [r["original_name"] for r in client.get("/refusals").get_json()["refusals"]] == ["new.jpg"]
    off = make_app(REFUSALS_KEEP_DAYS=0).test_client()
    assert upload(off, "new.jpg", PROGRAM).status_code == 415
    assert off.get("/refusals").get_json()["refusals"] == []


def test_refusals_past_keep_days_are_not_listed_even_with_none_since(make_app):
    # Forgotten at the next refusal; until then they are still in the table, not in the listing.
    app = make_app(REFUSALS_KEEP_DAYS=1)
    app.extensions["refusals"].add("old.jpg", "content_mismatch", now=datetime.now(timezone.utc) - timedelta(days=2))
    assert app.test_client().get("/refusals").get_json()["refusals"] == []


@pytest.fixture
def token_client(make_app):
    return make_app(**TOKEN_SETTINGS).test_client()


def test_with_accounts_each_refusal_names_its_user_and_only_admins_list_them(token_client):
    alice = create_user(token_client, "alice", password="alice password 1")
    assert upload(token_client, "photo.jpg", PROGRAM, alice["headers"]).status_code == 415
    assert token_client.get("/refusals").status_code == 401
    assert token_client.get("/refusals", headers=alice["headers"]).status_code == 403
    [refusal] = token_client.get("/refusals", headers=ADMIN).get_json()["refusals"]
    assert refusal["user_id"] == alice["id"]

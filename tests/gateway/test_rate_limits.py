"""Rate limits (AUTH=token, Flask-Limiter): uploads per user and per IP address
(POST /upload and POST /tus/ share one budget), sign-in attempts per IP; a
request over a limit answers 429 JSON with a sentence and Retry-After. With
AUTH=off there are no limits.

Real app, real gRPC services, real SQLite: nothing is mocked.
"""
from __future__ import annotations

import base64
import io
from urllib.parse import urlsplit

import pytest

from tests.accounts import ADMIN, TOKEN_SETTINGS, create_user

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
DATA = b"a few words of plain text for the rate limit tests\n"
HOME = "10.1.1.1"


def at(address: str) -> dict:
    return {"environ_base": {"REMOTE_ADDR": address}}


def post_upload(client, headers: dict, name: str = "notes.txt", address: str = HOME):
    return client.post("/upload", data={"file": (io.BytesIO(DATA), name)}, content_type="multipart/form-data",
                       headers=headers, **at(address))


def tus_create(client, headers: dict, length: int = len(DATA), address: str = HOME):
    h = {**TUS, **headers, "Upload-Length": str(length),
         "Upload-Metadata": "filename " + base64.b64encode(b"notes.txt").decode()}
    return client.post("/tus/", headers=h, **at(address))


def assert_limited(response):
    assert response.status_code == 429, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.is_json
    error = response.get_json()["error"]
    assert isinstance(error, str) and "too many" in error.lower() and error.rstrip().endswith("."), error
    retry_after = response.headers.get("Retry-After")
    assert retry_after is not None, dict(response.headers)
    assert retry_after.isdigit(), retry_after
    assert 0 < int(retry_after) <= 60


def listed(client, headers: dict) -> list[str]:
    return [r["id"] for r in client.get("/files?limit=200", headers=headers).get_json()["files"]]


@pytest.fixture
def limited_app(make_app):
    def make(**limits):
        return make_app(**{**TOKEN_SETTINGS, **limits})
    return make


# ---------------------------------------------------------------- per user


def test_the_fourth_upload_by_one_user_is_429_with_retry_after(limited_app):
    app = limited_app(RATE_LIMIT_UPLOADS="3/minute")
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    for i in range(3):
        assert post_upload(client, alice, f"f{i}.txt").status_code == 201
    response = post_upload(client, alice, "f3.txt")
    assert_limited(response)
    assert "upload" in response.get_json()["error"].lower()
    # Refused before anything was stored.
    assert len(listed(client, alice)) == 3
    # Still refused on the next try, and from another address too: the limit is the user's.
    assert_limited(post_upload(client, alice, "f4.txt"))
    assert_limited(post_upload(client, alice, "f5.txt", address="10.9.9.9"))


def test_another_user_is_not_affected_by_the_per_user_limit(limited_app):
    app = limited_app(RATE_LIMIT_UPLOADS="3/minute")
    client = app.test_client()
    alice, bob = create_user(client, "alice")["headers"], create_user(client, "bob")["headers"]
    for _ in range(3):
        assert post_upload(client, alice).status_code == 201
    assert_limited(post_upload(client, alice))
    for _ in range(3):
        assert post_upload(client, bob).status_code == 201  # same address, own budget
    assert_limited(post_upload(client, bob))


def test_tus_creation_counts_against_the_same_upload_budget(limited_app):
    app = limited_app(RATE_LIMIT_UPLOADS="3/minute")
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    assert post_upload(client, alice).status_code == 201
    created = tus_create(client, alice)
    assert created.status_code == 201
    assert post_upload(client, alice).status_code == 201

    refused = tus_create(client, alice)
    assert_limited(refused)
    assert "Location" not in refused.headers
    assert refused.headers.get("Tus-Resumable") == "1.0.0"
    assert_limited(post_upload(client, alice))

    # Writing to an upload already made is not a new upload: PATCH and HEAD go on.
    path = urlsplit(created.headers["Location"]).path
    patch = client.patch(path, data=DATA, content_type=OFFSET_STREAM,
                         headers={**TUS, **alice, "Upload-Offset": "0"}, **at(HOME))
    assert patch.status_code == 204
    assert patch.headers["Upload-File-Id"] in listed(client, alice)
    assert client.head(path, headers={**TUS, **alice}, **at(HOME)).status_code == 200


def test_tus_creations_alone_hit_the_limit(limited_app):
    app = limited_app(RATE_LIMIT_UPLOADS="2/minute")
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    assert tus_create(client, alice).status_code == 201
    assert tus_create(client, alice).status_code == 201
    assert_limited(tus_create(client, alice))
    assert_limited(post_upload(client, alice))


def test_reading_and_listing_are_not_limited(limited_app):
    app = limited_app(RATE_LIMIT_UPLOADS="1/minute", RATE_LIMIT_UPLOADS_PER_IP="1/minute")
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    record = post_upload(client, alice).get_json()
    assert_limited(post_upload(client, alice))
    for _ in range(10):
        assert client.get("/files", headers=alice, **at(HOME)).status_code == 200
        assert client.get(record["download_url"], headers=alice, **at(HOME)).status_code == 200
    assert client.delete(f"/files/{record['id']}", headers=alice, **at(HOME)).status_code == 204


def test_admins_are_limited_like_everyone(limited_app):
    app = limited_app(RATE_LIMIT_UPLOADS="2/minute")
    client = app.test_client()
    for _ in range(2):
        assert post_upload(client, ADMIN).status_code == 201
    assert_limited(post_upload(client, ADMIN))


# ---------------------------------------------------------------- per IP


def test_the_per_ip_limit_counts_every_user_from_one_address(limited_app):
    app = limited_app(RATE_LIMIT_UPLOADS_PER_IP="3/minute")
    client = app.test_client()
    users = [create_user(client, name)["headers"] for name in ("alice", "bob", "carol", "dave")]
    for headers in users[:3]:
        assert post_upload(client, headers, address="192.0.2.10").status_code == 201
    response = post_upload(client, users[3], address="192.0.2.10")
    assert_limited(response)
    assert "address" in response.get_json()["error"].lower()
    assert_limited(tus_create(client, users[0], address="192.0.2.10"))
    # The same users from another address are fine.
    assert post_upload(client, users[3], address="192.0.2.11").status_code == 201
    assert tus_create(client, users[0], address="192.0.2.11").status_code == 201


def test_requests_that_fail_to_authenticate_do_not_use_up_the_address_budget(limited_app):
    app = limited_app(RATE_LIMIT_UPLOADS_PER_IP="3/minute")
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    for headers in ({}, {"Authorization": "Bearer ust_not-a-real-token"}) * 3:
        assert post_upload(client, headers, address="192.0.2.20").status_code == 401
    for _ in range(3):
        assert post_upload(client, alice, address="192.0.2.20").status_code == 201
    assert_limited(post_upload(client, alice, address="192.0.2.20"))


def test_both_limits_at_once(limited_app):
    app = limited_app(RATE_LIMIT_UPLOADS="2/minute", RATE_LIMIT_UPLOADS_PER_IP="100/minute")
    client = app.test_client()
    alice, bob = create_user(client, "alice")["headers"], create_user(client, "bob")["headers"]
    for _ in range(2):
        assert post_upload(client, alice).status_code == 201
    assert_limited(post_upload(client, alice))
    assert post_upload(client, bob).status_code == 201


# ---------------------------------------------------------------- sign-in


def test_sign_in_attempts_are_limited_per_address(limited_app):
    app = limited_app(RATE_LIMIT_LOGIN="3/minute")
    client = app.test_client()
    create_user(client, "alice", password="correct horse battery")
    for _ in range(3):
        wrong = client.post("/login", json={"username": "alice", "password": "not the password"},
                            **at("198.51.100.7"))
        assert wrong.status_code == 401
    response = client.post("/login", json={"username": "alice", "password": "correct horse battery"},
                           **at("198.51.100.7"))
    assert_limited(response)
    assert "sign-in" in response.get_json()["error"].lower()
    # The right password from another address still signs in.
    other = app.test_client()
    ok = other.post("/login", json={"username": "alice", "password": "correct horse battery"},
                    **at("198.51.100.8"))
    assert ok.status_code == 200
    assert ok.get_json()["username"] == "alice"


def test_the_login_limit_does_not_touch_uploads(limited_app):
    app = limited_app(RATE_LIMIT_LOGIN="1/minute")
    client = app.test_client()
    alice = create_user(client, "alice", password="correct horse battery")["headers"]
    client.post("/login", json={"username": "alice", "password": "nope nope"}, **at(HOME))
    assert_limited(client.post("/login", json={"username": "alice", "password": "nope nope"}, **at(HOME)))
    for _ in range(3):
        assert post_upload(client, alice).status_code == 201


# ---------------------------------------------------------------- AUTH=off


def test_with_auth_off_there_are_no_limits(make_app):
    app = make_app(RATE_LIMIT_UPLOADS="2/minute", RATE_LIMIT_UPLOADS_PER_IP="2/minute", RATE_LIMIT_LOGIN="1/minute")
    client = app.test_client()
    for i in range(8):
        assert post_upload(client, {}, f"f{i}.txt").status_code == 201
    for _ in range(3):
        assert tus_create(client, {}).status_code == 201
    assert len(listed(client, {})) == 8

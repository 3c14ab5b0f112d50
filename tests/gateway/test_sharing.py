"""Share links: POST /files/<id>/share -> a signed, expiring URL that downloads
the file with no credentials; tampered 403, expired 410, deleted file 404.

Real app, real gRPC services, real SQLite: nothing is mocked.
"""
from __future__ import annotations

import hashlib
import io
import re
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from itsdangerous import URLSafeSerializer

from tests.accounts import ADMIN, TOKEN_SETTINGS, create_user
from tests.samples import make_sample

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(client, name: str, data: bytes, headers: dict | None = None) -> dict:
    response = client.post("/upload", data={"file": (io.BytesIO(data), name)},
                           content_type="multipart/form-data", headers=headers or {})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def share(client, file_id: str, headers: dict | None = None, **kwargs):
    return client.post(f"/files/{file_id}/share", headers=headers or {}, **kwargs)


def share_url(client, file_id: str, headers: dict | None = None, **kwargs) -> str:
    response = share(client, file_id, headers, **kwargs)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["url"]


def path_of(url: str) -> str:
    return urlsplit(url).path


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_json_error(response, status: int):
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.is_json
    error = response.get_json()["error"]
    assert isinstance(error, str) and len(error) > 10


@pytest.fixture
def token_app(make_app):
    return make_app(**TOKEN_SETTINGS, SHARE_TTL=3600, SHARE_MAX_TTL=7200)


@pytest.fixture
def owner(token_app):
    return create_user(token_app.test_client(), "alice")


@pytest.fixture
def image(tmp_path) -> bytes:
    return make_sample("png", tmp_path).read_bytes()


@pytest.fixture
def shared(token_app, owner, image):
    """Alice's image and a share link to it."""
    client = token_app.test_client()
    record = upload(client, "holiday.png", image, owner["headers"])
    return record, share_url(client, record["id"], owner["headers"], json={"expires_in": 600})


# ---------------------------------------------------------------- making and using a link


def test_share_answers_201_with_url_and_expiry(token_app, owner, image):
    client = token_app.test_client()
    record = upload(client, "holiday.png", image, owner["headers"])
    before = datetime.now(timezone.utc)
    response = share(client, record["id"], owner["headers"], json={"expires_in": 600})
    after = datetime.now(timezone.utc)
    assert response.status_code == 201
    body = response.get_json()
    # The contract's url and expires_at, and what lists and revokes it.
    assert set(body) == {"id", "file_id", "url", "created_at", "expires_at", "created_by"}
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert body["file_id"] == record["id"] and body["created_by"] == owner["id"]
    url = urlsplit(body["url"])
    assert url.scheme in ("http", "https") and url.netloc, "the url should be absolute, ready to hand out"
    assert url.path.startswith("/s/")
    expires_at = parse_iso(body["expires_at"])
    assert expires_at.tzinfo is not None
    assert before + timedelta(seconds=599) <= expires_at <= after + timedelta(seconds=601)


def test_the_link_downloads_the_exact_bytes_without_credentials(token_app, shared, image):
    record, url = shared
    stranger = token_app.test_client()  # no token, no cookie
    assert stranger.get(record["download_url"]).status_code == 401
    response = stranger.get(path_of(url))
    assert response.status_code == 200
    assert response.data == image
    assert sha256(response.data) == record["sha256"]
    assert response.mimetype == "image/png"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # The link is the credential: not in Referer headers, not in shared caches.
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "no-store" in response.headers["Cache-Control"]
    assert "public" not in response.headers["Cache-Control"]


def test_the_link_works_with_the_full_url_too(token_app, shared, image):
    _, url = shared
    assert token_app.test_client().get(url).data == image


def test_a_link_for_a_type_a_browser_would_run_is_an_attachment_in_a_sandbox(token_app, owner, tmp_path):
    client = token_app.test_client()
    svg = make_sample("svg", tmp_path).read_bytes()
    record = upload(client, "drawing.svg", svg, owner["headers"])
    response = token_app.test_client().get(path_of(share_url(client, record["id"], owner["headers"])))
    assert response.status_code == 200
    assert response.data == svg
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_range_requests_work_on_a_link(token_app, shared, image):
    _, url = shared
    stranger = token_app.test_client()
    response = stranger.get(path_of(url), headers={"Range": "bytes=10-29"})
    assert response.status_code == 206
    assert response.data == image[10:30]
    assert response.headers["Content-Range"] == f"bytes 10-29/{len(image)}"
    tail = stranger.get(path_of(url), headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.data == image[-5:]
    beyond = stranger.get(path_of(url), headers={"Range": f"bytes={len(image) + 10}-"})
    assert beyond.status_code == 416


def test_head_on_a_link(token_app, shared, image):
    _, url = shared
    response = token_app.test_client().head(path_of(url))
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(image)
    assert response.data == b""


def test_default_lifetime_is_share_ttl(token_app, owner, image):
    client = token_app.test_client()
    record = upload(client, "x.png", image, owner["headers"])
    for kwargs in ({}, {"json": {}}):
        before = datetime.now(timezone.utc)
        response = share(client, record["id"], owner["headers"], **kwargs)
        after = datetime.now(timezone.utc)
        assert response.status_code == 201, response.get_json()
        expires_at = parse_iso(response.get_json()["expires_at"])
        assert before + timedelta(seconds=3599) <= expires_at <= after + timedelta(seconds=3601)


def test_share_max_ttl_itself_is_allowed(token_app, owner, image):
    client = token_app.test_client()
    record = upload(client, "x.png", image, owner["headers"])
    response = share(client, record["id"], owner["headers"], json={"expires_in": 7200})
    assert response.status_code == 201
    expires_at = parse_iso(response.get_json()["expires_at"])
    assert abs((expires_at - datetime.now(timezone.utc)).total_seconds() - 7200) < 5


def test_a_link_lives_as_long_as_asked(token_app, owner, image):
    """Neither cut to the whole second below (a short link could be dead before
    anyone can use it) nor stretched past what was asked."""
    client = token_app.test_client()
    record = upload(client, "x.png", image, owner["headers"])
    for _ in range(3):
        before = time.time()
        response = share(client, record["id"], owner["headers"], json={"expires_in": 2})
        after = time.time()
        expires_at = parse_iso(response.get_json()["expires_at"]).timestamp()
        assert before + 2 <= expires_at <= after + 2
        link = token_app.test_client().get(path_of(response.get_json()["url"]))
        assert link.status_code == 200
        time.sleep(0.3)


@pytest.mark.parametrize("body", [
    {"expires_in": 0}, {"expires_in": -1}, {"expires_in": -3600}, {"expires_in": 1.5}, {"expires_in": 60.0},
    {"expires_in": "60"}, {"expires_in": "soon"}, {"expires_in": None}, {"expires_in": True},
    {"expires_in": False}, {"expires_in": 7201}, {"expires_in": 10 ** 30}, {"expires_in": [60]},
    {"expires_in": {"seconds": 60}},
])
def test_bad_expires_in_is_400_json(token_app, owner, image, body):
    client = token_app.test_client()
    record = upload(client, "x.png", image, owner["headers"])
    response = share(client, record["id"], owner["headers"], json=body)
    assert_json_error(response, 400)
    assert "expires_in" in response.get_json()["error"]


@pytest.mark.parametrize("raw,content_type", [
    (b"[60]", "application/json"), (b'"60"', "application/json"), (b"{not json", "application/json"),
    (b"expires_in=60", "application/x-www-form-urlencoded"),
])
def test_a_body_that_is_not_a_json_object_is_400(token_app, owner, image, raw, content_type):
    client = token_app.test_client()
    record = upload(client, "x.png", image, owner["headers"])
    response = share(client, record["id"], owner["headers"], data=raw, content_type=content_type)
    assert_json_error(response, 400)


def test_sharing_an_unknown_file_is_404(token_app, owner):
    client = token_app.test_client()
    for file_id in ("0" * 32, "nope"):
        assert_json_error(share(client, file_id, owner["headers"]), 404)


def test_an_admin_can_share_anyones_file(token_app, owner, image):
    client = token_app.test_client()
    record = upload(client, "x.png", image, owner["headers"])
    url = share_url(client, record["id"], ADMIN)
    assert token_app.test_client().get(path_of(url)).data == image


# ---------------------------------------------------------------- tampering, expiry, deletion


def test_changing_one_character_of_the_signature_is_403(token_app, shared):
    _, url = shared
    token = path_of(url).rsplit("/", 1)[1]
    payload, signature = token.rsplit(".", 1)
    stranger = token_app.test_client()
    # The first and a middle character: each carries six bits of the MAC (the
    # last one carries padding bits too, so some changes there decode the same).
    for index in (0, len(signature) // 2):
        ch = signature[index]
        changed = signature[:index] + ("A" if ch != "A" else "B") + signature[index + 1:]
        response = stranger.get(f"/s/{payload}.{changed}")
        assert_json_error(response, 403)


def test_changing_the_payload_is_403(token_app, owner, shared, image):
    record, url = shared
    token = path_of(url).rsplit("/", 1)[1]
    _, signature = token.rsplit(".", 1)
    client = token_app.test_client()
    other = upload(client, "other.txt", b"another file of alice\n", owner["headers"])
    # Payloads do not depend on the key: made with a made-up one, they are what an attacker can write.
    forger = URLSafeSerializer("not the server's key", salt="share-link-v1")
    later = int(time.time()) + 10 ** 6
    for forged in ([record["id"], later], [other["id"], later]):
        payload = forger.dumps(forged).rsplit(".", 1)[0]
        assert_json_error(client.get(f"/s/{payload}.{signature}"), 403)
    # A link signed with another key entirely, and links cut short or made up.
    assert_json_error(client.get(f"/s/{forger.dumps([record['id'], later])}"), 403)
    for broken in (token[:-3], token.rsplit(".", 1)[0], "garbage", "a.b", "." * 5):
        assert_json_error(client.get(f"/s/{broken}"), 403)
    # The genuine link still works.
    assert client.get(path_of(url)).data == image


def test_an_expired_link_is_410(token_app, owner, image):
    client = token_app.test_client()
    record = upload(client, "x.png", image, owner["headers"])
    body = share(client, record["id"], owner["headers"], json={"expires_in": 1}).get_json()
    time.sleep(max(1.2, parse_iso(body["expires_at"]).timestamp() - time.time() + 0.2))
    response = token_app.test_client().get(path_of(body["url"]))
    assert_json_error(response, 410)
    assert response.data != image
    # The file itself is untouched, and a new link works.
    assert client.get(record["download_url"], headers=owner["headers"]).data == image
    assert token_app.test_client().get(path_of(share_url(client, record["id"], owner["headers"]))).data == image


def test_deleting_the_file_kills_the_link_with_404(token_app, owner, shared):
    record, url = shared
    client = token_app.test_client()
    assert client.get(path_of(url)).status_code == 200
    assert client.delete(f"/files/{record['id']}", headers=owner["headers"]).status_code == 204
    assert_json_error(client.get(path_of(url)), 404)
    assert_json_error(client.get(path_of(url), headers={"Range": "bytes=0-9"}), 404)


def test_a_link_ignores_a_bogus_session_cookie(token_app, shared, image):
    """A link is not tied to a session: a client with a bogus cookie jar still gets the file."""
    _, url = shared
    stranger = token_app.test_client()
    stranger.set_cookie("upload_session", "not-a-real-session", domain="localhost")
    response = stranger.get(path_of(url))
    assert response.status_code == 200 and response.data == image


# ---------------------------------------------------------------- AUTH=off, other servers


def test_share_links_work_with_auth_off(client, tmp_path):
    data = make_sample("pdf", tmp_path).read_bytes()
    record = upload(client, "paper.pdf", data)
    response = share(client, record["id"], json={"expires_in": 60})
    assert response.status_code == 201
    link = client.application.test_client().get(path_of(response.get_json()["url"]))
    assert link.status_code == 200
    assert link.data == data
    assert link.mimetype == "application/pdf"
    assert link.headers["X-Content-Type-Options"] == "nosniff"
    assert client.delete(f"/files/{record['id']}").status_code == 204
    assert client.get(path_of(response.get_json()["url"])).status_code == 404


def test_a_link_from_one_server_fails_the_signature_on_a_server_with_another_key(make_app, image):
    first = make_app(SECRET_KEY="first secret key, long enough to be real")
    record = upload(first.test_client(), "x.png", image)
    url = share_url(first.test_client(), record["id"])
    assert first.test_client().get(path_of(url)).data == image

    other = make_app(SECRET_KEY="a different secret key for another server")
    assert_json_error(other.test_client().get(path_of(url)), 403)
    # The same key on another data folder accepts the signature; the file is just not there.
    same_key = make_app(SECRET_KEY="first secret key, long enough to be real")
    assert_json_error(same_key.test_client().get(path_of(url)), 404)


def test_without_secret_key_each_database_has_its_own_and_it_survives_a_restart(make_app, image, tmp_path):
    first = make_app(**TOKEN_SETTINGS)
    client = first.test_client()
    user = create_user(client, "alice")
    record = upload(client, "x.png", image, user["headers"])
    url = share_url(client, record["id"], user["headers"])
    # Another server with its own database made its own random key.
    stranger = make_app(**TOKEN_SETTINGS)
    assert_json_error(stranger.test_client().get(path_of(url)), 403)
    # The same database (a restart, or a second gateway sharing it) keeps the key.
    again = make_app(**TOKEN_SETTINGS, DATA_DIR=first.config["DATA_DIR"], DATABASE_URL=first.config["DATABASE_URL"])
    assert again.test_client().get(path_of(url)).data == image


@pytest.mark.parametrize("payload", [
    "just a string", {"id": "x"}, [1, 2, 3], [], ["0" * 32, "tomorrow"], ["0" * 32, None],
    [["0" * 32], 4102444800], [{"id": 1}, 4102444800], [12345, 4102444800], ["0" * 32, float("inf")],
])
def test_a_correctly_signed_token_that_is_not_a_share_link_is_403(token_app, payload):
    """Signed with the server's own key and salt (so the signature passes), but not the
    [file id, expiry] a share link carries: refused as invalid, never a 500."""
    with token_app.app_context():
        token = URLSafeSerializer(token_app.secret_key, salt="share-link-v1").dumps(payload)
    response = token_app.test_client().get(f"/s/{token}")
    assert_json_error(response, 403)


def test_an_expired_file_cannot_be_shared_and_its_links_answer_410(token_app, owner, image):
    client = token_app.test_client()
    record = upload(client, "x.png", image, owner["headers"])
    url = share_url(client, record["id"], owner["headers"], json={"expires_in": 3600})
    token_app.extensions["files"].set_expires_at([record["id"]], datetime.now(timezone.utc))
    assert_json_error(share(client, record["id"], owner["headers"]), 410)
    assert_json_error(token_app.test_client().get(path_of(url)), 410)
    page = token_app.test_client().get(path_of(url), headers={"Accept": "text/html"})
    assert page.status_code == 410 and page.mimetype == "text/html"
    assert b"expired" in page.data


def test_deleting_the_owner_ends_their_links(token_app, owner, shared):
    from tests.accounts import ADMIN

    record, url = shared
    client = token_app.test_client()
    assert client.get(path_of(url)).status_code == 200
    assert client.delete(f"/users/{owner['id']}", headers=ADMIN).status_code == 204
    assert_json_error(client.get(path_of(url)), 404)


def test_links_use_public_url_not_the_requests_host(make_app, image):
    from tests.accounts import TOKEN_SETTINGS, create_user

    app = make_app(**TOKEN_SETTINGS, PUBLIC_URL="https://files.example.org/")
    client = app.test_client()
    alice = create_user(client, "alice")
    record = upload(client, "x.png", image, alice["headers"])
    body = client.post(f"/files/{record['id']}/share", json={},
                       headers={**alice["headers"], "Host": "evil.example"}).get_json()
    assert body["url"].startswith("https://files.example.org/s/")
    assert app.test_client().get(path_of(body["url"])).data == image

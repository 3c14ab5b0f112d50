"""AUTH=token: who may call what, users and tokens through the API, secrets at
rest, and browser sessions (cookie flags, CSRF, sign-out).

Real app, real gRPC services, real SQLite: nothing is mocked.
"""
from __future__ import annotations

import base64
import io
import re
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.accounts import ADMIN, ADMIN_TOKEN, TOKEN_SETTINGS, bearer, create_user
from tests.samples import make_sample

PASSWORD = "correct horse battery staple"
TUS = {"Tus-Resumable": "1.0.0"}


# --- helpers ---

@pytest.fixture
def token_app(make_app):
    return make_app(**TOKEN_SETTINGS)


@pytest.fixture
def api(token_app):
    return token_app.test_client()


def upload(client, name: str, data: bytes, headers: dict | None = None, **kwargs):
    return client.post("/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data",
                       headers=headers or {}, **kwargs)


def tus_create(client, headers: dict, length: int = 10, name: str = "t.txt"):
    meta = "filename " + base64.b64encode(name.encode()).decode()
    response = client.post("/tus/", headers={**TUS, **headers, "Upload-Length": str(length),
                                             "Upload-Metadata": meta})
    assert response.status_code == 201, response.get_data(as_text=True)
    return urlsplit(response.headers["Location"]).path


def assert_401(response, what: str):
    assert response.status_code == 401, f"{what}: {response.status_code} {response.get_data(as_text=True)[:200]}"
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), what
    if response.request.method != "HEAD":
        body = response.get_json(silent=True)
        assert isinstance(body, dict) and isinstance(body.get("error"), str), what
        assert len(body["error"].split()) >= 3 and body["error"].rstrip().endswith("."), f"{what}: {body}"


def csp_directives(response) -> dict[str, str]:
    policy = response.headers.get("Content-Security-Policy", "")
    out = {}
    for part in policy.split(";"):
        part = part.strip()
        if part:
            name, _, value = part.partition(" ")
            out[name] = value
    return out


def assert_strict_csp(response):
    directives = csp_directives(response)
    assert "script-src" in directives or "default-src" in directives, response.headers
    script_src = directives.get("script-src", directives.get("default-src"))
    assert "'unsafe-inline'" not in script_src
    assert "frame-ancestors" in directives


def form_csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the form carries no csrf_token"
    return found.group(1)


def meta_csrf(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert found, "the page carries no csrf-token meta tag"
    return found.group(1)


def sign_in(client, username: str, password: str = PASSWORD, **kwargs) -> str:
    """Sign in through the form, as a browser does; returns the session's CSRF token."""
    token = form_csrf(client.get("/login", **kwargs).get_data(as_text=True))
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                           **kwargs)
    assert response.status_code == 303, response.get_data(as_text=True)
    return meta_csrf(client.get("/", **kwargs).get_data(as_text=True))


def session_cookie(client):
    return client.get_cookie("upload_session")


def set_cookie_header(response) -> str:
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("upload_session=")]
    assert len(headers) == 1, response.headers
    return headers[0]


def cookie_attributes(header: str) -> set[str]:
    return {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}


@pytest.fixture
def world(api, tmp_path):
    """Alice with a stored image (with a thumbnail), a second token and a tus upload in progress."""
    alice = create_user(api, "alice", password=PASSWORD)
    rec = upload(api, "photo.png", make_sample("png", tmp_path).read_bytes(), alice["headers"])
    assert rec.status_code == 201, rec.get_json()
    rec = rec.get_json()
    assert rec["thumbnail_url"]
    extra = api.post("/tokens", json={"name": "spare"}, headers=alice["headers"]).get_json()
    tus_path = tus_create(api, alice["headers"])
    link = api.post(f"/files/{rec['id']}/share", json={}, headers=alice["headers"]).get_json()
    return {"alice": alice, "record": rec, "extra_token": extra, "tus": tus_path, "link": link}


def protected_requests(world) -> list[tuple[str, str, dict]]:
    """(method, path, request kwargs) for every endpoint that needs credentials."""
    rec, tus = world["record"], world["tus"]
    multipart = {"data": {"file": (io.BytesIO(b"hello there\n"), "new.txt")}, "content_type": "multipart/form-data"}
    return [
        ("GET", "/files", {}),
        ("GET", f"/files/{rec['id']}", {}),
        ("GET", rec["download_url"], {}),
        ("GET", rec["thumbnail_url"], {}),
        ("GET", "/me", {}),
        ("GET", "/users", {}),
        ("GET", "/tokens", {}),
        ("GET", "/shares", {}),
        ("GET", f"/files/{rec['id']}/shares", {}),
        ("HEAD", tus, {}),
        ("POST", "/upload", multipart),
        ("POST", f"/files/{rec['id']}/share", {"json": {"expires_in": 60}}),
        ("POST", "/users", {"json": {"username": "mallory"}}),
        ("POST", "/tokens", {"json": {"name": "sneaky"}}),
        ("POST", "/tus/", {"headers": {"Upload-Length": "5", "Upload-Metadata": "filename YS50eHQ="}}),
        ("PATCH", tus, {"headers": {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
                        "data": b"0123456789"}),
        # Destructive ones last (the request list is also replayed with the right token).
        ("DELETE", tus, {}),
        ("DELETE", f"/tokens/{world['extra_token']['id']}", {}),
        ("DELETE", f"/shares/{world['link']['id']}", {}),
        ("DELETE", f"/files/{rec['id']}", {}),
        ("DELETE", f"/users/{world['alice']['id']}", {}),
    ]


def fresh_kwargs(kwargs: dict) -> dict:
    """Request kwargs with a new BytesIO for the multipart file (one can be read only once)."""
    kwargs = dict(kwargs)
    if "data" in kwargs and isinstance(kwargs["data"], dict):
        name = kwargs["data"]["file"][1]
        kwargs["data"] = {"file": (io.BytesIO(b"hello there\n"), name)}
    return kwargs


def assert_nothing_changed(api, world):
    """Alice's file, thumbnail, tokens and tus upload are as they were; nobody else was made."""
    alice = world["alice"]["headers"]
    rec = world["record"]
    assert api.get(f"/files/{rec['id']}", headers=alice).status_code == 200
    listed = api.get("/files", headers=alice).get_json()["files"]
    assert [r["id"] for r in listed] == [rec["id"]]
    assert api.get(rec["download_url"], headers=alice).status_code == 200
    assert api.get(rec["thumbnail_url"], headers=alice).status_code == 200
    assert api.get("/me", headers=bearer(world["extra_token"]["token"])).status_code == 200
    names = {t["name"] for t in api.get("/tokens", headers=alice).get_json()["tokens"]}
    assert names == {"first token", "spare"}
    assert {u["username"] for u in api.get("/users", headers=ADMIN).get_json()["users"]} == {"admin", "alice"}
    head = api.head(world["tus"], headers={**TUS, **alice})
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "0"
    assert [s["id"] for s in api.get("/shares", headers=alice).get_json()["shares"]] == [world["link"]["id"]]


# --- 401 without valid credentials ---

BAD_CREDENTIALS = {
    "no credentials": lambda world, api: {},
    "Basic scheme": lambda world, api: {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
    "Bearer with nothing": lambda world, api: {"Authorization": "Bearer"},
    "Bearer with blanks": lambda world, api: {"Authorization": "Bearer   "},
    "the token alone, without a scheme": lambda world, api: {"Authorization": world["alice"]["token"]},
    "a made-up token": lambda world, api: bearer("ust_" + "x" * 43),
    "a made-up token without the prefix": lambda world, api: bearer("not-a-token-at-all"),
    "a token with one character changed": lambda world, api: bearer(world["alice"]["token"][:-1] + (
        "A" if world["alice"]["token"][-1] != "A" else "B")),
    "the admin token with one character changed": lambda world, api: bearer(ADMIN_TOKEN[:-1] + "!"),
    "a revoked token": lambda world, api: revoked(world, api),
}


def revoked(world, api) -> dict:
    alice = world["alice"]["headers"]
    made = api.post("/tokens", json={"name": "to revoke"}, headers=alice).get_json()
    assert api.get("/me", headers=bearer(made["token"])).status_code == 200
    assert api.delete(f"/tokens/{made['id']}", headers=alice).status_code == 204
    return bearer(made["token"])


@pytest.mark.parametrize("credentials", list(BAD_CREDENTIALS))
def test_every_protected_endpoint_answers_401_json_with_www_authenticate(api, world, credentials):
    headers = BAD_CREDENTIALS[credentials](world, api)
    failures = []
    for method, path, kwargs in protected_requests(world):
        kwargs = fresh_kwargs(kwargs)
        request_headers = {**TUS, **kwargs.pop("headers", {}), **headers} if path.startswith("/tus") else headers
        response = api.open(path, method=method, headers=request_headers, **kwargs)
        try:
            assert_401(response, f"{method} {path}")
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n".join(failures)
    assert_nothing_changed(api, world)


def test_tus_without_credentials_is_401_even_without_tus_resumable(api, world):
    assert_401(api.post("/tus/", headers={"Upload-Length": "5"}), "POST /tus/")
    assert_401(api.patch(world["tus"], data=b"x"), "PATCH /tus/<id>")


def test_every_protected_endpoint_works_with_the_right_token(api, world):
    """The other side of the 401s: the same requests, with Alice's token, are not refused."""
    alice = world["alice"]["headers"]
    for method, path, kwargs in protected_requests(world):
        if path.startswith("/users"):
            continue  # admin only: see the 403 test
        kwargs = fresh_kwargs(kwargs)
        headers = {**TUS, **kwargs.pop("headers", {}), **alice} if path.startswith("/tus") else alice
        response = api.open(path, method=method, headers=headers, **kwargs)
        assert response.status_code not in (401, 403), f"{method} {path}: {response.get_data(as_text=True)}"
        assert response.status_code < 400, f"{method} {path}: {response.get_data(as_text=True)}"


# --- open endpoints ---

@pytest.mark.parametrize("path", ["/", "/login", "/healthz", "/readyz", "/metrics", "/policy", "/openapi.json"])
def test_open_endpoints_answer_without_credentials(api, path):
    response = api.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert "WWW-Authenticate" not in response.headers


def test_open_endpoints_answer_with_their_content(api):
    assert api.get("/policy").get_json()["max_file_size"] > 0
    assert "/files" in api.get("/openapi.json").get_json()["paths"]
    assert "# TYPE" in api.get("/metrics").get_data(as_text=True)
    assert 'name="password"' in api.get("/").get_data(as_text=True)


def test_the_pages_static_assets_load_without_credentials(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    sign_in(browser, "alice")
    html = browser.get("/").get_data(as_text=True)
    assets = re.findall(r'(?:href|src)="(/[^"]+\.(?:css|js)[^"]*)"', html)
    assert any("app.css" in a for a in assets) and any("app.js" in a for a in assets), assets
    login_html = api.get("/login").get_data(as_text=True)
    assets += re.findall(r'(?:href|src)="(/[^"]+\.(?:css|js)[^"]*)"', login_html)
    stranger = token_app.test_client()
    for asset in assets:
        response = stranger.get(asset)
        assert response.status_code == 200, asset
        assert response.data, asset
        assert response.mimetype in ("text/css", "text/javascript", "application/javascript"), asset


@pytest.mark.parametrize("path", ["/files", "/upload", "/tus/", "/tus/0123456789abcdef", "/files/x/share", "/me",
                                  "/tokens"])
def test_cors_preflights_need_no_credentials(make_app, path):
    app = make_app(**TOKEN_SETTINGS, CORS_ORIGINS="https://app.example")
    response = app.test_client().options(path, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, upload-length, tus-resumable"})
    assert response.status_code in (200, 204), response.get_data(as_text=True)
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


def test_preflight_without_cors_origins_is_not_a_401(api):
    response = api.options("/files", headers={"Origin": "https://app.example",
                                              "Access-Control-Request-Method": "GET"})
    assert response.status_code in (200, 204)
    assert "Access-Control-Allow-Origin" not in response.headers


def test_share_links_open_without_credentials_but_downloads_do_not(api, world):
    alice = world["alice"]["headers"]
    rec = world["record"]
    shared = api.post(f"/files/{rec['id']}/share", json={"expires_in": 60}, headers=alice)
    assert shared.status_code == 201
    link = urlsplit(shared.get_json()["url"]).path
    stranger = api.application.test_client()
    assert_401(stranger.get(rec["download_url"]), "download")
    response = stranger.get(link)
    assert response.status_code == 200
    assert response.data == api.get(rec["download_url"], headers=alice).data


# --- ADMIN_TOKEN and user management ---

def test_admin_token_acts_as_an_admin(api):
    me = api.get("/me", headers=ADMIN).get_json()
    assert me["admin"] is True and me["username"] == "admin"
    response = api.post("/users", json={"username": "bob"}, headers=ADMIN)
    assert response.status_code == 201
    assert any(u["username"] == "bob" for u in api.get("/users", headers=ADMIN).get_json()["users"])


def test_a_plain_user_cannot_manage_users(api):
    alice = create_user(api, "alice")
    response = api.post("/users", json={"username": "bob"}, headers=alice["headers"])
    assert response.status_code == 403
    assert response.get_json()["error"]
    assert api.get("/users", headers=alice["headers"]).status_code == 403
    assert api.delete(f"/users/{alice['id']}", headers=alice["headers"]).status_code == 403
    assert [u["username"] for u in api.get("/users", headers=ADMIN).get_json()["users"]] == ["admin", "alice"]


def test_a_user_made_admin_can_manage_users(api):
    root = create_user(api, "root", admin=True)
    assert root["admin"] is True
    assert api.post("/users", json={"username": "carol"}, headers=root["headers"]).status_code == 201


def test_without_admin_token_the_admin_token_value_is_just_a_wrong_token(make_app):
    app = make_app(**{**TOKEN_SETTINGS, "ADMIN_TOKEN": ""})
    client = app.test_client()
    assert_401(client.get("/me", headers=ADMIN), "GET /me")
    assert_401(client.post("/users", json={"username": "bob"}, headers=bearer("")), "empty bearer")


def test_create_user_answers_201_with_a_working_token_shown_once(api):
    response = api.post("/users", json={"username": "alice", "password": PASSWORD, "admin": False}, headers=ADMIN)
    assert response.status_code == 201
    body = response.get_json()
    assert {"id", "username", "admin", "token", "token_id"} <= set(body)
    assert body["username"] == "alice" and body["admin"] is False
    assert isinstance(body["id"], str) and body["id"]
    me = api.get("/me", headers=bearer(body["token"])).get_json()
    assert me["id"] == body["id"] and me["username"] == "alice" and me["admin"] is False
    listed = api.get("/tokens", headers=bearer(body["token"])).get_json()["tokens"]
    assert [t["id"] for t in listed] == [body["token_id"]]
    assert body["token"] not in str(api.get("/users", headers=ADMIN).get_json())


def test_create_user_with_a_duplicate_name_is_409(api):
    create_user(api, "alice")
    response = api.post("/users", json={"username": "alice"}, headers=ADMIN)
    assert response.status_code == 409
    assert "alice" in response.get_json()["error"]
    assert [u["username"] for u in api.get("/users", headers=ADMIN).get_json()["users"]].count("alice") == 1


def test_the_bootstrap_admin_name_cannot_be_taken(api):
    response = api.post("/users", json={"username": "admin"}, headers=ADMIN)
    assert response.status_code == 409


@pytest.mark.parametrize("body", [
    {}, {"username": ""}, {"username": " alice"}, {"username": "al ice"}, {"username": "-alice"},
    {"username": "a" * 65}, {"username": "al/ice"}, {"username": 42}, {"username": None}, {"username": ["alice"]},
    {"username": "alice", "password": "short"}, {"username": "alice", "password": 12345678},
    {"username": "alice", "password": "x" * 1025}, {"username": "alice", "admin": "yes"},
    {"username": "alice", "admin": 1},
])
def test_create_user_with_a_bad_username_or_password_is_400_with_a_sentence(api, body):
    response = api.post("/users", json=body, headers=ADMIN)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert isinstance(error, str) and len(error.split()) >= 4
    assert [u["username"] for u in api.get("/users", headers=ADMIN).get_json()["users"]] == ["admin"]


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"alice"', b"{not json", b"null"])
def test_create_user_with_a_body_that_is_not_a_json_object_is_400(api, raw):
    response = api.post("/users", data=raw, content_type="application/json", headers=ADMIN)
    assert response.status_code == 400
    assert response.get_json()["error"]


def test_deleting_a_user_ends_their_tokens(api):
    alice = create_user(api, "alice")
    assert api.delete(f"/users/{alice['id']}", headers=ADMIN).status_code == 204
    assert_401(api.get("/me", headers=alice["headers"]), "deleted user's token")
    assert api.delete(f"/users/{alice['id']}", headers=ADMIN).status_code == 404


# --- secrets at rest ---

def database_text(app) -> tuple[str, bytes]:
    """Everything in the SQLite database: a full SQL dump, and the raw bytes of its files (WAL included)."""
    path = Path(app.config["DATA_DIR"]) / "uploads.db"
    assert path.is_file()
    conn = sqlite3.connect(path)
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    raw = b"".join(p.read_bytes() for p in path.parent.glob("uploads.db*"))
    return dump, raw


def test_the_database_holds_no_token_or_password_in_clear(api, token_app):
    alice = create_user(api, "alice", password=PASSWORD)
    second = api.post("/tokens", json={"name": "ci"}, headers=alice["headers"]).get_json()
    browser = token_app.test_client()
    sign_in(browser, "alice")
    sid = token_app.session_interface.get_signing_serializer(token_app).loads(session_cookie(browser).value)["sid"]

    dump, raw = database_text(token_app)
    assert "alice" in dump  # the dump does see the users table
    for secret in (alice["token"], second["token"], PASSWORD, sid, ADMIN_TOKEN):
        assert secret not in dump, secret
        assert secret.encode() not in raw, secret

    conn = sqlite3.connect(Path(token_app.config["DATA_DIR"]) / "uploads.db")
    try:
        (password_hash,) = conn.execute("SELECT password_hash FROM users WHERE username = 'alice'").fetchone()
        token_hashes = [h for (h,) in conn.execute("SELECT token_hash FROM tokens")]
    finally:
        conn.close()
    assert password_hash.startswith("scrypt:"), password_hash
    method, salt, digest = password_hash.split("$")
    assert len(salt) >= 16 and len(digest) >= 64
    from werkzeug.security import check_password_hash
    assert check_password_hash(password_hash, PASSWORD)
    assert len(token_hashes) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in token_hashes)


def test_two_users_with_the_same_password_get_different_hashes(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    create_user(api, "bob", password=PASSWORD)
    conn = sqlite3.connect(Path(token_app.config["DATA_DIR"]) / "uploads.db")
    try:
        hashes = [h for (h,) in conn.execute("SELECT password_hash FROM users WHERE username IN ('alice', 'bob')")]
    finally:
        conn.close()
    assert len(hashes) == 2 and hashes[0] != hashes[1]


# --- the caller's tokens ---

def test_post_tokens_makes_a_working_token(api):
    alice = create_user(api, "alice")
    response = api.post("/tokens", json={"name": "laptop"}, headers=alice["headers"])
    assert response.status_code == 201
    body = response.get_json()
    assert body["id"] and body["token"] and body["token"] != alice["token"]
    assert api.get("/me", headers=bearer(body["token"])).get_json()["username"] == "alice"


def test_get_tokens_lists_the_callers_tokens_without_secrets(api):
    alice = create_user(api, "alice")
    bob = create_user(api, "bob")
    made = api.post("/tokens", json={"name": "laptop"}, headers=alice["headers"]).get_json()
    response = api.get("/tokens", headers=alice["headers"])
    assert response.status_code == 200
    tokens = response.get_json()["tokens"]
    assert {t["id"] for t in tokens} == {alice["token_id"], made["id"]}
    assert {t["name"] for t in tokens} == {"first token", "laptop"}
    text = response.get_data(as_text=True)
    for secret in (alice["token"], made["token"], bob["token"]):
        assert secret not in text
    assert "ust_" not in text
    assert bob["token_id"] not in text


def test_revoking_a_token_stops_it_at_once_and_leaves_the_others(api):
    alice = create_user(api, "alice")
    made = api.post("/tokens", json={"name": "laptop"}, headers=alice["headers"]).get_json()
    assert api.get("/files", headers=bearer(made["token"])).status_code == 200
    response = api.delete(f"/tokens/{made['id']}", headers=alice["headers"])
    assert response.status_code == 204 and response.data == b""
    assert_401(api.get("/files", headers=bearer(made["token"])), "revoked token")
    assert api.get("/files", headers=alice["headers"]).status_code == 200
    assert [t["id"] for t in api.get("/tokens", headers=alice["headers"]).get_json()["tokens"]] == [alice["token_id"]]
    assert api.delete(f"/tokens/{made['id']}", headers=alice["headers"]).status_code == 404


def test_a_token_can_revoke_itself(api):
    alice = create_user(api, "alice")
    assert api.delete(f"/tokens/{alice['token_id']}", headers=alice["headers"]).status_code == 204
    assert_401(api.get("/me", headers=alice["headers"]), "self-revoked token")


def test_revoking_another_users_token_is_404_and_leaves_it_working(api):
    alice = create_user(api, "alice")
    bob = create_user(api, "bob")
    response = api.delete(f"/tokens/{bob['token_id']}", headers=alice["headers"])
    assert response.status_code == 404
    assert response.get_json()["error"]
    assert api.get("/me", headers=bob["headers"]).status_code == 200
    assert api.delete("/tokens/0000000000000000", headers=alice["headers"]).status_code == 404


@pytest.mark.parametrize("body", [{"name": 5}, {"name": "x" * 101}, [1]])
def test_post_tokens_with_a_bad_name_is_400(api, body):
    alice = create_user(api, "alice")
    response = api.post("/tokens", json=body, headers=alice["headers"])
    assert response.status_code == 400 and response.get_json()["error"]
    assert len(api.get("/tokens", headers=alice["headers"]).get_json()["tokens"]) == 1


# --- browser sessions ---

def test_the_page_without_a_session_is_the_sign_in_form_with_a_strict_csp(api):
    response = api.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert '<form' in html and 'action="/login"' in html
    assert 'name="username"' in html and 'name="password"' in html
    assert form_csrf(html)
    assert_strict_csp(response)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_every_html_page_carries_the_strict_csp(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    assert_strict_csp(api.get("/login"))
    token = form_csrf(api.get("/login").get_data(as_text=True))
    wrong = api.post("/login", data={"username": "alice", "password": "wrong password", "csrf_token": token})
    assert wrong.mimetype == "text/html"
    assert_strict_csp(wrong)
    browser = token_app.test_client()
    sign_in(browser, "alice")
    signed_in = browser.get("/")
    assert "Signed in as" in signed_in.get_data(as_text=True)
    assert_strict_csp(signed_in)


@pytest.mark.parametrize("base_url, secure", [("https://localhost", True), ("http://localhost", False)])
def test_sign_in_sets_an_httponly_samesite_cookie_secure_over_https(api, token_app, base_url, secure):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    token = form_csrf(browser.get("/login", base_url=base_url).get_data(as_text=True))
    response = browser.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token},
                            base_url=base_url)
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/"
    header = set_cookie_header(response)
    attributes = cookie_attributes(header)
    assert "httponly" in attributes
    assert re.search(r";\s*SameSite=Lax", header, re.I), header
    assert ("secure" in attributes) is secure, header
    assert browser.get("/files", base_url=base_url).status_code == 200


def test_wrong_password_is_401_and_the_form_again_with_the_error(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    token = form_csrf(browser.get("/login").get_data(as_text=True))
    response = browser.post("/login", data={"username": "alice", "password": "not the password", "csrf_token": token})
    assert response.status_code == 401
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "The username or password is not right." in html
    assert 'name="password"' in html and 'value="alice"' in html
    assert not any(h.startswith("upload_session=") and "sid" in h for h in response.headers.getlist("Set-Cookie"))
    assert_401(browser.get("/files"), "after a failed sign-in")


def test_unknown_user_answers_exactly_like_a_wrong_password(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    token = form_csrf(browser.get("/login").get_data(as_text=True))
    unknown = browser.post("/login", data={"username": "nobody", "password": PASSWORD, "csrf_token": token})
    assert unknown.status_code == 401
    assert "The username or password is not right." in unknown.get_data(as_text=True)
    json_unknown = api.post("/login", json={"username": "nobody", "password": PASSWORD})
    json_wrong = api.post("/login", json={"username": "alice", "password": "not the password"})
    assert json_unknown.status_code == json_wrong.status_code == 401
    assert json_unknown.get_json() == json_wrong.get_json()


def test_a_user_without_a_password_cannot_sign_in(api):
    create_user(api, "alice")
    assert api.post("/login", json={"username": "alice", "password": "anything at all"}).status_code == 401
    assert api.post("/login", json={"username": "admin", "password": ""}).status_code == 400


@pytest.mark.parametrize("csrf", [None, "", "forged-token-value"])
def test_a_form_sign_in_without_the_right_csrf_token_is_403(api, token_app, csrf):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    browser.get("/login")
    form = {"username": "alice", "password": PASSWORD}
    if csrf is not None:
        form["csrf_token"] = csrf
    response = browser.post("/login", data=form)
    assert response.status_code == 403
    assert response.get_json()["error"]
    assert_401(browser.get("/files"), "after a refused sign-in")


def test_a_form_sign_in_from_a_browser_that_never_saw_the_form_is_403(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    other = token_app.test_client()
    token = form_csrf(other.get("/login").get_data(as_text=True))  # another browser's token
    browser = token_app.test_client()
    response = browser.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 403


def test_json_sign_in_starts_a_session(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    response = browser.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert {k: body[k] for k in ("username", "admin")} == {"username": "alice", "admin": False}
    assert "httponly" in cookie_attributes(set_cookie_header(response))
    assert browser.get("/files").status_code == 200
    assert browser.get("/me").get_json()["username"] == "alice"
    # The answer carries the CSRF token a cookie-based client sends back with its writes...
    assert browser.post("/tokens", json={}).status_code == 403
    assert browser.post("/tokens", json={}, headers={"X-CSRF-Token": body["csrf_token"]}).status_code == 201
    # ...and signing in again from the same cookie jar works.
    again = browser.post("/login", json={"username": "alice", "password": PASSWORD})
    assert again.status_code == 200


def test_json_sign_in_with_missing_fields_is_400(api):
    for body in ({}, {"username": "alice"}, {"password": PASSWORD}, {"username": 1, "password": 2}):
        response = api.post("/login", json=body)
        assert response.status_code == 400, body
        assert response.get_json()["error"]


def test_signed_in_page_carries_the_session_csrf_token_and_the_user(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    csrf = sign_in(browser, "alice")
    html = browser.get("/").get_data(as_text=True)
    assert "alice" in html and 'action="/logout"' in html
    assert form_csrf(html) == csrf
    assert browser.get("/login").status_code == 303  # already signed in


def test_sign_in_replaces_the_csrf_token(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    before = form_csrf(browser.get("/login").get_data(as_text=True))
    after = sign_in(browser, "alice")
    assert before != after


def test_session_reads_work_without_a_csrf_token(api, token_app, tmp_path):
    alice = create_user(api, "alice", password=PASSWORD)
    rec = upload(api, "a.png", make_sample("png", tmp_path).read_bytes(), alice["headers"]).get_json()
    browser = token_app.test_client()
    sign_in(browser, "alice")
    assert [r["id"] for r in browser.get("/files").get_json()["files"]] == [rec["id"]]
    assert browser.get(f"/files/{rec['id']}").status_code == 200
    assert browser.get(rec["download_url"]).status_code == 200
    assert browser.get(rec["thumbnail_url"]).status_code == 200


def test_session_delete_needs_the_csrf_header(api, token_app):
    alice = create_user(api, "alice", password=PASSWORD)
    rec = upload(api, "a.txt", b"some text\n", alice["headers"]).get_json()
    browser = token_app.test_client()
    csrf = sign_in(browser, "alice")
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
        response = browser.delete(f"/files/{rec['id']}", headers=headers)
        assert response.status_code == 403, headers
        assert response.get_json()["error"]
        assert api.get(f"/files/{rec['id']}", headers=alice["headers"]).status_code == 200
        assert api.get(rec["download_url"], headers=alice["headers"]).status_code == 200
    assert browser.delete(f"/files/{rec['id']}", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert api.get(f"/files/{rec['id']}", headers=alice["headers"]).status_code == 404


def test_session_upload_needs_the_csrf_header(api, token_app, tmp_path):
    alice = create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    csrf = sign_in(browser, "alice")
    data = make_sample("png", tmp_path).read_bytes()
    response = upload(browser, "a.png", data)
    assert response.status_code == 403
    assert api.get("/files", headers=alice["headers"]).get_json()["files"] == []
    files_dir = Path(token_app.config["DATA_DIR"]) / "files"
    assert not files_dir.exists() or not any(p.is_file() for p in files_dir.rglob("*"))
    response = upload(browser, "a.png", data, {"X-CSRF-Token": csrf})
    assert response.status_code == 201
    assert [r["id"] for r in api.get("/files", headers=alice["headers"]).get_json()["files"]] == [
        response.get_json()["id"]]


def test_session_token_creation_needs_the_csrf_header(api, token_app):
    alice = create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    csrf = sign_in(browser, "alice")
    response = browser.post("/tokens", json={"name": "sneaky"})
    assert response.status_code == 403
    assert len(api.get("/tokens", headers=alice["headers"]).get_json()["tokens"]) == 1
    response = browser.post("/tokens", json={"name": "mine"}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 201
    assert api.get("/me", headers=bearer(response.get_json()["token"])).get_json()["username"] == "alice"


def test_session_csrf_token_in_a_urlencoded_form_field_also_works(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    csrf = sign_in(browser, "alice")
    response = browser.post("/logout", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/login"
    assert_401(browser.get("/files"), "after a form sign-out")


def test_a_bearer_token_needs_no_csrf_token_even_with_a_session_cookie(api, token_app):
    alice = create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    sign_in(browser, "alice")
    response = browser.post("/tokens", json={"name": "script"}, headers=alice["headers"])
    assert response.status_code == 201


def test_logout_ends_the_session_and_the_old_cookie_does_not_come_back(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    csrf = sign_in(browser, "alice")
    old = session_cookie(browser).value
    assert browser.post("/logout", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    assert browser.get("/files").status_code == 200  # a refused sign-out leaves the session alone
    response = browser.post("/logout", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 204
    assert_401(browser.get("/files"), "after sign-out")
    replay = token_app.test_client()
    replay.set_cookie("upload_session", old)
    assert_401(replay.get("/files"), "replayed cookie")
    assert 'name="password"' in replay.get("/").get_data(as_text=True)


def test_logout_with_an_ended_session_still_signs_the_browser_out(api, token_app):
    """The page's Sign out button, pressed after the session ended elsewhere, must not answer a JSON 401."""
    alice = create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    csrf = sign_in(browser, "alice")
    with token_app.app_context():
        token_app.extensions["accounts"].set_password(alice["id"], "a brand new password")
    response = browser.post("/logout", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert urlsplit(response.headers["Location"]).path == "/login"


def test_set_password_ends_existing_sessions(api, token_app):
    alice = create_user(api, "alice", password=PASSWORD)
    create_user(api, "bob", password=PASSWORD)
    browser, bobs_browser = token_app.test_client(), token_app.test_client()
    sign_in(browser, "alice")
    sign_in(bobs_browser, "bob")
    with token_app.app_context():
        token_app.extensions["accounts"].set_password(alice["id"], "a brand new password")
    assert_401(browser.get("/files"), "session after a password change")
    assert bobs_browser.get("/files").status_code == 200
    assert api.get("/me", headers=alice["headers"]).status_code == 200  # API tokens stay
    assert api.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 401
    assert api.post("/login", json={"username": "alice", "password": "a brand new password"}).status_code == 200


def test_flask_users_password_ends_existing_sessions(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    sign_in(browser, "alice")
    result = token_app.test_cli_runner().invoke(args=["users", "password", "alice"],
                                                input="another good password\nanother good password\n")
    assert result.exit_code == 0, result.output
    assert_401(browser.get("/files"), "session after `flask users password`")
    fresh = token_app.test_client()
    sign_in(fresh, "alice", "another good password")
    assert fresh.get("/files").status_code == 200


def test_deleting_a_user_ends_their_sessions(api, token_app):
    alice = create_user(api, "alice", password=PASSWORD)
    browser = token_app.test_client()
    sign_in(browser, "alice")
    assert api.delete(f"/users/{alice['id']}", headers=ADMIN).status_code == 204
    assert_401(browser.get("/files"), "session of a deleted user")


def test_sessions_expire(make_app):
    app = make_app(**TOKEN_SETTINGS, SESSION_LIFETIME=-1)
    client = app.test_client()
    create_user(client, "alice", password=PASSWORD)
    browser = app.test_client()
    response = browser.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    assert_401(browser.get("/files"), "expired session")


def test_a_session_of_one_user_sees_only_their_files(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    bob = create_user(api, "bob", password=PASSWORD)
    bobs = upload(api, "b.txt", b"bob's text\n", bob["headers"]).get_json()
    browser = token_app.test_client()
    csrf = sign_in(browser, "alice")
    assert browser.get("/files").get_json()["files"] == []
    assert browser.get(f"/files/{bobs['id']}").status_code == 404
    assert browser.get(bobs["download_url"]).status_code == 404
    assert browser.delete(f"/files/{bobs['id']}", headers={"X-CSRF-Token": csrf}).status_code == 404
    assert api.get(f"/files/{bobs['id']}", headers=bob["headers"]).status_code == 200


def test_a_session_behind_a_trusted_https_proxy_gets_a_secure_cookie(make_app):
    app = make_app(**TOKEN_SETTINGS, TRUST_PROXY=1)
    create_user(app.test_client(), "alice", password=PASSWORD)
    response = app.test_client().post("/login", json={"username": "alice", "password": PASSWORD},
                                      headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 200
    assert "secure" in cookie_attributes(set_cookie_header(response))


def test_an_untrusted_forwarded_proto_does_not_change_the_cookie(api, token_app):
    create_user(api, "alice", password=PASSWORD)
    response = token_app.test_client().post("/login", json={"username": "alice", "password": PASSWORD},
                                            headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 200
    assert "secure" not in cookie_attributes(set_cookie_header(response))


# --- odds and ends ---

def test_the_bearer_scheme_is_case_insensitive(api):
    alice = create_user(api, "alice")
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = api.get("/me", headers={"Authorization": f"{scheme} {alice['token']}"})
        assert response.status_code == 200, scheme


def test_using_a_token_records_when_it_was_last_used(api):
    alice = create_user(api, "alice")
    made = api.post("/tokens", json={"name": "unused"}, headers=alice["headers"]).get_json()
    tokens = {t["id"]: t for t in api.get("/tokens", headers=alice["headers"]).get_json()["tokens"]}
    assert tokens[alice["token_id"]]["last_used_at"] is not None
    assert tokens[made["id"]]["last_used_at"] is None


def test_with_auth_off_the_accounts_api_and_sign_in_are_404(make_app):
    client = make_app(AUTH="off").test_client()
    for method, path in (("GET", "/me"), ("POST", "/users"), ("GET", "/tokens"), ("POST", "/tokens")):
        response = client.open(path, method=method, json={})
        assert response.status_code == 404, (method, path)
        assert "AUTH=off" in response.get_json()["error"]
    assert client.post("/login", json={"username": "a", "password": "b"}).status_code == 404
    assert client.get("/files").status_code == 200
    assert client.get("/login").status_code == 303


# --- stale credentials ---

@pytest.mark.parametrize("authorization", ["Bearer ust_revoked-or-never-made", "Basic YWxpY2U6cHc="])
def test_open_endpoints_ignore_stale_credentials_but_protected_ones_do_not(api, world, authorization):
    rec = world["record"]
    link = urlsplit(api.post(f"/files/{rec['id']}/share", headers=world["alice"]["headers"])
                    .get_json()["url"]).path
    headers = {"Authorization": authorization}
    assert api.get(link, headers=headers).status_code == 200
    assert api.get("/healthz", headers=headers).status_code == 200
    assert api.get("/policy", headers=headers).status_code == 200
    assert_401(api.get("/files", headers=headers), "GET /files with stale credentials")


def test_admin_token_deleted_by_another_admin_is_made_again_not_a_ghost(api):
    first = api.get("/me", headers=ADMIN).get_json()
    other = create_user(api, "root2", admin=True)
    assert api.delete(f"/users/{first['id']}", headers=other["headers"]).status_code == 204
    again = api.get("/me", headers=ADMIN)
    assert again.status_code == 200
    assert again.get_json()["admin"] is True
    assert again.get_json()["id"] != first["id"]
    assert any(u["id"] == again.get_json()["id"] for u in api.get("/users", headers=ADMIN).get_json()["users"])


# --- hostile bodies on the open endpoints ---

def test_a_big_body_on_the_open_sign_in_is_413_before_it_is_read(api):
    big = b"x" * (2 * 1024 * 1024)
    for content_type in ("application/json", "application/x-www-form-urlencoded"):
        response = api.post("/login", data=big, content_type=content_type)
        assert response.status_code == 413, content_type
        assert response.is_json


def test_lone_surrogates_are_400_not_500(api):
    alice = create_user(api, "alice", password=PASSWORD)
    raw = '{"username": "alice", "password": "\\ud800"}'
    assert api.post("/login", data=raw, content_type="application/json").status_code in (400, 401)
    for path, body in (("/users", '{"username": "bob", "password": "\\ud800xxxxxxxx"}'),
                       ("/tokens", '{"name": "\\udfff"}')):
        headers = ADMIN if path == "/users" else alice["headers"]
        response = api.post(path, data=body, content_type="application/json", headers=headers)
        assert response.status_code == 400, (path, response.get_json())
        assert "valid text" in response.get_json()["error"]


def test_usernames_are_one_user_whatever_their_case(api):
    create_user(api, "alice", password=PASSWORD)
    clash = api.post("/users", json={"username": "Alice"}, headers=ADMIN)
    assert clash.status_code == 409
    assert api.post("/login", json={"username": "ALICE", "password": PASSWORD}).status_code == 200


def test_an_empty_password_is_refused_not_ignored(api):
    response = api.post("/users", json={"username": "carol", "password": ""}, headers=ADMIN)
    assert response.status_code == 400
    assert "password" in response.get_json()["error"]

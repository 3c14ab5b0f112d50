"""`flask --app gateway users ...` and `... tokens ...`, through Flask's CLI runner
against a real app, checked through the HTTP API the tokens are for."""
from __future__ import annotations

import io
import logging
import re

import pytest

from tests.accounts import ADMIN, TOKEN_SETTINGS, bearer

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True

PASSWORD = "a long enough password"
TOKEN_RE = re.compile(r"ust_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def app(make_app):
    return make_app(**TOKEN_SETTINGS)


@pytest.fixture
def api(app):
    return app.test_client()


def run(app, *args: str, input: str | None = None):
    return app.test_cli_runner().invoke(args=list(args), input=input)


def created(result) -> tuple[str, str]:
    """(token, token id) from the output of `users create` or `tokens create`."""
    assert result.exit_code == 0, result.output
    tokens = TOKEN_RE.findall(result.output)
    assert len(tokens) == 1, result.output
    token_id = re.search(r"\(id ([0-9a-f]{16})\)", result.output.split("token", 1)[1])
    assert token_id, result.output
    return tokens[0], token_id.group(1)


def upload(api, headers, name: str = "a.txt", data: bytes = b"some text\n"):
    return api.post("/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data",
                    headers=headers)


# --- users create ---

def test_users_create_prints_a_token_that_works_against_the_api(app, api):
    result = run(app, "users", "create", "alice")
    token, token_id = created(result)
    assert "alice" in result.output
    me = api.get("/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.get_json()["username"] == "alice" and me.get_json()["admin"] is False
    assert [t["id"] for t in api.get("/tokens", headers=bearer(token)).get_json()["tokens"]] == [token_id]
    assert upload(api, bearer(token)).status_code == 201
    assert api.post("/users", json={"username": "bob"}, headers=bearer(token)).status_code == 403


def test_users_create_admin_makes_an_admin(app, api):
    token, _ = created(run(app, "users", "create", "root", "--admin"))
    assert api.get("/me", headers=bearer(token)).get_json()["admin"] is True
    assert api.post("/users", json={"username": "bob"}, headers=bearer(token)).status_code == 201
    assert {u["username"]: u["admin"] for u in api.get("/users", headers=ADMIN).get_json()["users"]}["root"] is True


def test_users_create_with_password_lets_the_user_sign_in(app, api):
    result = run(app, "users", "create", "alice", "--password", input=f"{PASSWORD}\n{PASSWORD}\n")
    created(result)
    assert PASSWORD not in result.output  # hidden input is not echoed
    browser = app.test_client()
    response = browser.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    assert browser.get("/me").get_json()["username"] == "alice"
    assert api.post("/login", json={"username": "alice", "password": "a wrong password"}).status_code == 401


def test_users_create_without_password_cannot_sign_in(app, api):
    created(run(app, "users", "create", "alice"))
    assert api.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 401


def test_users_create_with_a_short_password_fails_and_makes_nobody(app, api):
    result = run(app, "users", "create", "alice", "--password", input="short\nshort\n")
    assert result.exit_code != 0
    assert "password must be 8 to 1024 characters" in result.output
    assert not TOKEN_RE.search(result.output)
    assert "alice" not in run(app, "users", "list").output


def test_users_create_with_passwords_that_differ_makes_nobody(app):
    result = run(app, "users", "create", "alice", "--password", input=f"{PASSWORD}\n{PASSWORD}x\n")
    assert result.exit_code != 0
    assert "do not match" in result.output
    assert "alice" not in run(app, "users", "list").output


def test_users_create_a_duplicate_name_fails_with_a_clear_message(app, api):
    first, _ = created(run(app, "users", "create", "alice"))
    result = run(app, "users", "create", "alice")
    assert result.exit_code != 0
    assert "There is already a user called 'alice'" in result.output
    assert "Traceback" not in result.output
    assert not TOKEN_RE.search(result.output)
    assert api.get("/me", headers=bearer(first)).status_code == 200
    assert [u["username"] for u in api.get("/users", headers=ADMIN).get_json()["users"]].count("alice") == 1


@pytest.mark.parametrize("name", ["al ice", "-alice", "a" * 65, "al/ice"])
def test_users_create_a_bad_name_fails_with_a_clear_message(app, name):
    result = run(app, "users", "create", "--", name)
    assert result.exit_code != 0
    assert "A username is 1 to 64" in result.output
    assert "Traceback" not in result.output


# --- users list / delete / password / quota ---

def test_users_list_shows_roles_and_usage(app, api):
    alice, _ = created(run(app, "users", "create", "alice"))
    created(run(app, "users", "create", "root", "--admin"))
    assert upload(api, bearer(alice), data=b"x" * 2048).status_code == 201
    assert upload(api, bearer(alice), "b.txt", b"y" * 1024).status_code == 201
    result = run(app, "users", "list")
    assert result.exit_code == 0, result.output
    lines = {line.split("\t")[0]: line for line in result.output.splitlines()}
    assert set(lines) == {"admin", "alice", "root"}
    assert "\tuser\t" in lines["alice"] and "2 files" in lines["alice"] and "3 KiB" in lines["alice"]
    assert "\tadmin\t" in lines["root"] and "0 files" in lines["root"]
    assert api.get("/me", headers=bearer(alice)).get_json()["id"] in lines["alice"]
    assert not TOKEN_RE.search(result.output)


def test_users_delete_kills_the_users_tokens_and_sessions(app, api):
    token, _ = created(run(app, "users", "create", "alice", "--password", input=f"{PASSWORD}\n{PASSWORD}\n"))
    extra, _ = created(run(app, "tokens", "create", "alice"))
    bob, _ = created(run(app, "users", "create", "bob"))
    rec = upload(api, bearer(token)).get_json()
    browser = app.test_client()
    assert browser.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 200
    result = run(app, "users", "delete", "alice")
    assert result.exit_code == 0, result.output
    for secret in (token, extra):
        response = api.get("/me", headers=bearer(secret))
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert browser.get("/files").status_code == 401
    assert "alice" not in run(app, "tokens", "list").output
    assert "alice" not in run(app, "users", "list").output
    assert api.get("/me", headers=bearer(bob)).status_code == 200
    # Their files stay, visible to an admin.
    assert api.get(f"/files/{rec['id']}", headers=ADMIN).status_code == 200


def test_users_delete_an_unknown_user_fails(app):
    result = run(app, "users", "delete", "nobody")
    assert result.exit_code != 0
    assert "There is no user called 'nobody'" in result.output


def test_users_password_sets_a_password_that_signs_in(app, api):
    created(run(app, "users", "create", "alice"))
    result = run(app, "users", "password", "alice", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert api.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 200


def test_users_password_refuses_a_short_one_and_keeps_the_old(app, api):
    created(run(app, "users", "create", "alice", "--password", input=f"{PASSWORD}\n{PASSWORD}\n"))
    result = run(app, "users", "password", "alice", input="short\nshort\n")
    assert result.exit_code != 0
    assert "password must be 8 to 1024 characters" in result.output
    assert api.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 200


def test_users_quota_shows_up_in_me_and_is_enforced(app, api):
    token, _ = created(run(app, "users", "create", "alice"))
    assert api.get("/me", headers=bearer(token)).get_json()["quota"] == {"bytes": 0, "files": 0}
    result = run(app, "users", "quota", "alice", "--bytes", "5000", "--files", "2")
    assert result.exit_code == 0, result.output
    me = api.get("/me", headers=bearer(token)).get_json()
    assert me["quota"] == {"bytes": 5000, "files": 2}
    assert upload(api, bearer(token), "a.txt", b"a" * 100).status_code == 201
    assert upload(api, bearer(token), "b.txt", b"b" * 100).status_code == 201
    refused = upload(api, bearer(token), "c.txt", b"c" * 100)
    assert refused.status_code == 413 and refused.get_json()["error"]
    assert api.get("/me", headers=bearer(token)).get_json()["usage"] == {"files": 2, "bytes": 200}


def test_users_quota_bytes_are_enforced(app, api):
    token, _ = created(run(app, "users", "create", "alice"))
    assert run(app, "users", "quota", "alice", "--bytes", "1000").exit_code == 0
    assert api.get("/me", headers=bearer(token)).get_json()["quota"] == {"bytes": 1000, "files": 0}
    refused = upload(api, bearer(token), "big.txt", b"z" * 4000)
    assert refused.status_code == 413
    assert api.get("/files", headers=bearer(token)).get_json()["files"] == []


def test_users_quota_changes_only_what_is_given_and_default_goes_back(make_app):
    app = make_app(**TOKEN_SETTINGS, USER_QUOTA_FILES=7)
    api = app.test_client()
    token, _ = created(run(app, "users", "create", "alice"))
    assert api.get("/me", headers=bearer(token)).get_json()["quota"]["files"] == 7
    run(app, "users", "quota", "alice", "--files", "3")
    run(app, "users", "quota", "alice", "--bytes", "9000")
    assert api.get("/me", headers=bearer(token)).get_json()["quota"] == {"files": 3, "bytes": 9000}
    assert "files 3" in run(app, "users", "quota", "alice").output  # no option: shown, unchanged
    run(app, "users", "quota", "alice", "--default")
    assert api.get("/me", headers=bearer(token)).get_json()["quota"] == {"files": 7, "bytes": 0}


def test_users_quota_of_an_unknown_user_fails(app):
    result = run(app, "users", "quota", "nobody", "--bytes", "10")
    assert result.exit_code != 0 and "There is no user called 'nobody'" in result.output


# --- tokens ---

def test_tokens_create_prints_a_working_token_for_that_user(app, api):
    first, _ = created(run(app, "users", "create", "alice"))
    token, token_id = created(run(app, "tokens", "create", "alice", "--name", "backup job"))
    assert token != first
    assert api.get("/me", headers=bearer(token)).get_json()["username"] == "alice"
    names = {t["id"]: t["name"] for t in api.get("/tokens", headers=bearer(first)).get_json()["tokens"]}
    assert names[token_id] == "backup job"


def test_tokens_create_for_an_unknown_user_fails(app):
    result = run(app, "tokens", "create", "nobody")
    assert result.exit_code != 0 and "There is no user called 'nobody'" in result.output
    assert not TOKEN_RE.search(result.output)


def test_tokens_list_shows_ids_and_labels_never_secrets(app, api):
    alice, alice_id = created(run(app, "users", "create", "alice"))
    bob, bob_id = created(run(app, "users", "create", "bob"))
    ci, ci_id = created(run(app, "tokens", "create", "alice", "--name", "ci"))
    api.get("/me", headers=bearer(ci))  # used once: "last used" gets a date
    everyone = run(app, "tokens", "list")
    assert everyone.exit_code == 0, everyone.output
    for token_id in (alice_id, bob_id, ci_id):
        assert token_id in everyone.output
    ci_line = next(line for line in everyone.output.splitlines() if line.startswith(ci_id))
    assert "alice" in ci_line and "\tci\t" in ci_line and "never" not in ci_line
    only_alice = run(app, "tokens", "list", "alice")
    assert alice_id in only_alice.output and ci_id in only_alice.output and bob_id not in only_alice.output
    for output in (everyone.output, only_alice.output):
        assert not TOKEN_RE.search(output)
        for secret in (alice, bob, ci):
            assert secret not in output and secret[4:] not in output


def test_tokens_revoke_stops_the_token_at_once(app, api):
    alice, _ = created(run(app, "users", "create", "alice"))
    ci, ci_id = created(run(app, "tokens", "create", "alice", "--name", "ci"))
    assert api.get("/files", headers=bearer(ci)).status_code == 200
    result = run(app, "tokens", "revoke", ci_id)
    assert result.exit_code == 0, result.output
    assert api.get("/files", headers=bearer(ci)).status_code == 401
    assert api.get("/files", headers=bearer(alice)).status_code == 200
    assert ci_id not in run(app, "tokens", "list").output


def test_tokens_revoke_an_unknown_id_fails(app):
    result = run(app, "tokens", "revoke", "0123456789abcdef")
    assert result.exit_code != 0
    assert "There is no token with id '0123456789abcdef'" in result.output


# --- the bootstrap admin ---

def test_admin_token_never_acts_as_a_plain_user_called_admin(make_app, tmp_path, caplog):
    """A plain 'admin' made before ADMIN_TOKEN was set: the token must not become that user
    (not an admin, and able to read and delete that user's files)."""
    data = tmp_path / "shared"
    before = make_app(**{**TOKEN_SETTINGS, "ADMIN_TOKEN": ""}, DATA_DIR=str(data))
    plain, _ = created(run(before, "users", "create", "admin"))
    rec = upload(before.test_client(), bearer(plain)).get_json()
    with caplog.at_level(logging.ERROR, logger="upload.gateway"):
        after = make_app(**TOKEN_SETTINGS, DATA_DIR=str(data), DATABASE_URL=before.config["DATABASE_URL"])
    assert "ADMIN_TOKEN is ignored" in caplog.text
    api = after.test_client()
    for method, path in (("GET", "/me"), ("GET", "/files"), ("DELETE", f"/files/{rec['id']}"), ("POST", "/users")):
        response = api.open(path, method=method, headers=ADMIN, json={"username": "x"} if method == "POST" else None)
        assert response.status_code == 401, (method, path, response.get_json())
    assert api.get(f"/files/{rec['id']}", headers=bearer(plain)).status_code == 200


def test_admin_token_acts_as_an_admin_called_admin_made_with_the_cli(make_app, tmp_path):
    data = tmp_path / "shared"
    before = make_app(**{**TOKEN_SETTINGS, "ADMIN_TOKEN": ""}, DATA_DIR=str(data))
    created(run(before, "users", "create", "admin", "--admin"))
    after = make_app(**TOKEN_SETTINGS, DATA_DIR=str(data), DATABASE_URL=before.config["DATABASE_URL"])
    assert after.test_client().post("/users", json={"username": "bob"}, headers=ADMIN).status_code == 201

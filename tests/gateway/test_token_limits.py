"""Minting API tokens (issue 15, item 6): POST /tokens is rate-limited per user
(RATE_LIMIT_TOKENS) and capped (MAX_TOKENS_PER_USER), and GET /tokens and
GET /users answer in pages (?limit=&cursor=) with the list key they always had.

Real app, real gRPC services, real SQLite and PostgreSQL: nothing is mocked.
"""
from __future__ import annotations

import threading

import pytest

from tests.accounts import ADMIN, TOKEN_SETTINGS, bearer, create_user
from tests.gateway.test_openapi import conforms

ON_BOTH_BACKENDS = True


def assert_json_error(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:300])
    error = response.get_json()["error"]
    assert isinstance(error, str) and len(error.split()) >= 4 and error.rstrip().endswith("."), error
    return error


def mint(client, headers: dict, name: str = "script"):
    return client.post("/tokens", json={"name": name}, headers=headers)


def token_ids(client, headers: dict, query: str = "") -> list[str]:
    return [t["id"] for t in client.get("/tokens" + query, headers=headers).get_json()["tokens"]]


def walk(client, path: str, key: str, headers: dict, limit: int) -> list[list[dict]]:
    """Every page of a listing, following next_cursor."""
    pages, cursor = [], None
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(path + query, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert set(body) == {key, "next_cursor"}
        pages.append(body[key])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor never ends"


# ---------------------------------------------------------------- rate limit


def test_minting_1000_tokens_quickly_is_rate_limited(make_app):
    """With the default RATE_LIMIT_TOKENS (10/minute): a script minting in a loop
    gets 10, then 429 with Retry-After and a sentence, and nothing more is made."""
    settings = {k: v for k, v in TOKEN_SETTINGS.items() if k != "RATE_LIMIT_TOKENS"}
    app = make_app(**settings)
    assert app.config["RATE_LIMIT_TOKENS"] == "10/minute"
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    statuses = [mint(client, alice, f"t{i}").status_code for i in range(1000)]
    assert statuses[:10] == [201] * 10
    assert set(statuses[10:]) == {429}
    refused = mint(client, alice)
    error = assert_json_error(refused, 429)
    assert "too many" in error.lower() and "token" in error.lower()
    assert refused.headers["Retry-After"].isdigit() and 0 < int(refused.headers["Retry-After"]) <= 60
    assert len(token_ids(client, alice)) == 1 + 10  # her first token and the ten

    # The budget is hers: Bob mints, and Alice still reads and revokes.
    bob = create_user(client, "bob")["headers"]
    assert mint(client, bob).status_code == 201
    assert client.delete(f"/tokens/{token_ids(client, alice)[-1]}", headers=alice).status_code == 204


# ---------------------------------------------------------------- cap


def test_the_token_cap_holds(make_app):
    app = make_app(**TOKEN_SETTINGS, MAX_TOKENS_PER_USER=5)
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]  # her first token counts
    made = [mint(client, alice, f"t{i}") for i in range(4)]
    assert [r.status_code for r in made] == [201] * 4
    for _ in range(3):
        error = assert_json_error(mint(client, alice, "one too many"), 409)
        assert "5" in error and "revoke" in error.lower()
    assert len(token_ids(client, alice)) == 5
    # The refused ones were never made: the five all work.
    for response in made:
        assert client.get("/me", headers=bearer(response.get_json()["token"])).status_code == 200

    # Revoking one makes room for one.
    assert client.delete(f"/tokens/{made[0].get_json()['id']}", headers=alice).status_code == 204
    assert mint(client, alice).status_code == 201
    assert_json_error(mint(client, alice), 409)
    # Per user: Bob's room is his own.
    bob = create_user(client, "bob")["headers"]
    assert mint(client, bob).status_code == 201


def test_the_cap_holds_when_requests_race(make_app):
    """Twenty requests at once for a user with room for three: three are made."""
    app = make_app(**TOKEN_SETTINGS, MAX_TOKENS_PER_USER=4)
    alice = create_user(app.test_client(), "alice")["headers"]
    statuses, start = [], threading.Barrier(20)

    def one():
        client = app.test_client()
        start.wait()
        statuses.append(mint(client, alice).status_code)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [201] * 3 + [409] * 17
    assert len(token_ids(app.test_client(), alice)) == 4


def test_zero_means_no_cap(make_app):
    app = make_app(**TOKEN_SETTINGS, MAX_TOKENS_PER_USER=0)
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    assert all(mint(client, alice).status_code == 201 for _ in range(30))


# ---------------------------------------------------------------- paging


def test_get_tokens_pages_oldest_first(make_app):
    app = make_app(**TOKEN_SETTINGS)
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    made = [mint(client, alice, f"t{i}").get_json()["id"] for i in range(7)]
    bob = create_user(client, "bob")["headers"]
    mint(client, bob)

    pages = walk(client, "/tokens", "tokens", alice, limit=3)
    assert [len(p) for p in pages] == [3, 3, 2]
    listed = [t["id"] for page in pages for t in page]
    assert len(set(listed)) == 8 and listed[1:] == made  # her first token, then the seven in order
    assert all(set(t) == {"id", "name", "created_at", "last_used_at"} for page in pages for t in page)

    # Without ?limit: the shape it always had (plus next_cursor), every token on one page.
    whole = client.get("/tokens", headers=alice).get_json()
    assert [t["id"] for t in whole["tokens"]] == listed and whole["next_cursor"] is None
    # A cursor does not open another user's tokens.
    cursor = client.get("/tokens?limit=1", headers=alice).get_json()["next_cursor"]
    assert set(token_ids(client, bob, f"?cursor={cursor}")) <= set(token_ids(client, bob))


@pytest.mark.parametrize("query", ["?limit=0", "?limit=201", "?limit=-1", "?limit=abc", "?limit=1e3",
                                   "?cursor=garbage", "?cursor=W10", "?cursor=WzEsMl0", "?cursor=%00",
                                   # ["\u0000"], ["\ud800"] and [a time, "\u0000"]: text PostgreSQL cannot hold
                                   "?cursor=WyJcdTAwMDAiXQ", "?cursor=WyJcdWQ4MDAiXQ",
                                   "?cursor=WyIyMDIwLTAxLTAxVDAwOjAwOjAwIiwgIlx1MDAwMCJd"])
def test_a_bad_limit_or_cursor_is_400_json(make_app, query):
    app = make_app(**TOKEN_SETTINGS)
    client = app.test_client()
    spec = client.get("/openapi.json").get_json()
    for path in ("/tokens", "/users", "/files", "/shares"):
        response = client.get(path + query, headers=ADMIN)
        error = assert_json_error(response, 400)
        assert "limit" in error or "cursor" in error
        conforms(spec, "GET", path, response)


def test_get_users_pages_by_username(make_app):
    app = make_app(**TOKEN_SETTINGS)
    client = app.test_client()
    for name in ("erin", "carol", "alice", "dave", "bob"):
        create_user(client, name)
    pages = walk(client, "/users", "users", ADMIN, limit=2)
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [u["username"] for page in pages for u in page] == ["admin", "alice", "bob", "carol", "dave", "erin"]
    whole = client.get("/users", headers=ADMIN).get_json()
    assert len(whole["users"]) == 6 and whole["next_cursor"] is None


def test_token_answers_conform_to_the_openapi_document(make_app):
    app = make_app(**{**TOKEN_SETTINGS, "MAX_TOKENS_PER_USER": 3, "RATE_LIMIT_TOKENS": "3/minute"})
    client = app.test_client()
    spec = client.get("/openapi.json").get_json()
    alice = create_user(client, "alice")["headers"]
    answers = [mint(client, alice), mint(client, alice), mint(client, alice), mint(client, alice)]
    assert [r.status_code for r in answers] == [201, 201, 409, 429]
    for response in answers:
        conforms(spec, "POST", "/tokens", response)
    for query in ("", "?limit=1"):
        conforms(spec, "GET", "/tokens", client.get("/tokens" + query, headers=alice))
        conforms(spec, "GET", "/users", client.get("/users" + query, headers=ADMIN))

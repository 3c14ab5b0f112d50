"""Share links as records (issue 15, item 6): listed (GET /shares, GET
/files/<id>/shares), revoked (DELETE /shares/<id>: the link answers 410 from
then on), capped per file (MAX_SHARES_PER_FILE), rate-limited per user
(RATE_LIMIT_SHARES), deleted with their file, and links made before migration
0003 still honoured until they expire (SHARE_LEGACY_LINKS).

Real app, real gRPC services, real SQLite and PostgreSQL: nothing is mocked.
"""
from __future__ import annotations

import time
from datetime import datetime

import pytest
from alembic import command
from itsdangerous import URLSafeSerializer

from gateway.metadata import migrate
from tests.accounts import ADMIN, TOKEN_SETTINGS, create_user
from tests.gateway.test_openapi import conforms
from tests.gateway.test_sharing import path_of, share, upload

ON_BOTH_BACKENDS = True
KEY = "a secret key long enough to be a real one"
UNKNOWN_LINK = "0" * 32


@pytest.fixture
def token_app(make_app):
    return make_app(**TOKEN_SETTINGS, SECRET_KEY=KEY)


@pytest.fixture
def client(token_app):
    return token_app.test_client()


@pytest.fixture
def alice(client):
    return create_user(client, "alice")["headers"]


@pytest.fixture
def bob(client):
    return create_user(client, "bob")["headers"]


@pytest.fixture
def record(client, alice):
    return upload(client, "notes.txt", b"alice's notes, shared with a few people\n", alice)


def assert_json_error(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:300])
    error = response.get_json()["error"]
    assert isinstance(error, str) and len(error.split()) >= 4 and error.rstrip().endswith("."), error
    return error


def make_link(client, file_id: str, headers: dict, **body) -> dict:
    response = share(client, file_id, headers, json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def listed(client, headers: dict, path: str = "/shares") -> list[str]:
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.get_json()
    return [link["id"] for link in response.get_json()["shares"]]


def opened(client, link: dict, **headers):
    """The link as someone without any credential follows it."""
    return client.application.test_client().get(path_of(link["url"]), headers=headers)


# ---------------------------------------------------------------- list and revoke


def test_a_link_can_be_listed_and_revoked_and_then_stops_working(client, alice, record):
    link = make_link(client, record["id"], alice, expires_in=600)
    kept = make_link(client, record["id"], alice, expires_in=600)
    assert opened(client, link).status_code == 200

    # Listed for its owner, newest first, with the very URL that was handed out.
    mine = client.get("/shares", headers=alice).get_json()
    assert [s["id"] for s in mine["shares"]] == [kept["id"], link["id"]] and mine["next_cursor"] is None
    assert mine["shares"][1] == link
    assert listed(client, alice, f"/files/{record['id']}/shares") == [kept["id"], link["id"]]

    assert client.delete(f"/shares/{link['id']}", headers=alice).status_code == 204
    error = assert_json_error(opened(client, link), 410)
    assert "revoked" in error
    assert_json_error(opened(client, link, Range="bytes=0-4"), 410)
    # A browser following it gets the "gone" page, as for an expired link.
    page = opened(client, link, Accept="text/html,application/xhtml+xml,*/*;q=0.8")
    assert page.status_code == 410 and page.mimetype == "text/html" and b"revoked" in page.data
    assert b"alice's notes" not in page.data

    # Gone from the listings; revoking again is 404; the other link and the file are untouched.
    assert listed(client, alice) == [kept["id"]]
    assert listed(client, alice, f"/files/{record['id']}/shares") == [kept["id"]]
    assert_json_error(client.delete(f"/shares/{link['id']}", headers=alice), 404)
    assert opened(client, kept).data == b"alice's notes, shared with a few people\n"
    assert client.get(record["download_url"], headers=alice).status_code == 200


def test_another_user_cannot_list_or_revoke_a_link(client, alice, bob, record):
    link = make_link(client, record["id"], alice)
    own = make_link(client, upload(client, "b.txt", b"bob's own file\n", bob)["id"], bob)

    assert listed(client, bob) == [own["id"]]
    # Alice's file and link answer Bob exactly as ones that never existed.
    theirs = client.get(f"/files/{record['id']}/shares", headers=bob)
    assert_json_error(theirs, 404)
    assert theirs.get_json() == client.get(f"/files/{'0' * 32}/shares", headers=bob).get_json()
    revoke = client.delete(f"/shares/{link['id']}", headers=bob)
    assert_json_error(revoke, 404)
    assert revoke.get_json() == client.delete(f"/shares/{UNKNOWN_LINK}", headers=bob).get_json()

    assert opened(client, link).status_code == 200
    assert listed(client, alice) == [link["id"]]


def test_an_admin_lists_and_revokes_anyones_links_and_the_owner_sees_links_an_admin_made(client, alice, record):
    by_alice = make_link(client, record["id"], alice)
    by_admin = make_link(client, record["id"], ADMIN)
    assert by_admin["created_by"] != by_alice["created_by"]
    # Alice's file: she sees and may revoke the link the admin made to it.
    assert listed(client, alice) == [by_admin["id"], by_alice["id"]]
    assert {by_alice["id"], by_admin["id"]} <= set(listed(client, ADMIN))
    assert listed(client, ADMIN, f"/files/{record['id']}/shares") == [by_admin["id"], by_alice["id"]]
    assert client.delete(f"/shares/{by_admin['id']}", headers=alice).status_code == 204
    assert client.delete(f"/shares/{by_alice['id']}", headers=ADMIN).status_code == 204
    assert_json_error(opened(client, by_alice), 410)
    assert_json_error(opened(client, by_admin), 410)


@pytest.mark.parametrize("some_id", ["nope", "0" * 31, "G" * 32, "A" * 32, "0" * 33, "%00" * 32, "%C3%A9" * 16])
def test_a_malformed_link_or_file_id_is_404(client, alice, some_id):
    for method, path in (("delete", f"/shares/{some_id}"), ("get", f"/files/{some_id}/shares"),
                         ("post", f"/files/{some_id}/share"), ("get", f"/files/{some_id}")):
        assert_json_error(client.open(path, method=method, headers=alice), 404)


def test_shares_page_newest_first(client, alice, record):
    made = [make_link(client, record["id"], alice)["id"] for _ in range(5)]
    seen, cursor = [], None
    while True:
        response = client.get("/shares?limit=2" + (f"&cursor={cursor}" if cursor else ""), headers=alice)
        body = response.get_json()
        assert len(body["shares"]) <= 2
        seen += [s["id"] for s in body["shares"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    first = client.get(f"/files/{record['id']}/shares?limit=3", headers=alice).get_json()
    assert [s["id"] for s in first["shares"]] == made[:1:-1] and first["next_cursor"]
    for query in ("?limit=0", "?limit=500", "?cursor=nonsense"):
        assert_json_error(client.get("/shares" + query, headers=alice), 400)
        assert_json_error(client.get(f"/files/{record['id']}/shares" + query, headers=alice), 400)


# ---------------------------------------------------------------- caps and rate limits


def test_live_links_per_file_are_capped(make_app):
    app = make_app(**TOKEN_SETTINGS, MAX_SHARES_PER_FILE=3)
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    record = upload(client, "a.txt", b"one file\n", alice)
    links = [make_link(client, record["id"], alice) for _ in range(3)]
    error = assert_json_error(share(client, record["id"], alice), 409)
    assert "3" in error and "revoke" in error.lower()
    assert len(listed(client, alice)) == 3
    # Revoking one makes room; another file has its own room.
    assert client.delete(f"/shares/{links[0]['id']}", headers=alice).status_code == 204
    make_link(client, record["id"], alice)
    assert_json_error(share(client, record["id"], alice), 409)
    other = upload(client, "b.txt", b"another file\n", alice)
    make_link(client, other["id"], alice)


def test_expired_links_do_not_count_against_the_cap(make_app):
    app = make_app(**TOKEN_SETTINGS, MAX_SHARES_PER_FILE=1)
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    record = upload(client, "a.txt", b"one file\n", alice)
    short = make_link(client, record["id"], alice, expires_in=1)
    assert_json_error(share(client, record["id"], alice), 409)
    time.sleep(max(0, datetime.fromisoformat(short["expires_at"].replace("Z", "+00:00")).timestamp()
                   - time.time()) + 0.2)
    assert listed(client, alice) == []
    make_link(client, record["id"], alice)


def test_minting_share_links_quickly_is_rate_limited(make_app):
    settings = {k: v for k, v in TOKEN_SETTINGS.items() if k != "RATE_LIMIT_SHARES"}
    app = make_app(**settings, MAX_SHARES_PER_FILE=0)
    assert app.config["RATE_LIMIT_SHARES"] == "60/minute"
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    record = upload(client, "a.txt", b"one file\n", alice)
    statuses = [share(client, record["id"], alice).status_code for _ in range(200)]
    assert statuses[:60] == [201] * 60 and set(statuses[60:]) == {429}
    refused = share(client, record["id"], alice)
    assert "share links" in assert_json_error(refused, 429).lower()
    assert refused.headers["Retry-After"].isdigit()
    assert len(client.get("/shares?limit=200", headers=alice).get_json()["shares"]) == 60
    # Bob's budget is his own.
    bob = create_user(client, "bob")["headers"]
    make_link(client, upload(client, "b.txt", b"bob's\n", bob)["id"], bob)


# ---------------------------------------------------------------- deletion and expiry


def test_deleting_the_file_deletes_its_links(token_app, client, alice, record):
    link = make_link(client, record["id"], alice)
    assert client.delete(f"/files/{record['id']}", headers=alice).status_code == 204
    assert_json_error(opened(client, link), 404)
    assert listed(client, alice) == []
    assert token_app.extensions["shares"].get(link["id"]) is None
    assert_json_error(client.delete(f"/shares/{link['id']}", headers=alice), 404)


def test_deleting_the_owner_deletes_their_links(token_app, client, alice, record):
    link = make_link(client, record["id"], alice)
    me = client.get("/me", headers=alice).get_json()
    assert client.delete(f"/users/{me['id']}", headers=ADMIN).status_code == 204
    assert token_app.extensions["shares"].get(link["id"]) is None
    assert_json_error(opened(client, link), 404)


def test_the_reaper_forgets_expired_links_and_they_still_say_expired(token_app, client, alice, record):
    short = make_link(client, record["id"], alice, expires_in=1)
    revoked = make_link(client, record["id"], alice, expires_in=1)
    live = make_link(client, record["id"], alice, expires_in=600)
    assert client.delete(f"/shares/{revoked['id']}", headers=alice).status_code == 204
    time.sleep(1.3)
    token_app.extensions["file_reaper"].reap()
    shares = token_app.extensions["shares"]
    assert shares.get(short["id"]) is None and shares.get(revoked["id"]) is None
    assert shares.get(live["id"]) is not None
    for link in (short, revoked):
        assert "expired" in assert_json_error(opened(client, link), 410)
    assert opened(client, live).status_code == 200


# ---------------------------------------------------------------- links made before 0003


def legacy_link(file_id: str, seconds: float = 600) -> str:
    """What POST /files/<id>/share answered before links were recorded."""
    token = URLSafeSerializer(KEY, salt="share-link-v1").dumps([file_id, time.time() + seconds])
    return f"/s/{token}"


def test_a_link_made_before_0003_keeps_working_after_the_upgrade(make_app, token_app, client, alice, record):
    old = legacy_link(record["id"])
    expired = legacy_link(record["id"], seconds=-1)
    # The database as it was before 0003, then the upgraded gateway started on it.
    engine = token_app.extensions["files"].engine
    with engine.connect() as conn:
        command.downgrade(migrate.alembic_config(conn), "0002")
        conn.commit()
    upgraded = make_app(**TOKEN_SETTINGS, SECRET_KEY=KEY, DATA_DIR=token_app.config["DATA_DIR"],
                        DATABASE_URL=token_app.config["DATABASE_URL"])
    assert migrate.current(engine) == migrate.head()
    stranger = upgraded.test_client()
    assert stranger.get(old).data == b"alice's notes, shared with a few people\n"
    assert_json_error(stranger.get(expired), 410)
    # Tampering still fails the signature.
    assert_json_error(stranger.get(old[:-2] + ("AA" if not old.endswith("AA") else "BB")), 403)
    # Deleting the file ends it, as it always did.
    assert upgraded.test_client().delete(f"/files/{record['id']}", headers=alice).status_code == 204
    assert_json_error(stranger.get(old), 404)


def test_share_legacy_links_off_refuses_links_made_before_0003(make_app):
    app = make_app(**TOKEN_SETTINGS, SECRET_KEY=KEY, SHARE_LEGACY_LINKS=False)
    client = app.test_client()
    alice = create_user(client, "alice")["headers"]
    record = upload(client, "a.txt", b"one file\n", alice)
    assert "revoked" in assert_json_error(client.get(legacy_link(record["id"])), 410)
    assert opened(client, make_link(client, record["id"], alice)).data == b"one file\n"


@pytest.mark.parametrize("payload", [
    "just a string", ["0" * 32], [UNKNOWN_LINK, "tomorrow"], [UNKNOWN_LINK, None], [[UNKNOWN_LINK], 4102444800],
    [12345, 4102444800], [UNKNOWN_LINK, float("inf")], {"id": UNKNOWN_LINK},
])
def test_a_correctly_signed_token_that_is_not_a_link_is_403(token_app, payload):
    token = URLSafeSerializer(KEY, salt="share-link-v2").dumps(payload)
    assert_json_error(token_app.test_client().get(f"/s/{token}"), 403)


# ---------------------------------------------------------------- AUTH=off and the document


def test_with_auth_off_links_are_listed_and_revoked_too(make_app):
    app = make_app()
    client = app.test_client()
    record = upload(client, "a.txt", b"one file\n")
    link = make_link(client, record["id"], {})
    assert link["created_by"] is None
    assert listed(client, {}) == [link["id"]]
    assert client.delete(f"/shares/{link['id']}").status_code == 204
    assert_json_error(opened(client, link), 410)


def test_share_answers_conform_to_the_openapi_document(make_app):
    app = make_app(**{**TOKEN_SETTINGS, "MAX_SHARES_PER_FILE": 1, "RATE_LIMIT_SHARES": "2/minute"})
    client = app.test_client()
    spec = client.get("/openapi.json").get_json()
    alice = create_user(client, "alice")["headers"]
    record = upload(client, "a.txt", b"one file\n", alice)
    made = share(client, record["id"], alice)
    answers = [made, share(client, record["id"], alice), share(client, record["id"], alice),
               share(client, "0" * 32, ADMIN), share(client, record["id"], ADMIN, json={"expires_in": 0})]
    assert [r.status_code for r in answers] == [201, 409, 429, 404, 400]
    for response in answers:
        conforms(spec, "POST", "/files/{file_id}/share", response)
    link = made.get_json()
    for response in (client.get("/shares", headers=alice), client.get("/shares?limit=0", headers=alice)):
        conforms(spec, "GET", "/shares", response)
    for path in (f"/files/{record['id']}/shares", f"/files/{'0' * 32}/shares"):
        conforms(spec, "GET", "/files/{file_id}/shares", client.get(path, headers=alice))
    conforms(spec, "GET", "/s/{token}", opened(client, link))
    revoked = client.delete(f"/shares/{link['id']}", headers=alice)
    again = client.delete(f"/shares/{link['id']}", headers=alice)
    assert (revoked.status_code, again.status_code) == (204, 404)
    for response in (revoked, again):
        conforms(spec, "DELETE", "/shares/{share_id}", response)
    for accept in ("application/json", "text/html"):
        gone = opened(client, link, Accept=accept)
        assert gone.status_code == 410
        conforms(spec, "GET", "/s/{token}", gone)

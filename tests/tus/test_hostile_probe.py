"""What a hostile probe of tus and the quotas found (issue 15), replayed through
the HTTP API: a final upload naming one partial upload many times, two finals
racing for one partial, a deferred-length upload growing past the quota,
expired files holding their bytes, and a tus reaper that fell behind.

Real app, real gRPC services, real database (a SQLite file, and PostgreSQL):
nothing is mocked.
"""
from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.accounts import TOKEN_SETTINGS, create_user

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
KiB = 1024
MiB = 1024 * KiB


def text(size: int, seed: int = 0) -> bytes:
    """``size`` bytes of plain text (libmagic: text/plain), different per seed."""
    line = f"line {seed:04d} the quick brown fox jumps over the lazy dog\n".encode()
    return (line * (size // len(line) + 1))[:size]


def meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(client, headers: dict, length: int | None = None, **extra) -> object:
    h = {**TUS, **headers, "Upload-Metadata": meta(filename="notes.txt"), **extra}
    if length is not None:
        h["Upload-Length"] = str(length)
    return client.post("/tus/", headers=h)


def patch(client, headers: dict, path: str, offset: int, data: bytes, **extra):
    return client.patch(path, data=data, content_type=OFFSET_STREAM,
                        headers={**TUS, **headers, "Upload-Offset": str(offset), **extra})


def partial(client, headers: dict, data: bytes) -> str:
    """A finished partial upload's path."""
    created = create(client, headers, len(data), **{"Upload-Concat": "partial"})
    assert created.status_code == 201, created.get_json()
    path = urlsplit(created.headers["Location"]).path
    assert patch(client, headers, path, 0, data).status_code == 204
    return path


def final(client, headers: dict, *paths: str):
    return create(client, headers, None, **{"Upload-Concat": "final;" + " ".join(paths)})


def stored_bytes(app) -> int:
    """Every byte under DATA_DIR/files: stored files, and tus uploads still collecting."""
    return sum(p.stat().st_size for p in (Path(app.config["DATA_DIR"]) / "files").rglob("*") if p.is_file())


def files_listed(client, headers: dict) -> list[dict]:
    response = client.get("/files?limit=200", headers=headers)
    assert response.status_code == 200
    return response.get_json()["files"]


def assert_sentence(response, status: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.is_json
    error = response.get_json()["error"]
    assert error.rstrip().endswith("."), error
    for word in words:
        assert word in error.lower(), error
    return error


@pytest.fixture
def quota_app(make_app):
    def make(**settings):
        return make_app(**TOKEN_SETTINGS, **settings)
    return make


# ---------------------------------------------------------------- concatenation


@pytest.mark.parametrize("auth, size, times", [("token", MiB, 45), ("off", 250_000, 209)])
def test_a_final_naming_one_partial_many_times_is_400_and_stores_nothing(make_app, auth, size, times):
    """Found: a 1 MiB partial named 45 times became a 45 MiB file against a
    2 MiB quota; with AUTH=off a 250 KB partial named 209 times a 52 MB file."""
    app = make_app(**TOKEN_SETTINGS, USER_QUOTA_BYTES=2 * MiB) if auth == "token" else make_app()
    client = app.test_client()
    user = create_user(client, "mallory")["headers"] if auth == "token" else {}
    data = text(size, 1)
    path = partial(client, user, data)

    response = final(client, user, *[path] * times)
    assert_sentence(response, 400, "more than once")
    assert "Location" not in response.headers
    assert files_listed(client, user) == []
    assert stored_bytes(app) == size  # the partial alone, nothing joined

    # Named once, it joins as it should: each partial upload is its own bytes, taken once.
    joined = final(client, user, path)
    assert joined.status_code == 201, joined.get_json()
    [record] = files_listed(client, user)
    assert record["size"] == size
    assert stored_bytes(app) == size


def test_a_partial_joined_once_cannot_be_joined_again(quota_app):
    app = quota_app(USER_QUOTA_BYTES=2 * MiB)
    client = app.test_client()
    user = create_user(client, "mallory")["headers"]
    first, second = partial(client, user, text(600 * KiB, 1)), partial(client, user, text(424 * KiB, 2))
    assert final(client, user, first, second).status_code == 201

    again = final(client, user, first)
    assert_sentence(again, 410, "already joined")
    assert "Location" not in again.headers
    assert final(client, user, second, first).status_code == 410
    # The partial itself says so too, and takes no more requests.
    assert client.head(first, headers={**TUS, **user}).status_code == 410
    assert_sentence(patch(client, user, first, 600 * KiB, b"x"), 410, "joined")
    assert client.delete(first, headers={**TUS, **user}).status_code == 410
    assert [r["size"] for r in files_listed(client, user)] == [MiB]
    assert client.get("/me", headers=user).get_json()["usage"] == {"files": 1, "bytes": MiB}


def _race(app, headers: dict, paths: list[str], racers: int) -> list:
    """``racers`` threads, each with its own client, POST the same final at once."""
    barrier, answers = threading.Barrier(racers), [None] * racers

    def run(i: int) -> None:
        client = app.test_client()
        barrier.wait(10)
        try:
            answers[i] = final(client, headers, *paths)
        except BaseException as exc:  # noqa: BLE001 - reported below
            answers[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return answers


def test_two_finals_racing_for_one_partial_only_one_takes_it(quota_app):
    """The taking is one atomic step in the database: of two finals sent at
    once, one joins the partial, the other is refused with a sentence (409
    while the join runs, 410 once it is done), never a second file."""
    app = quota_app(USER_QUOTA_BYTES=64 * MiB)
    client = app.test_client()
    user = create_user(client, "mallory")["headers"]
    for round_ in range(3):
        data = text(8 * MiB, round_)
        path = partial(client, user, data)
        answers = _race(app, user, [path], racers=2)
        for answer in answers:
            assert not isinstance(answer, BaseException), answer
        statuses = sorted(a.status_code for a in answers)
        assert statuses[0] == 201 and statuses[1] in (409, 410), [(a.status_code, a.get_json()) for a in answers]
        [loser] = [a for a in answers if a.status_code != 201]
        assert_sentence(loser, loser.status_code, "joined")
        assert "Location" not in loser.headers
    records = files_listed(client, user)
    assert len(records) == 3 and all(r["size"] == 8 * MiB for r in records)
    assert client.get("/me", headers=user).get_json()["usage"] == {"files": 3, "bytes": 24 * MiB}
    assert stored_bytes(app) == 24 * MiB


def test_a_partial_being_joined_takes_no_patch_delete_or_other_final(quota_app):
    app = quota_app(USER_QUOTA_BYTES=2 * MiB)
    client = app.test_client()
    user = create_user(client, "mallory")["headers"]
    path = partial(client, user, text(KiB))
    # Taken exactly as a final upload takes it, and held there as if its join were still running.
    assert app.extensions["tus"].move([path.rsplit("/", 1)[1]], "uploading", "joining")
    assert client.head(path, headers={**TUS, **user}).status_code == 200
    assert_sentence(patch(client, user, path, KiB, b""), 409, "being joined")
    assert_sentence(client.delete(path, headers={**TUS, **user}), 409, "being joined")
    assert_sentence(final(client, user, path), 409, "being joined")
    assert stored_bytes(app) == KiB


def test_a_final_is_checked_against_the_quota_with_its_real_length_before_any_byte_is_copied(quota_app):
    app = quota_app(USER_QUOTA_BYTES=2 * MiB)
    client = app.test_client()
    user = create_user(client, "mallory")["headers"]
    me = client.get("/me", headers=user).get_json()["id"]
    paths = [partial(client, user, text(MiB, i)) for i in range(2)]
    with app.app_context():
        app.extensions["accounts"].set_quota(me, MiB + MiB // 2, None)  # an admin lowers the quota meanwhile
    response = final(client, user, *paths)
    assert_sentence(response, 413, "quota")
    assert stored_bytes(app) == 2 * MiB  # the partials, and no copy of them
    # The partials were not taken: once there is room, they join.
    with app.app_context():
        app.extensions["accounts"].set_quota(me, 2 * MiB, None)
    assert final(client, user, *paths).status_code == 201
    assert client.get("/me", headers=user).get_json()["usage"] == {"files": 1, "bytes": 2 * MiB}


# ---------------------------------------------------------------- deferred length


def test_a_deferred_length_upload_is_refused_at_the_quota(quota_app):
    """Found: an upload created with Upload-Defer-Length: 1 held 40 MiB against
    a 2 MiB quota, each PATCH capped only by the file size limit."""
    app = quota_app(USER_QUOTA_BYTES=2 * MiB)
    client = app.test_client()
    user = create_user(client, "mallory")["headers"]
    created = create(client, user, **{"Upload-Defer-Length": "1"})
    assert created.status_code == 201
    path = urlsplit(created.headers["Location"]).path
    for i in range(2):
        assert patch(client, user, path, i * MiB, text(MiB, i)).status_code == 204

    assert_sentence(patch(client, user, path, 2 * MiB, text(MiB, 2)), 413, "quota")
    assert_sentence(patch(client, user, path, 2 * MiB, b"x"), 413, "quota")
    head = client.head(path, headers={**TUS, **user})
    assert head.status_code == 200 and head.headers["Upload-Offset"] == str(2 * MiB)
    assert stored_bytes(app) == 2 * MiB
    # An empty PATCH keeps it alive, as the spec allows, but holds no more room.
    assert patch(client, user, path, 2 * MiB, b"").status_code == 204
    assert_sentence(create(client, user, 1), 413, "quota")


def test_a_deferred_length_body_without_content_length_stops_at_the_byte_past_the_quota(quota_app):
    app = quota_app(USER_QUOTA_BYTES=2 * MiB)
    client = app.test_client()
    user = create_user(client, "mallory")["headers"]
    created = create(client, user, **{"Upload-Defer-Length": "1"})
    path = urlsplit(created.headers["Location"]).path
    assert patch(client, user, path, 0, text(MiB)).status_code == 204
    # A body of unknown length (no Content-Length): judged as it streams.
    response = client.patch(path, input_stream=io.BytesIO(text(4 * MiB, 1)), content_type=OFFSET_STREAM,
                            headers={**TUS, **user, "Upload-Offset": str(MiB)})
    assert_sentence(response, 413, "quota")
    head = client.head(path, headers={**TUS, **user})
    assert head.headers["Upload-Offset"] == str(MiB)  # the refused PATCH left nothing behind
    assert stored_bytes(app) == MiB


def test_a_deferred_length_cannot_be_set_past_the_quota(quota_app):
    app = quota_app(USER_QUOTA_BYTES=2 * MiB)
    client = app.test_client()
    user = create_user(client, "mallory")["headers"]
    path = urlsplit(create(client, user, **{"Upload-Defer-Length": "1"}).headers["Location"]).path
    assert patch(client, user, path, 0, text(KiB)).status_code == 204
    assert_sentence(patch(client, user, path, KiB, text(KiB, 1), **{"Upload-Length": str(3 * MiB)}), 413, "quota")
    head = client.head(path, headers={**TUS, **user})
    assert head.headers["Upload-Defer-Length"] == "1" and head.headers["Upload-Offset"] == str(KiB)
    # Within the quota it is taken, and the upload finishes.
    done = patch(client, user, path, KiB, text(KiB, 1), **{"Upload-Length": str(2 * KiB)})
    assert done.status_code == 204 and done.headers.get("Upload-File-Id")


# ---------------------------------------------------------------- expired bytes and the reapers


def _post_expiring(client, headers: dict, data: bytes):
    return client.post("/upload", data={"expires_in": "1", "file": (io.BytesIO(data), "short.txt")},
                       content_type="multipart/form-data", headers=headers)


def test_expired_files_hold_no_room_past_the_quota(quota_app):
    """Found: files with expires_in=1 left the quota at once but kept their
    bytes until the reaper's next pass (14.8 MiB held against 2 MiB). Their
    bytes now go before new bytes take their room."""
    app = quota_app(USER_QUOTA_BYTES=MiB, FILE_REAP_INTERVAL=3600)
    client = app.test_client()
    user = create_user(client, "mallory")["headers"]
    for i in range(3):
        response = _post_expiring(client, user, text(MiB, i))
        assert response.status_code == 201, response.get_json()
        assert stored_bytes(app) <= MiB, f"upload {i}: {stored_bytes(app)} bytes held against a 1 MiB quota"
        time.sleep(1.1)
    # tus too: its creation makes the room it announces.
    created = create(client, user, MiB)
    assert created.status_code == 201, created.get_json()
    assert stored_bytes(app) == 0
    done = patch(client, user, urlsplit(created.headers["Location"]).path, 0, text(MiB, 9))
    assert done.status_code == 204 and stored_bytes(app) == MiB


def test_the_tus_reaper_keeps_up_with_what_a_user_may_create(make_app):
    """Found: one pass removed at most 100 expired uploads (every 5 minutes)
    while one user may create 120 a minute. A pass now goes on until nothing
    expired is left."""
    app = make_app(TUS_EXPIRY=1, TUS_REAP_INTERVAL=3600)
    client = app.test_client()
    paths = []
    for _ in range(250):
        created = create(client, {}, 10)
        assert created.status_code == 201
        paths.append(urlsplit(created.headers["Location"]).path)
    # One finished (its record is forgotten once its time is up), the others abandoned.
    assert patch(client, {}, paths[-1], 0, b"0123456789").status_code == 204
    time.sleep(1.2)
    assert app.extensions["tus"].reap() == 250
    assert stored_bytes(app) == 10  # the finished file's bytes only
    assert {client.head(p, headers=TUS).status_code for p in paths[:-1]} == {410}
    assert client.head(paths[-1], headers=TUS).status_code == 404

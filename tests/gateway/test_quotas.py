"""Per-user quotas (AUTH=token): USER_QUOTA_BYTES and USER_QUOTA_FILES, per-user
overrides, no quota for admins or with AUTH=off. A refused upload answers 413
JSON with a sentence about the quota and leaves nothing stored.

Real app, real gRPC services, real SQLite: nothing is mocked.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.accounts import ADMIN, TOKEN_SETTINGS, create_user
from tests.samples import make_sample

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
MiB = 1024 * 1024


def text(size: int, seed: int = 0) -> bytes:
    """``size`` bytes of plain text (libmagic: text/plain), different per seed."""
    line = f"line {seed:04d} the quick brown fox jumps over the lazy dog\n".encode()
    return (line * (size // len(line) + 1))[:size]


def post_files(client, headers: dict, *files: tuple[str, bytes]):
    parts = [(io.BytesIO(data), name) for name, data in files]
    return client.post("/upload", data={"file": parts if len(parts) > 1 else parts[0]},
                       content_type="multipart/form-data", headers=headers)


def upload(client, headers: dict, name: str, data: bytes) -> dict:
    response = post_files(client, headers, (name, data))
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def listed(client, headers: dict) -> list[str]:
    response = client.get("/files?limit=200", headers=headers)
    assert response.status_code == 200
    return [r["id"] for r in response.get_json()["files"]]


def stored_files(app) -> set[str]:
    """Everything under DATA_DIR/files and DATA_DIR/thumbnails, temp files included."""
    root = Path(app.config["DATA_DIR"])
    return {str(p.relative_to(root)) for area in ("files", "thumbnails")
            for p in (root / area).rglob("*") if p.is_file()}


def assert_quota_refusal(response):
    assert response.status_code == 413, (response.status_code, response.get_data(as_text=True)[:300])
    assert response.is_json
    error = response.get_json()["error"]
    assert "quota" in error.lower(), error
    assert error.rstrip().endswith("."), "a sentence a person understands"


def tus_create(client, headers: dict, length: int | None, name: str = "notes.txt", **extra):
    h = {**TUS, **headers, **extra}
    if length is not None:
        h["Upload-Length"] = str(length)
    h["Upload-Metadata"] = f"filename {base64.b64encode(name.encode()).decode()}"
    return client.post("/tus/", headers=h)


def tus_patch(client, headers: dict, path: str, offset: int, data: bytes):
    return client.patch(path, data=data, content_type=OFFSET_STREAM,
                        headers={**TUS, **headers, "Upload-Offset": str(offset)})


@pytest.fixture
def quota_app(make_app):
    def make(**settings):
        return make_app(**TOKEN_SETTINGS, **settings)
    return make


# ---------------------------------------------------------------- bytes


def test_an_upload_past_the_byte_quota_is_413_and_nothing_is_stored(quota_app):
    app = quota_app(USER_QUOTA_BYTES=1000)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    first = upload(client, user, "a.txt", text(600, 1))
    before_list, before_disk = listed(client, user), stored_files(app)

    response = post_files(client, user, ("b.txt", text(500, 2)))
    assert_quota_refusal(response)
    # It says where the user stands: 600 of 1000 bytes used.
    assert "600 bytes" in response.get_json()["error"] and "1000 bytes" in response.get_json()["error"]
    assert listed(client, user) == before_list == [first["id"]]
    assert stored_files(app) == before_disk

    # Exactly filling the quota is allowed; one byte more is not.
    assert post_files(client, user, ("c.txt", text(400, 3))).status_code == 201
    assert_quota_refusal(post_files(client, user, ("d.txt", text(1, 4))))
    me = client.get("/me", headers=user).get_json()
    assert me["usage"] == {"files": 2, "bytes": 1000}
    assert me["quota"]["bytes"] == 1000


def test_a_single_file_larger_than_the_whole_quota_is_refused(quota_app):
    app = quota_app(USER_QUOTA_BYTES=1000)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    assert_quota_refusal(post_files(client, user, ("big.txt", text(5000))))
    assert listed(client, user) == []
    assert stored_files(app) == set()


class UnreadableBody:
    """A request body announced as ``size`` bytes that has nothing to give: a
    request that tries to read it finds it cut short."""

    def __init__(self, size: int):
        self.size = size
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    # The test client measures the stream it is given (seek to the end, tell, seek back).
    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = self.size + offset if whence == 2 else offset
        return self.position


def _announce(client, headers: dict, content_length: int):
    return client.post("/upload", input_stream=UnreadableBody(content_length),
                       content_type="multipart/form-data; boundary=quota-test-boundary", headers=headers)


def test_a_content_length_far_over_the_quota_is_refused_before_the_body_is_read(quota_app):
    app = quota_app(USER_QUOTA_BYTES=1000)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    # The body never arrives: only an answer given from Content-Length alone can be the quota's.
    response = _announce(client, user, 10 * MiB)
    assert_quota_refusal(response)
    assert listed(client, user) == []
    assert stored_files(app) == set()

    # The same request without a quota to enforce (an admin) does read the body, and finds it cut short.
    control = _announce(client, ADMIN, 10 * MiB)
    assert control.status_code == 400, control.get_json()


def test_a_content_length_within_the_framing_allowance_is_judged_while_streaming(quota_app):
    """Content-Length counts the multipart framing too: a little over the
    remaining quota is not refused up front, only the file's own bytes count."""
    app = quota_app(USER_QUOTA_BYTES=1000)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    response = post_files(client, user, ("fits.txt", text(1000)))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["size"] == 1000


# ---------------------------------------------------------------- files


def test_the_file_count_quota(quota_app):
    app = quota_app(USER_QUOTA_FILES=3)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    ids = [upload(client, user, f"f{i}.txt", text(100, i))["id"] for i in range(3)]
    before_disk = stored_files(app)
    response = post_files(client, user, ("f3.txt", text(100, 3)))
    assert_quota_refusal(response)
    assert "3 files" in response.get_json()["error"]
    assert sorted(listed(client, user)) == sorted(ids)
    assert stored_files(app) == before_disk


def test_several_files_in_one_request_that_together_pass_the_byte_quota_store_none(quota_app, tmp_path):
    png = make_sample("png", tmp_path).read_bytes()
    app = quota_app(USER_QUOTA_BYTES=len(png) * 3 // 2)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    response = post_files(client, user, ("one.png", png), ("two.png", png))
    assert_quota_refusal(response)
    assert listed(client, user) == []
    # The first image was stored and thumbnailed before the second passed the quota: all rolled back.
    assert stored_files(app) == set()
    # Each alone fits.
    assert post_files(client, user, ("one.png", png)).status_code == 201


def test_several_files_in_one_request_that_together_pass_the_file_quota_store_none(quota_app):
    app = quota_app(USER_QUOTA_FILES=2)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    response = post_files(client, user, *[(f"f{i}.txt", text(100, i)) for i in range(3)])
    assert_quota_refusal(response)
    assert listed(client, user) == []
    assert stored_files(app) == set()
    response = post_files(client, user, *[(f"f{i}.txt", text(100, i)) for i in range(2)])
    assert response.status_code == 201
    assert len(response.get_json()["files"]) == 2


# ---------------------------------------------------------------- tus


def test_tus_creation_over_the_byte_quota_is_413(quota_app):
    app = quota_app(USER_QUOTA_BYTES=1000)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    response = tus_create(client, user, 1001)
    assert_quota_refusal(response)
    assert "Location" not in response.headers
    assert response.headers.get("Tus-Resumable") == "1.0.0"

    upload(client, user, "a.txt", text(600))
    assert_quota_refusal(tus_create(client, user, 401))
    assert len(stored_files(app)) == 1  # only the stored a.txt: no bytes kept for a refused creation
    created = tus_create(client, user, 400)
    assert created.status_code == 201
    path = urlsplit(created.headers["Location"]).path
    finished = tus_patch(client, user, path, 0, text(400, 5))
    assert finished.status_code == 204
    assert finished.headers["Upload-File-Id"] in listed(client, user)


def test_tus_creation_over_the_file_quota_is_413(quota_app):
    app = quota_app(USER_QUOTA_FILES=1)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    upload(client, user, "a.txt", text(100))
    response = tus_create(client, user, 100)
    assert_quota_refusal(response)
    assert "Location" not in response.headers


def test_an_unfinished_tus_upload_keeps_its_room(quota_app):
    """The length a tus upload announces counts at once, so open uploads (and
    uploads made meanwhile) cannot pass the quota together."""
    app = quota_app(USER_QUOTA_BYTES=1000)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    created = tus_create(client, user, 600)
    assert created.status_code == 201
    path = urlsplit(created.headers["Location"]).path

    assert_quota_refusal(post_files(client, user, ("meanwhile.txt", text(600, 1))))
    assert_quota_refusal(tus_create(client, user, 600, name="second.txt"))
    assert client.get("/me", headers=user).get_json()["usage"]["files"] == 0

    # Its own last byte is not counted twice.
    assert tus_patch(client, user, path, 0, text(600, 2)).status_code == 204
    [file_id] = listed(client, user)
    assert client.get(f"/files/{file_id}", headers=user).get_json()["size"] == 600

    # A terminated upload gives its room back.
    other = tus_create(client, user, 300, name="third.txt")
    assert other.status_code == 201
    assert_quota_refusal(post_files(client, user, ("fourth.txt", text(300, 3))))
    assert client.delete(urlsplit(other.headers["Location"]).path, headers={**TUS, **user}).status_code == 204
    assert upload(client, user, "fourth.txt", text(300, 3))["size"] == 300


# ---------------------------------------------------------------- who has which quota


def test_a_per_user_override_beats_the_default(quota_app):
    app = quota_app(USER_QUOTA_FILES=1)
    client = app.test_client()
    alice, bob, carol = (create_user(client, name) for name in ("alice", "bob", "carol"))

    with app.app_context():
        app.extensions["accounts"].set_quota(alice["id"], None, 3)
    result = app.test_cli_runner().invoke(args=["users", "quota", "bob", "--files", "0"])
    assert result.exit_code == 0, result.output
    assert "bob" in result.output

    for i in range(3):
        upload(client, alice["headers"], f"a{i}.txt", text(100, i))
    assert_quota_refusal(post_files(client, alice["headers"], ("a3.txt", text(100, 3))))

    for i in range(4):  # 0: no limit for bob
        upload(client, bob["headers"], f"b{i}.txt", text(100, i))

    upload(client, carol["headers"], "c0.txt", text(100))
    assert_quota_refusal(post_files(client, carol["headers"], ("c1.txt", text(100, 1))))

    assert client.get("/me", headers=alice["headers"]).get_json()["quota"]["files"] == 3
    assert client.get("/me", headers=bob["headers"]).get_json()["quota"]["files"] == 0
    assert client.get("/me", headers=carol["headers"]).get_json()["quota"]["files"] == 1


def test_a_byte_quota_set_from_the_cli_applies_where_the_default_is_none(quota_app):
    app = quota_app()
    client = app.test_client()
    alice = create_user(client, "alice")
    result = app.test_cli_runner().invoke(args=["users", "quota", "alice", "--bytes", "150"])
    assert result.exit_code == 0, result.output
    upload(client, alice["headers"], "a.txt", text(100))
    assert_quota_refusal(post_files(client, alice["headers"], ("b.txt", text(100, 1))))
    assert_quota_refusal(tus_create(client, alice["headers"], 100))
    # Back to the default (none) with --default.
    assert app.test_cli_runner().invoke(args=["users", "quota", "alice", "--default"]).exit_code == 0
    upload(client, alice["headers"], "b.txt", text(100, 1))


def test_the_cli_refuses_an_unknown_user(quota_app):
    app = quota_app()
    result = app.test_cli_runner().invoke(args=["users", "quota", "nobody", "--files", "3"])
    assert result.exit_code != 0
    assert "nobody" in result.output


def test_one_users_usage_does_not_count_against_another(quota_app):
    app = quota_app(USER_QUOTA_FILES=1, USER_QUOTA_BYTES=1000)
    client = app.test_client()
    alice, bob = create_user(client, "alice")["headers"], create_user(client, "bob")["headers"]
    upload(client, alice, "a.txt", text(900))
    assert_quota_refusal(post_files(client, alice, ("a2.txt", text(10))))
    upload(client, bob, "b.txt", text(900, 1))


def test_admins_have_no_quota(quota_app):
    app = quota_app(USER_QUOTA_FILES=1, USER_QUOTA_BYTES=500)
    client = app.test_client()
    root = create_user(client, "root", admin=True)["headers"]
    for headers in (ADMIN, root):
        for i in range(3):
            upload(client, headers, f"f{i}.txt", text(400, i))
        created = tus_create(client, headers, 10_000)
        assert created.status_code == 201


def test_deleting_files_frees_room(quota_app):
    app = quota_app(USER_QUOTA_FILES=2, USER_QUOTA_BYTES=1000)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    first = upload(client, user, "a.txt", text(300))
    upload(client, user, "b.txt", text(300, 1))
    assert_quota_refusal(post_files(client, user, ("c.txt", text(300, 2))))
    assert client.delete(f"/files/{first['id']}", headers=user).status_code == 204
    third = upload(client, user, "c.txt", text(300, 2))
    assert third["id"] in listed(client, user)

    # Bytes too: at 600 of 1000, 500 more does not fit until something goes.
    assert client.delete(f"/files/{third['id']}", headers=user).status_code == 204
    big = upload(client, user, "big.txt", text(600, 3))
    assert_quota_refusal(post_files(client, user, ("more.txt", text(500, 4))))
    assert client.delete(f"/files/{big['id']}", headers=user).status_code == 204
    upload(client, user, "more.txt", text(500, 4))


def test_with_auth_off_there_is_no_quota(make_app):
    app = make_app(USER_QUOTA_FILES=1, USER_QUOTA_BYTES=100)
    client = app.test_client()
    for i in range(3):
        assert post_files(client, {}, (f"f{i}.txt", text(500, i))).status_code == 201
    assert tus_create(client, {}, 10_000).status_code == 201
    assert len(listed(client, {})) == 3


def test_partial_uploads_count_their_bytes_and_the_join_does_not_count_them_twice(quota_app):
    """Partial uploads are bytes on disk before they are a file: they count
    against the byte quota when created, and joining them adds no bytes."""
    app = quota_app(USER_QUOTA_BYTES=1000)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    first = tus_create(client, user, 600, **{"Upload-Concat": "partial"})
    assert first.status_code == 201
    assert_quota_refusal(tus_create(client, user, 600, **{"Upload-Concat": "partial"}))

    with app.app_context():
        app.extensions["accounts"].set_quota(client.get("/me", headers=user).get_json()["id"], 1200, None)
    second = tus_create(client, user, 600, **{"Upload-Concat": "partial"})
    assert second.status_code == 201
    parts = [urlsplit(r.headers["Location"]).path for r in (first, second)]
    for i, path in enumerate(parts):
        assert tus_patch(client, user, path, 0, text(600, i)).status_code == 204
    joined = tus_create(client, user, None, name="joined.txt", **{"Upload-Concat": "final;" + " ".join(parts)})
    assert joined.status_code == 201, joined.get_json()
    record = client.get(f"/files/{joined.headers['Upload-File-Id']}", headers=user).get_json()
    assert record["size"] == 1200
    assert client.get("/me", headers=user).get_json()["usage"] == {"files": 1, "bytes": 1200}


def test_a_deferred_length_upload_counts_what_has_arrived(quota_app):
    app = quota_app(USER_QUOTA_BYTES=1000)
    client = app.test_client()
    user = create_user(client, "alice")["headers"]
    created = tus_create(client, user, None, **{"Upload-Defer-Length": "1"})
    assert created.status_code == 201
    path = urlsplit(created.headers["Location"]).path
    assert tus_patch(client, user, path, 0, text(800)).status_code == 204
    assert_quota_refusal(post_files(client, user, ("more.txt", text(300, 1))))


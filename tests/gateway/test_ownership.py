"""Ownership with AUTH=token (IDOR): a user reaches only their own files and
tus uploads; another user's ids answer exactly like ids that never existed
(404, never 403); an admin sees and manages everything. With AUTH=off the
gateway stays open as before.

Real app, real gRPC services, real SQLite: nothing is mocked.
"""
from __future__ import annotations

import base64
import hashlib
import io
from urllib.parse import urlsplit

import pytest

from tests.accounts import ADMIN, TOKEN_SETTINGS, create_user
from tests.samples import make_sample

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
TEXT = b"".join(b"%04d the quick brown fox jumps over the lazy dog\n" % i for i in range(40))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def upload(client, headers: dict, name: str, data: bytes) -> dict:
    response = client.post("/upload", data={"file": (io.BytesIO(data), name)},
                           content_type="multipart/form-data", headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def tus_create(client, headers: dict, length: int | None = None, concat: str | None = None,
               name: str | None = "notes.txt"):
    h = {**TUS, **headers}
    if length is not None:
        h["Upload-Length"] = str(length)
    if concat:
        h["Upload-Concat"] = concat
    if name:
        h["Upload-Metadata"] = metadata(filename=name, filetype="text/plain")
    return client.post("/tus/", headers=h)


def tus_path(response) -> str:
    assert response.status_code == 201, response.get_data(as_text=True)
    return urlsplit(response.headers["Location"]).path


def tus_patch(client, headers: dict, path: str, offset: int, data: bytes):
    return client.patch(path, data=data, content_type=OFFSET_STREAM,
                        headers={**TUS, **headers, "Upload-Offset": str(offset)})


def listed_ids(client, headers: dict) -> set[str]:
    response = client.get("/files?limit=200", headers=headers)
    assert response.status_code == 200
    return {r["id"] for r in response.get_json()["files"]}


@pytest.fixture
def world(make_app, tmp_path):
    """Alice (who owns an image, an unfinished tus upload and a finished partial), Bob, and the admin."""
    app = make_app(**TOKEN_SETTINGS)
    client = app.test_client()
    alice = create_user(client, "alice")
    bob = create_user(client, "bob")
    A, B = alice["headers"], bob["headers"]

    image = make_sample("png", tmp_path).read_bytes()
    record = upload(client, A, "holiday.png", image)
    assert record["thumbnail_url"], "the image should have a thumbnail"
    bob_record = upload(client, B, "bob.txt", b"bob's own words\n")

    tus_url = tus_path(tus_create(client, A, len(TEXT)))
    assert tus_patch(client, A, tus_url, 0, TEXT[:100]).status_code == 204

    part = b"partial bytes of alice\n"
    partial_url = tus_path(tus_create(client, A, len(part), concat="partial", name=None))
    assert tus_patch(client, A, partial_url, 0, part).status_code == 204

    return {"app": app, "client": client, "A": A, "B": B, "alice": alice, "bob": bob, "image": image,
            "record": record, "bob_record": bob_record, "tus_url": tus_url, "partial_url": partial_url,
            "part": part}


def thumbnail_name(record: dict) -> str:
    return record["thumbnail_url"].rsplit("/", 1)[1]


def assert_alice_intact(w):
    client, A, record = w["client"], w["A"], w["record"]
    got = client.get(f"/files/{record['id']}", headers=A)
    assert got.status_code == 200
    assert got.get_json() == record
    download = client.get(record["download_url"], headers=A)
    assert download.status_code == 200
    assert sha256(download.data) == sha256(w["image"]) == record["sha256"]
    thumb = client.get(record["thumbnail_url"], headers=A)
    assert thumb.status_code == 200 and thumb.data
    assert record["id"] in listed_ids(client, A)
    # The tus upload did not move and is still Alice's to finish.
    head = client.head(w["tus_url"], headers={**TUS, **A})
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == "100"


def test_another_users_file_ids_answer_404_like_unknown_ones(world):
    w = world
    client, B, record = w["client"], w["B"], w["record"]
    fake_name = UNKNOWN_ID + ".png"
    cases = [
        ("get", f"/files/{record['id']}", f"/files/{UNKNOWN_ID}", {}),
        ("delete", f"/files/{record['id']}", f"/files/{UNKNOWN_ID}", {}),
        ("get", f"/uploads/{record['filename']}", f"/uploads/{fake_name}", {}),
        ("get", f"/thumbnails/{thumbnail_name(record)}", f"/thumbnails/{fake_name}", {}),
        ("post", f"/files/{record['id']}/share", f"/files/{UNKNOWN_ID}/share", {"json": {"expires_in": 60}}),
    ]
    for method, path, unknown, kwargs in cases:
        theirs = getattr(client, method)(path, headers=B, **kwargs)
        nothing = getattr(client, method)(unknown, headers=B, **kwargs)
        assert theirs.status_code == 404, (method, path, theirs.status_code)
        assert theirs.is_json and theirs.get_json()["error"]
        # Existence must not leak: the same answer as for something that never existed.
        assert theirs.get_json() == nothing.get_json(), (method, path)
        assert theirs.data == nothing.data
    assert_alice_intact(w)


def test_another_user_cannot_range_or_conditionally_probe_a_download(world):
    w = world
    client, B, record = w["client"], w["B"], w["record"]
    for headers in ({"Range": "bytes=0-9"}, {"If-None-Match": f'"{record["sha256"]}"'}):
        response = client.get(record["download_url"], headers={**B, **headers})
        assert response.status_code == 404
        assert not response.data.startswith(w["image"][:10])
    assert_alice_intact(w)


def test_another_users_tus_upload_answers_404(world):
    w = world
    client, B = w["client"], w["B"]
    unknown = f"/tus/{UNKNOWN_ID}"

    head = client.head(w["tus_url"], headers={**TUS, **B})
    assert head.status_code == 404
    assert "Upload-Offset" not in head.headers and "Upload-Length" not in head.headers
    assert client.head(unknown, headers={**TUS, **B}).status_code == 404

    patch = tus_patch(client, B, w["tus_url"], 100, TEXT[100:200])
    assert patch.status_code == 404
    assert patch.get_json() == tus_patch(client, B, unknown, 100, TEXT[100:200]).get_json()

    # The method-override route is the same door.
    override = client.post(w["tus_url"], data=TEXT[100:200], content_type=OFFSET_STREAM,
                           headers={**TUS, **B, "Upload-Offset": "100", "X-HTTP-Method-Override": "PATCH"})
    assert override.status_code == 404

    delete = client.delete(w["tus_url"], headers={**TUS, **B})
    assert delete.status_code == 404
    assert delete.get_json() == client.delete(unknown, headers={**TUS, **B}).get_json()
    override = client.post(w["tus_url"], headers={**TUS, **B, "X-HTTP-Method-Override": "DELETE"})
    assert override.status_code == 404

    # Bob's partial tries were not written and Alice can still finish her upload.
    assert_alice_intact(w)
    finished = tus_patch(client, w["A"], w["tus_url"], 100, TEXT[100:])
    assert finished.status_code == 204
    file_id = finished.headers["Upload-File-Id"]
    got = client.get(f"/files/{file_id}", headers=w["A"]).get_json()
    assert got["sha256"] == sha256(TEXT)
    assert file_id not in listed_ids(client, B)


def test_another_users_partial_cannot_be_concatenated(world):
    w = world
    client, A, B = w["client"], w["A"], w["B"]
    mine = b"bob's partial\n"
    bob_part = tus_path(tus_create(client, B, len(mine), concat="partial", name=None))
    assert tus_patch(client, B, bob_part, 0, mine).status_code == 204

    def final(headers, *paths):
        return tus_create(client, headers, concat="final;" + " ".join(paths), name="joined.txt")

    theirs = final(B, bob_part, w["partial_url"])
    nothing = final(B, bob_part, f"/tus/{UNKNOWN_ID}")
    assert theirs.status_code == 404, theirs.get_json()
    assert "Location" not in theirs.headers
    assert theirs.get_json()["error"]
    # Only the id differs between the two messages: nothing else tells them apart.
    assert theirs.get_json()["error"].replace(w["partial_url"].rsplit("/", 1)[1], "X") == \
        nothing.get_json()["error"].replace(UNKNOWN_ID, "X")
    assert listed_ids(client, B) == {w["bob_record"]["id"]}

    # Alice's partial is untouched: she can still join it, and the file holds her bytes.
    joined = final(A, w["partial_url"])
    assert joined.status_code == 201, joined.get_json()
    record = client.get(f"/files/{joined.headers['Upload-File-Id']}", headers=A).get_json()
    assert record["sha256"] == sha256(w["part"])
    # ...and Bob's own partial is still his to join.
    own = final(B, bob_part)
    assert own.status_code == 201, own.get_json()


def test_listing_shows_only_the_callers_files(world):
    w = world
    client = w["client"]
    assert listed_ids(client, w["B"]) == {w["bob_record"]["id"]}
    assert listed_ids(client, w["A"]) == {w["record"]["id"]}
    # Paging does not slip another user's files in either.
    first = client.get("/files?limit=1", headers=w["B"]).get_json()
    assert [r["id"] for r in first["files"]] == [w["bob_record"]["id"]]
    assert first["next_cursor"] is None


def test_a_fresh_user_sees_nothing(world):
    carol = create_user(world["client"], "carol")
    assert listed_ids(world["client"], carol["headers"]) == set()


def test_without_credentials_everything_is_401(world):
    w = world
    client, record = w["client"], w["record"]
    for method, path in (("get", "/files"), ("get", f"/files/{record['id']}"), ("delete", f"/files/{record['id']}"),
                         ("get", record["download_url"]), ("get", record["thumbnail_url"]),
                         ("post", f"/files/{record['id']}/share")):
        response = getattr(client, method)(path)
        assert response.status_code == 401, (method, path)
        assert response.get_json()["error"]
    assert client.head(w["tus_url"], headers=TUS).status_code == 401
    assert_alice_intact(w)


def test_admin_sees_reads_and_deletes_everyone_s_files(world):
    w = world
    client, record = w["client"], w["record"]
    assert listed_ids(client, ADMIN) >= {record["id"], w["bob_record"]["id"]}
    assert client.get(f"/files/{record['id']}", headers=ADMIN).get_json() == record
    download = client.get(record["download_url"], headers=ADMIN)
    assert download.status_code == 200 and sha256(download.data) == record["sha256"]
    assert client.get(record["thumbnail_url"], headers=ADMIN).status_code == 200
    assert client.head(w["tus_url"], headers={**TUS, **ADMIN}).status_code == 200

    assert client.delete(f"/files/{record['id']}", headers=ADMIN).status_code == 204
    assert client.get(f"/files/{record['id']}", headers=w["A"]).status_code == 404
    assert client.get(record["download_url"], headers=w["A"]).status_code == 404
    assert client.get(record["thumbnail_url"], headers=w["A"]).status_code == 404
    assert record["id"] not in listed_ids(client, ADMIN)
    # Bob's file is untouched by the admin's delete of Alice's.
    assert client.get(f"/files/{w['bob_record']['id']}", headers=w["B"]).status_code == 200


def test_an_admin_user_created_through_the_api_sees_everything(world):
    w = world
    root = create_user(w["client"], "root", admin=True)
    ids = listed_ids(w["client"], root["headers"])
    assert {w["record"]["id"], w["bob_record"]["id"]} <= ids
    assert w["client"].get(w["record"]["download_url"], headers=root["headers"]).status_code == 200


def test_owner_can_delete_own_file_and_then_it_is_gone(world):
    w = world
    client, A, record = w["client"], w["A"], w["record"]
    assert client.delete(f"/files/{record['id']}", headers=A).status_code == 204
    assert client.get(f"/files/{record['id']}", headers=A).status_code == 404
    assert client.get(record["download_url"], headers=A).status_code == 404
    assert client.get(record["thumbnail_url"], headers=A).status_code == 404


def test_with_auth_off_everything_stays_open(client, tmp_path):
    """The default app (AUTH=off): no token anywhere, everyone's files are everyone's."""
    image = make_sample("png", tmp_path).read_bytes()
    record = upload(client, {}, "open.png", image)
    assert record["thumbnail_url"]
    assert record["id"] in listed_ids(client, {})
    assert client.get(f"/files/{record['id']}").get_json() == record
    download = client.get(record["download_url"])
    assert download.status_code == 200 and sha256(download.data) == sha256(image)
    assert client.get(record["thumbnail_url"]).status_code == 200

    url = tus_path(tus_create(client, {}, len(TEXT)))
    finished = tus_patch(client, {}, url, 0, TEXT)
    assert finished.status_code == 204
    assert client.get(f"/files/{finished.headers['Upload-File-Id']}").get_json()["sha256"] == sha256(TEXT)

    assert client.delete(f"/files/{record['id']}").status_code == 204
    assert client.get(record["download_url"]).status_code == 404
    # Accounts endpoints do not exist with AUTH=off.
    assert client.get("/me").status_code == 404

"""The sha256 of a tus upload, taken as its bytes arrive (gateway/tus/hashes.py),
and the fallback when this process did not see every byte."""
from __future__ import annotations

import hashlib

from gateway.tus.hashes import RunningHashes
from tests.tus.conftest import MiB, b64, text_bytes

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True

TUS = {"Tus-Resumable": "1.0.0"}


def create(client, data: bytes, name: str = "notes.txt") -> str:
    response = client.post("/tus/", headers={**TUS, "Upload-Length": str(len(data)),
                                             "Upload-Metadata": f"filename {b64(name)}"})
    assert response.status_code == 201, response.get_json()
    return response.headers["Location"]


def patch(client, location: str, offset: int, data: bytes):
    return client.patch(location, data=data, headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})


def stored_sha256(client, response) -> str:
    file_id = response.headers["Upload-File-Id"]
    return client.get(f"/files/{file_id}").get_json()["sha256"]


def test_a_hash_resumes_only_at_the_offset_it_reached():
    hashes = RunningHashes()
    first = hashes.resume("u", 0)
    first.update(b"abc")
    hashes.keep("u", 3, first)
    assert hashes.resume("u", 2) is None  # not where it stopped: dropped, the file is hashed at the end
    assert hashes.digest("u", 3) is None
    again = hashes.resume("u", 0)
    again.update(b"abcdef")
    hashes.keep("u", 6, again)
    assert hashes.digest("u", 5) is None
    assert hashes.resume("u", 6) is None  # a new upload at a non-zero offset gets no hash


def test_the_oldest_hashes_go_first_beyond_capacity():
    hashes = RunningHashes(capacity=2)
    for name in "abc":
        hashes.keep(name, 1, hashes.resume(name, 0))
    assert hashes.digest("a", 1) is None
    assert hashes.digest("c", 1) == hashlib.sha256().hexdigest()  # nothing was fed: the empty hash


def test_several_patches_in_one_process_give_the_file_s_sha256(make_app):
    client = make_app().test_client()
    data = text_bytes(3 * MiB + 123, seed=4)
    location = create(client, data)
    pieces = [data[:MiB], data[MiB:2 * MiB + 7], data[2 * MiB + 7:]]
    offset = 0
    for piece in pieces:
        response = patch(client, location, offset, piece)
        assert response.status_code == 204
        offset += len(piece)
    assert stored_sha256(client, response) == hashlib.sha256(data).hexdigest()


def test_an_upload_continued_by_another_worker_is_hashed_from_its_file(make_app, tmp_path):
    # Two apps on one data folder and database: two gunicorn workers (or replicas).
    first_app = make_app(DATA_DIR=str(tmp_path / "shared"))
    second_app = make_app(DATA_DIR=str(tmp_path / "shared"), DATABASE_URL=first_app.config["DATABASE_URL"])
    first, second = first_app.test_client(), second_app.test_client()
    data = text_bytes(2 * MiB, seed=5)
    location = create(first, data)
    assert patch(first, location, 0, data[:MiB]).status_code == 204
    done = patch(second, location, MiB, data[MiB:])
    assert done.status_code == 204
    assert stored_sha256(second, done) == hashlib.sha256(data).hexdigest()

"""GET /files (newest first, paged), GET and DELETE /files/<id>."""
from __future__ import annotations

import io

import pytest

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True


def upload(client, name: str, data: bytes = b"some text\n"):
    response = client.post("/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")
    assert response.status_code == 201
    return response.get_json()


def test_list_is_newest_first(client):
    ids = [upload(client, f"f{i}.txt")["id"] for i in range(3)]
    listed = [r["id"] for r in client.get("/files").get_json()["files"]]
    assert listed == ids[::-1]


def test_pages_cover_everything_once(client):
    ids = {upload(client, f"f{i}.txt")["id"] for i in range(7)}
    seen, cursor, pages = [], None, 0
    while True:
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = client.get("/files" + query).get_json()
        seen += [r["id"] for r in body["files"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert len(seen) == 7 and set(seen) == ids


@pytest.mark.parametrize("query", ["?limit=0", "?limit=-1", "?limit=abc", "?limit=100000", "?limit=",
                                   "?limit=\u00b2", "?limit=\u0663", "?cursor=garbage!"])
def test_bad_paging_parameters_are_400(client, query):
    response = client.get("/files" + query)
    assert response.status_code == 400
    assert response.get_json()["error"]


def test_get_one(client):
    rec = upload(client, "x.txt")
    assert client.get(f"/files/{rec['id']}").get_json() == rec


@pytest.mark.parametrize("file_id", ["0" * 32, "nope", "../../etc/passwd", "%00"])
def test_unknown_id_is_404_json(client, file_id):
    response = client.get(f"/files/{file_id}")
    assert response.status_code == 404
    assert response.get_json()["error"]


def test_delete_removes_record_bytes_and_thumbnail(client, tmp_path):
    from tests.samples import make_sample

    rec = upload(client, "p.png", make_sample("png", tmp_path).read_bytes())
    assert rec["thumbnail_url"]
    assert client.delete(f"/files/{rec['id']}").status_code == 204
    assert client.get(f"/files/{rec['id']}").status_code == 404
    assert client.get(rec["download_url"]).status_code == 404
    assert client.get(rec["thumbnail_url"]).status_code == 404
    assert client.get("/files").get_json()["files"] == []
    assert client.delete(f"/files/{rec['id']}").status_code == 404


def test_unknown_route_and_wrong_method_are_json(client):
    missing = client.get("/nothing-here")
    assert missing.status_code == 404 and missing.is_json
    wrong = client.put("/files")
    assert wrong.status_code == 405 and wrong.is_json

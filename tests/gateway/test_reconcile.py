"""Reconcile: leftovers of a crash are found and repaired both ways (bytes
without a record, a record without bytes), at start-up and from the CLI, and
nothing that is still wanted is touched."""
from __future__ import annotations

import hashlib
import io
import os
import time

import pytest

from gateway.storage.base import new_id

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True


def upload(client, name: str, data: bytes) -> dict:
    response = client.post("/upload", data={"file": (io.BytesIO(data), name)})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def age(path, seconds: float = 7200) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def plant(app, area: str, name: str, data: bytes = b"left behind", old: bool = True):
    """A file on disk with no record, as a crash between rename and row leaves it."""
    path = app.extensions["storage"].path(area, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if old:
        age(path)
    return path


def reconcile(app, *args: str):
    result = app.test_cli_runner().invoke(args=["reconcile", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def leftovers(app, client, tmp_path):
    """One of each thing a crash can leave, plus files that must survive."""
    kept = upload(client, "kept.txt", b"a file that is fine\n")
    gone = upload(client, "gone.txt", b"a file whose bytes were lost\n")
    storage = app.extensions["storage"]
    storage.path("files", gone["filename"]).unlink()
    orphan = plant(app, "files", new_id() + ".txt")
    young_orphan = plant(app, "files", new_id() + ".txt", old=False)
    orphan_thumb = plant(app, "thumbnails", new_id() + ".jpg")
    temp = storage.create_temp("files", new_id() + ".pdf")
    temp.handle.write(b"%PDF-1.4 cut off")
    temp.handle.close()
    age(temp.path)
    stray_partial = storage.partial_path("files", new_id() + ".zip")
    stray_partial.write_bytes(b"PK\x03\x04 a tus upload nobody remembers")
    age(stray_partial)
    return {"kept": kept, "gone": gone, "orphan": orphan, "young_orphan": young_orphan,
            "orphan_thumb": orphan_thumb, "temp": temp.path, "stray_partial": stray_partial}


def test_the_cli_repairs_both_ways_and_says_what_it_did(app, client, leftovers):
    output = reconcile(app)
    assert "1 orphan bytes removed" in output
    assert "1 rows without bytes" in output
    assert "1 orphan thumbnails removed" in output
    assert "1 temp removed" in output and "1 partial removed" in output
    assert leftovers["orphan"].name in output and leftovers["gone"]["id"] in output

    for name in ("orphan", "orphan_thumb", "temp", "stray_partial"):
        assert not leftovers[name].exists(), name
    assert leftovers["young_orphan"].exists()  # may be an upload in flight elsewhere
    ids = [r["id"] for r in client.get("/files").get_json()["files"]]
    assert ids == [leftovers["kept"]["id"]]
    assert client.get(f"/files/{leftovers['gone']['id']}").status_code == 404
    assert client.get(leftovers["kept"]["download_url"]).data == b"a file that is fine\n"
    # A second pass finds nothing left to do.
    assert "nothing to repair" in reconcile(app)


def test_a_dry_run_changes_nothing(app, client, leftovers):
    output = reconcile(app, "--dry-run")
    assert "dry run" in output and "1 orphan bytes removed" in output
    assert leftovers["orphan"].exists() and leftovers["temp"].exists()
    assert len(client.get("/files").get_json()["files"]) == 2


def test_it_runs_when_serving_starts_not_for_every_cli_command(app, make_app, leftovers):
    from gateway.storage import reconcile as reconcile_module

    restarted = make_app(DATA_DIR=app.config["DATA_DIR"], DATABASE_URL=app.config["DATABASE_URL"])
    assert leftovers["orphan"].exists() and leftovers["temp"].exists()  # building an app (a `flask` command) does not
    reconcile_module.start(restarted)  # what `python -m gateway` does once the app is built
    restarted.extensions["reconcile_timer"].stop()
    assert not leftovers["orphan"].exists() and not leftovers["temp"].exists()
    files = restarted.test_client().get("/files").get_json()["files"]
    assert [f["id"] for f in files] == [leftovers["kept"]["id"]]


def test_verify_finds_bytes_that_are_not_the_records(app, client):
    record = upload(client, "notes.txt", b"the original words\n")
    path = app.extensions["storage"].path("files", record["filename"])
    path.write_bytes(b"the altered words!\n")  # same size: only the hash tells
    assert "nothing to repair" in reconcile(app)
    output = reconcile(app, "--verify")
    assert "1 rows damaged" in output
    assert client.get(f"/files/{record['id']}").status_code == 404
    assert not path.exists()


def test_bytes_cut_short_lose_their_record(app, client):
    record = upload(client, "notes.txt", b"0123456789" * 100)
    path = app.extensions["storage"].path("files", record["filename"])
    path.write_bytes(b"0123")
    assert "1 rows damaged" in reconcile(app)
    assert client.get(f"/files/{record['id']}").status_code == 404


def test_an_unfinished_tus_upload_keeps_its_bytes(app, client):
    import base64
    created = client.post("/tus/", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": "100",
        "Upload-Metadata": "filename " + base64.b64encode(b"later.txt").decode()})
    assert created.status_code == 201
    path = created.headers["Location"]
    assert client.patch(path, data=b"x" * 40, headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream"}).status_code == 204
    partials = [e for e in app.extensions["storage"].entries("files") if e.kind == "partial"]
    assert len(partials) == 1
    age(partials[0].path)
    assert "nothing to repair" in reconcile(app)
    assert partials[0].path.exists()
    head = client.head(path, headers={"Tus-Resumable": "1.0.0"})
    assert head.headers["Upload-Offset"] == "40"


def test_thumbnails_of_listed_files_stay(app, client, tmp_path):
    from tests.samples import make_sample

    record = upload(client, "p.png", make_sample("png", tmp_path).read_bytes())
    assert record["thumbnail_url"]
    thumb = app.extensions["storage"].path("thumbnails", record["thumbnail_url"].rsplit("/", 1)[1])
    age(thumb)
    age(app.extensions["storage"].path("files", record["filename"]))
    assert "nothing to repair" in reconcile(app, "--verify")
    assert thumb.exists()
    assert hashlib.sha256(client.get(record["download_url"]).data).hexdigest() == record["sha256"]

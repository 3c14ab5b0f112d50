"""A tus upload survives a failure of its last step, and bad metadata leaves nothing behind."""
from __future__ import annotations

import base64
import hashlib
import os
import time

import requests

from tests.conftest import free_port, start_gateway_process
from tests.processes import service_process

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True

T = {"Tus-Resumable": "1.0.0"}


def meta(**values) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def patch(url, offset, data):
    return requests.patch(url, data=data, timeout=30, headers={
        **T, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})


def test_a_last_patch_that_failed_is_finished_by_the_next_head(tmp_path, thumbnailer):
    port = free_port()
    data = b"a line of text\n" * 10000
    with service_process("validator_service", "VALIDATOR_ADDR", port) as validator:
        gateway = start_gateway_process(tmp_path / "data", f"127.0.0.1:{port}", thumbnailer.address,
                                        VALIDATOR_TIMEOUT=2)
        try:
            created = requests.post(gateway.url + "/tus/", timeout=10, headers={
                **T, "Upload-Length": str(len(data)), "Upload-Metadata": meta(filename="l.txt")})
            url = gateway.url + created.headers["Location"]
            assert patch(url, 0, data[:70000]).status_code == 204
            validator.kill()
            validator.wait()
            assert patch(url, 70000, data[70000:]).status_code == 503
            with service_process("validator_service", "VALIDATOR_ADDR", port):
                head = requests.head(url, headers=T, timeout=30)
                assert head.status_code == 200
                file_id = head.headers["Upload-File-Id"]
                record = requests.get(f"{gateway.url}/files/{file_id}", timeout=10).json()
                assert record["sha256"] == hashlib.sha256(data).hexdigest()
        finally:
            gateway.proc.terminate()
            gateway.proc.wait(timeout=15)


def test_an_absurd_expires_in_is_400_and_leaves_no_file(live_gateway):
    response = requests.post(live_gateway.url + "/tus/", timeout=10, headers={
        **T, "Upload-Length": "12", "Upload-Metadata": meta(filename="a.txt", expires_in="9" * 24)})
    assert response.status_code == 400
    left = [f for _, _, names in os.walk(live_gateway.data_dir / "files") for f in names]
    assert left == []


def test_a_record_that_could_not_be_written_leaves_the_bytes_for_the_next_head(app, client, monkeypatch):
    """The database refusing the row (a fault a test cannot cause on demand, hence
    the stand-in) must not lose a finished upload's bytes: the next HEAD stores it."""
    import sqlalchemy as sa

    data = b"finished, then the database hiccupped\n" * 100
    created = client.post("/tus/", headers={**T, "Upload-Length": str(len(data)),
                                            "Upload-Metadata": meta(filename="late.txt")})
    url = created.headers["Location"]
    repo = app.extensions["files"]
    real_add = repo.add

    def fail_once(row):
        monkeypatch.setattr(repo, "add", real_add)
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(repo, "add", fail_once)
    last = client.patch(url, data=data, headers={
        **T, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert last.status_code >= 500 and last.is_json
    assert client.get("/files").get_json()["files"] == []

    head = client.head(url, headers=T)
    assert head.status_code == 200 and head.headers.get("Upload-File-Id")
    record = client.get(f"/files/{head.headers['Upload-File-Id']}").get_json()
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get(record["download_url"]).data == data


def test_reconcile_during_a_late_finish_does_not_take_the_bytes(make_app, monkeypatch):
    """A stalled upload finished by a HEAD long after its last PATCH: a reconcile
    pass between placing its bytes and writing its record must not see an orphan."""
    from protos.errors import Unavailable

    app = make_app(ORPHAN_AGE=1.0)
    client = app.test_client()
    data = b"finished later than ORPHAN_AGE\n" * 50
    url = client.post("/tus/", headers={**T, "Upload-Length": str(len(data)),
                                        "Upload-Metadata": meta(filename="late.txt")}).headers["Location"]
    ingest, thumbnails = app.extensions["ingest"], app.extensions["thumbnails"]
    real_adopt, real_wanted = ingest.adopt, thumbnails.wanted

    def validator_down(*args, **kwargs):
        raise Unavailable()

    monkeypatch.setattr(ingest, "adopt", validator_down)  # the last PATCH meets a validator outage
    last = client.patch(url, data=data, headers={
        **T, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert last.status_code == 503
    monkeypatch.setattr(ingest, "adopt", real_adopt)
    time.sleep(1.3)  # the client comes back later than ORPHAN_AGE

    def reconcile_meanwhile(*args):
        # The periodic pass lands between the bytes being placed and the row being written.
        app.extensions["reconciler"].run()
        return real_wanted(*args)

    monkeypatch.setattr(thumbnails, "wanted", reconcile_meanwhile)
    head = client.head(url, headers=T)
    assert head.status_code == 200
    record = client.get(f"/files/{head.headers['Upload-File-Id']}").get_json()
    assert client.get(record["download_url"]).data == data
    assert "nothing to repair" in app.extensions["reconciler"].run().summary()


def test_joining_a_partial_upload_whose_bytes_went_meanwhile_is_410(make_app):
    """A partial upload that ends (its file removed) between the final upload's checks and the
    join: a 410 naming it, and nothing of the join stays, not a 500."""
    app = make_app()
    client = app.test_client()
    piece = b"a partial piece of text\n" * 40
    url = client.post("/tus/", headers={**T, "Upload-Length": str(len(piece)),
                                        "Upload-Concat": "partial"}).headers["Location"]
    assert client.patch(url, data=piece, headers={**T, "Upload-Offset": "0",
                                                  "Content-Type": "application/offset+octet-stream"}).status_code == 204
    partial = app.extensions["tus"].get(url.rsplit("/", 1)[1])
    app.extensions["tus"].path(partial).unlink()
    response = client.post("/tus/", headers={**T, "Upload-Metadata": meta(filename="joined.txt"),
                                              "Upload-Concat": f"final;{url}"})
    assert response.status_code == 410 and "partial upload" in response.get_json()["error"]
    assert client.get("/files").get_json()["files"] == []

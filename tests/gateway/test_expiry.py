"""File expiry: `expires_in` on POST /upload and tus, FILE_TTL / FILE_MAX_TTL, 410 for an
expired file (JSON for programs, a page for browsers), and the reaper that removes it."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from tusclient import client as tus_client

from gateway import config
from gateway.http.html import PAGE_CSP
from tests.conftest import free_port, start_gateway_process
from tests.processes import ROOT
from tests.samples import MZ_HEADER, make_sample
from tests.tus.conftest import TUS_VERSION, encode_metadata, leftover_files, stop_gateway, text_bytes

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True

BOUNDARY = "expiry-test-boundary"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def field(name: str, value: str) -> tuple[str, bytes, None]:
    return name, value.encode(), None


def file_part(filename: str, data: bytes = b"some text\n") -> tuple[str, bytes, str]:
    return "file", data, filename


def multipart(*parts) -> bytes:
    """A multipart body with its parts in exactly this order (werkzeug's test
    client would put every plain field before the files)."""
    body = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + value + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def post(client, *parts):
    return client.post("/upload", data=multipart(*parts), content_type=f"multipart/form-data; boundary={BOUNDARY}")


def stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_expires_in(record: dict, seconds: int, before: datetime, after: datetime) -> None:
    """expires_at is `seconds` after some moment of the request (no guess at its speed)."""
    expires = stamp(record["expires_at"])
    assert before + timedelta(seconds=seconds) <= expires <= after + timedelta(seconds=seconds), (
        record["expires_at"], before, after)


def now() -> datetime:
    return datetime.now(timezone.utc)


def stored_files(app) -> list[str]:
    """Every file under DATA_DIR except the database."""
    return leftover_files(app.config["DATA_DIR"])


def expire(app, *file_ids: str) -> None:
    """Make files expired now, without waiting: their expires_at a second ago."""
    app.extensions["files"].set_expires_at(list(file_ids), now() - timedelta(seconds=1))


def upload(client, name: str = "notes.txt", data: bytes = b"some text\n", **fields) -> dict:
    parts = [field(k, str(v)) for k, v in fields.items()] + [file_part(name, data)]
    response = post(client, *parts)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# ---------------------------------------------------------------- expires_in on POST /upload


def test_expires_in_before_the_file(client):
    before = now()
    response = post(client, field("expires_in", "3600"), file_part("a.txt"))
    after = now()
    assert response.status_code == 201, response.get_json()
    record = response.get_json()
    assert_expires_in(record, 3600, before, after)
    assert client.get(f"/files/{record['id']}").get_json()["expires_at"] == record["expires_at"]


def test_expires_in_after_the_files_applies_to_every_one(client):
    before = now()
    response = post(client, file_part("a.txt"), file_part("b.txt", b"other text\n"), field("expires_in", "120"))
    after = now()
    assert response.status_code == 201, response.get_json()
    records = response.get_json()["files"]
    assert len(records) == 2
    for record in records:
        assert_expires_in(record, 120, before, after)
        # Stored, not only answered.
        assert client.get(f"/files/{record['id']}").get_json()["expires_at"] == record["expires_at"]


def test_expires_in_between_files_applies_to_both(client):
    response = post(client, file_part("a.txt"), field("expires_in", "600"), file_part("b.txt", b"b\n"))
    assert response.status_code == 201, response.get_json()
    first, second = response.get_json()["files"]
    assert first["expires_at"] and second["expires_at"]
    assert abs((stamp(first["expires_at"]) - stamp(second["expires_at"])).total_seconds()) < 60


def test_without_expires_in_a_file_never_expires_by_default(client):
    record = upload(client)
    assert record["expires_at"] is None
    assert client.get(f"/files/{record['id']}").get_json()["expires_at"] is None


BAD_VALUES = ["0", "-5", "1.5", "abc", "", " ", "1e3", "+60", "\u0663", "60s", str(365 * 86400 + 1), "9" * 40]


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("value", BAD_VALUES)
def test_a_bad_expires_in_is_400_and_nothing_is_stored(app, client, tmp_path, value, where):
    parts = [file_part("a.txt"), file_part("p.png", make_sample("png", tmp_path).read_bytes())]
    parts.insert(0 if where == "before" else 2, field("expires_in", value))
    response = post(client, *parts)
    assert response.status_code == 400
    message = response.get_json()["error"]
    assert "expires_in" in message and "whole number" in message
    assert stored_files(app) == []
    assert client.get("/files").get_json()["files"] == []


def test_a_bad_expires_in_first_is_refused_before_the_file_is_looked_at(app, client):
    # A renamed program would be refused with 415 once the validator saw it;
    # the 400 shows the form field was judged first.
    response = post(client, field("expires_in", "0"), file_part("tool.exe", MZ_HEADER + b"\0" * 4096))
    assert response.status_code == 400
    assert "expires_in" in response.get_json()["error"]
    assert stored_files(app) == []


def test_expires_in_twice_is_400(app, client):
    response = post(client, field("expires_in", "60"), file_part("a.txt"), field("expires_in", "60"))
    assert response.status_code == 400
    assert "more than once" in response.get_json()["error"]
    assert stored_files(app) == []
    assert client.get("/files").get_json()["files"] == []


# ---------------------------------------------------------------- settings


def test_file_ttl_is_the_default_lifetime(app, client):
    app.config["FILE_TTL"] = 900
    before = now()
    record = upload(client)
    after = now()
    assert_expires_in(record, 900, before, after)
    # An upload may still ask for its own lifetime, longer or shorter.
    assert_expires_in(upload(client, expires_in=30), 30, before, now())


def test_file_max_ttl_bounds_expires_in(app, client):
    app.config["FILE_MAX_TTL"] = 7200
    before = now()
    assert_expires_in(upload(client, expires_in=7200), 7200, before, now())
    response = post(client, field("expires_in", "7201"), file_part("a.txt"))
    assert response.status_code == 400
    assert "7200 (2 hours)" in response.get_json()["error"]


def test_settings_defaults():
    settings = config.from_env({})
    assert (settings["FILE_TTL"], settings["FILE_MAX_TTL"], settings["FILE_REAP_INTERVAL"]) == (0, 31536000, 60)
    settings = config.from_env({"FILE_TTL": "3600", "FILE_MAX_TTL": "86400", "FILE_REAP_INTERVAL": "5"})
    assert (settings["FILE_TTL"], settings["FILE_MAX_TTL"], settings["FILE_REAP_INTERVAL"]) == (3600, 86400, 5)


@pytest.mark.parametrize("env, words", [
    ({"FILE_TTL": "7200", "FILE_MAX_TTL": "3600"}, "FILE_TTL (7200)"),
    ({"FILE_TTL": "-1"}, "FILE_TTL (-1)"),
    ({"FILE_MAX_TTL": "0"}, "FILE_MAX_TTL"),
    ({"FILE_MAX_TTL": str(2**40)}, "FILE_MAX_TTL"),
    ({"FILE_TTL": "an hour"}, "FILE_TTL"),
])
def test_inconsistent_settings_stop_the_gateway_with_a_reason(env, words):
    with pytest.raises(SystemExit) as stopped:
        config.from_env(env)
    assert words in str(stopped.value)


def test_the_gateway_refuses_to_start_when_file_ttl_passes_the_maximum(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "GATEWAY_PORT": str(free_port()),
           "FILE_TTL": "7200", "FILE_MAX_TTL": "3600"}
    result = subprocess.run([sys.executable, "-m", "gateway"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "FILE_TTL (7200) must be from 0" in result.stderr


# ---------------------------------------------------------------- an expired file


def test_an_expired_file_is_hidden_and_gone(app, client, tmp_path):
    kept = upload(client, "kept.txt")
    rec = upload(client, "p.png", make_sample("png", tmp_path).read_bytes())
    assert rec["thumbnail_url"]
    expire(app, rec["id"])

    assert [r["id"] for r in client.get("/files").get_json()["files"]] == [kept["id"]]
    for url in (f"/files/{rec['id']}", rec["download_url"], rec["thumbnail_url"]):
        response = client.get(url)
        assert response.status_code == 410, url
        assert response.is_json and "expired" in response.get_json()["error"]
        assert "Accept" in response.headers.get("Vary", "")
    # Conditional and range requests do not get around it.
    assert client.get(rec["download_url"], headers={"If-None-Match": f'"{rec["sha256"]}"'}).status_code == 410
    assert client.get(rec["download_url"], headers={"Range": "bytes=0-3"}).status_code == 410
    # Not yet reaped: the bytes are still there, only no longer served.
    assert app.extensions["storage"].path("files", rec["filename"]).is_file()
    # The other file is untouched.
    assert client.get(f"/files/{kept['id']}").status_code == 200
    assert client.get(kept["download_url"]).status_code == 200


def test_a_file_expires_on_its_own(client):
    record = upload(client, expires_in=1)
    assert client.get(f"/files/{record['id']}").status_code == 200
    time.sleep(1.1)
    assert client.get(f"/files/{record['id']}").status_code == 410
    assert client.get(record["download_url"]).status_code == 410
    assert client.get("/files").get_json()["files"] == []


def test_paging_skips_expired_files(app, client):
    ids = [upload(client, f"f{i}.txt")["id"] for i in range(5)]
    expire(app, ids[1], ids[3])
    first = client.get("/files?limit=2").get_json()
    second = client.get(f"/files?limit=2&cursor={first['next_cursor']}").get_json()
    assert [r["id"] for r in first["files"] + second["files"]] == [ids[4], ids[2], ids[0]]
    assert second["next_cursor"] is None


def test_a_browser_gets_a_page_saying_the_file_has_expired(app, client, tmp_path):
    rec = upload(client, "p.png", make_sample("png", tmp_path).read_bytes())
    expire(app, rec["id"])
    for url in (rec["download_url"], f"/files/{rec['id']}", rec["thumbnail_url"]):
        response = client.get(url, headers={"Accept": BROWSER_ACCEPT})
        assert response.status_code == 410, url
        assert response.mimetype == "text/html"
        html = response.get_data(as_text=True)
        assert "This file has expired" in html
        assert response.headers["Content-Security-Policy"] == PAGE_CSP
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "Accept" in response.headers["Vary"]
        # Nothing for the CSP to forbid: no inline script, style or handler.
        assert all("src=" in attrs and not body.strip()
                   for attrs, body in re.findall(r"<script\b([^>]*)>(.*?)</script\s*>", html, re.S | re.I))
        assert not re.search(r"<[^>]+\s(style|on[a-z]+)\s*=", html, re.I)
        assert "<style" not in html.lower()
        assert re.search(r'<link rel="stylesheet" href="/static/app\.css', html)


def test_410_answers_conform_to_the_openapi_document(app, client, tmp_path):
    from tests.gateway.test_openapi import conforms

    spec = client.get("/openapi.json").get_json()
    form = spec["paths"]["/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert (form["properties"]["expires_in"]["minimum"], form["properties"]["expires_in"]["maximum"]) == (1, 31536000)
    rec = upload(client, "p.png", make_sample("png", tmp_path).read_bytes())
    expire(app, rec["id"])
    for accept in ("application/json", BROWSER_ACCEPT):
        for template, url in (("/files/{file_id}", f"/files/{rec['id']}"), ("/uploads/{name}", rec["download_url"]),
                              ("/thumbnails/{name}", rec["thumbnail_url"])):
            response = client.get(url, headers={"Accept": accept})
            assert response.status_code == 410
            conforms(spec, "GET", template, response)
    conforms(spec, "POST", "/upload", post(client, field("expires_in", "0"), file_part("a.txt")))


@pytest.mark.parametrize("accept", ["application/json", "*/*", "text/html, application/json",
                                    "image/avif,image/webp,*/*;q=0.8", None])
def test_programs_get_json_for_an_expired_file(app, client, accept):
    record = upload(client)
    expire(app, record["id"])
    response = client.get(record["download_url"], headers={"Accept": accept} if accept else {})
    assert response.status_code == 410
    assert response.is_json and response.get_json()["error"] == "This file has expired."


def test_deleting_an_expired_file_removes_it(app, client):
    record = upload(client)
    expire(app, record["id"])
    assert client.delete(f"/files/{record['id']}").status_code == 204
    assert stored_files(app) == []
    assert client.get(f"/files/{record['id']}").status_code == 404
    assert client.get(record["download_url"]).status_code == 404


# ---------------------------------------------------------------- the reaper


def reaped_total(client) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    match = re.search(r"^upload_files_reaped_total (\S+)$", text, re.M)
    assert match, "no upload_files_reaped_total in /metrics"
    return float(match.group(1))


def test_the_reaper_removes_expired_files_and_leaves_the_others(app, client, tmp_path):
    storage = app.extensions["storage"]
    doomed = upload(client, "p.png", make_sample("png", tmp_path).read_bytes())
    later = upload(client, "later.txt", expires_in=3600)
    forever = upload(client, "forever.txt")
    expire(app, doomed["id"])
    thumbnail = doomed["thumbnail_url"].rsplit("/", 1)[-1]
    assert storage.path("thumbnails", thumbnail).is_file()
    reaped_before = reaped_total(client)

    assert app.extensions["file_reaper"].reap() == 1

    assert not storage.path("files", doomed["filename"]).exists()
    assert not storage.path("thumbnails", thumbnail).exists()
    assert app.extensions["files"].get(doomed["id"]) is None
    for url in (f"/files/{doomed['id']}", doomed["download_url"], doomed["thumbnail_url"]):
        assert client.get(url).status_code == 404, url
    for kept in (later, forever):
        assert client.get(f"/files/{kept['id']}").status_code == 200
        assert client.get(kept["download_url"]).get_data() == b"some text\n"
    assert sorted(r["id"] for r in client.get("/files").get_json()["files"]) == sorted([later["id"], forever["id"]])
    assert reaped_total(client) == reaped_before + 1
    # A second pass finds nothing to do.
    assert app.extensions["file_reaper"].reap() == 0


def test_the_reaper_does_not_trip_over_what_is_already_gone(app, client, tmp_path):
    storage = app.extensions["storage"]
    no_bytes = upload(client, "a.txt")
    no_thumbnail = upload(client, "p.png", make_sample("png", tmp_path).read_bytes())
    expire(app, no_bytes["id"], no_thumbnail["id"])
    storage.path("files", no_bytes["filename"]).unlink()
    storage.path("thumbnails", no_thumbnail["thumbnail_url"].rsplit("/", 1)[-1]).unlink()
    assert app.extensions["file_reaper"].reap() == 2
    assert stored_files(app) == []
    # A row another request deleted meanwhile: nothing left to do, no error.
    stale = app.extensions["files"].get(upload(client, "b.txt")["id"])
    assert client.delete(f"/files/{stale.id}").status_code == 204
    assert app.extensions["ingest"].remove(stale) is False


def test_a_failure_between_bytes_and_row_leaves_nothing_half_visible(app, client, monkeypatch):
    """An expired file loses its bytes first: if the row cannot go, it stays hidden
    for the next pass. A live file loses its row first: if the bytes cannot go,
    it is no longer listed or served."""
    repo, storage = app.extensions["files"], app.extensions["storage"]
    expired, live = upload(client, "expired.txt"), upload(client, "live.txt")
    expire(app, expired["id"])

    delete_row = repo.delete
    monkeypatch.setattr(repo, "delete", lambda file_id: (_ for _ in ()).throw(OSError("database gone")))
    assert app.extensions["file_reaper"].reap() == 0
    assert not storage.path("files", expired["filename"]).exists()
    assert client.get(f"/files/{expired['id']}").status_code == 410
    monkeypatch.setattr(repo, "delete", delete_row)
    assert app.extensions["file_reaper"].reap() == 1
    assert client.get(f"/files/{expired['id']}").status_code == 404

    monkeypatch.setattr(storage, "delete", lambda area, name: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError):
        app.extensions["ingest"].remove(repo.get(live["id"]))
    assert client.get(f"/files/{live['id']}").status_code == 404
    assert client.get("/files").get_json()["files"] == []


def test_the_reaper_works_in_batches_and_past_a_file_it_cannot_remove(app, client):
    from gateway.storage.expiry import Reaper

    ids = [upload(client, f"f{i}.txt")["id"] for i in range(7)]
    expire(app, *ids)
    stuck = ids[2]
    remove = app.extensions["ingest"].remove
    calls = []

    def flaky_remove(row):
        calls.append(row.id)
        if row.id == stuck:
            raise PermissionError("not allowed")
        return remove(row)

    reaper = Reaper(app.extensions["files"], flaky_remove, interval=0, batch=2)
    assert reaper.reap() == 6
    assert sorted(calls) == sorted(ids)  # every one tried once in the pass
    assert [r.id for r in app.extensions["files"].expired(now(), 10)] == [stuck]
    # Once it can be removed, the next pass does it.
    assert Reaper(app.extensions["files"], remove, interval=0, batch=2).reap() == 1
    assert stored_files(app) == []


def test_the_reaper_runs_in_the_background(tmp_path, validator, thumbnailer):
    from gateway import create_app

    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "data"), "VALIDATOR_ADDR": validator.address,
                      "THUMBNAIL_ADDR": thumbnailer.address, "FILE_REAP_INTERVAL": 0.2})
    try:
        client = app.test_client()
        record = upload(client, expires_in=1)
        kept = upload(client, "kept.txt")
        deadline = time.monotonic() + 15
        while client.get(f"/files/{record['id']}").status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get(f"/files/{record['id']}").status_code == 404
        assert not app.extensions["storage"].path("files", record["filename"]).exists()
        assert client.get(f"/files/{kept['id']}").status_code == 200
    finally:
        app.extensions["file_reaper"].stop()
        app.extensions["thumbnails"].stop()
        app.extensions["services"].close()


# ---------------------------------------------------------------- tus


@pytest.fixture(scope="module")
def tus_gateway(tmp_path_factory, validator, thumbnailer):
    """A gateway process with a default lifetime and a low maximum."""
    gateway = start_gateway_process(tmp_path_factory.mktemp("expiry-tus") / "data", validator.address,
                                    thumbnailer.address, FILE_TTL=600, FILE_MAX_TTL=7200)
    yield gateway
    stop_gateway(gateway)


def tuspy_upload(gateway, data: bytes, metadata: dict) -> dict:
    uploader = tus_client.TusClient(gateway.url + "/tus/").uploader(
        file_stream=io.BytesIO(data), chunk_size=64 * 1024, metadata=metadata)
    uploader.upload()
    file_id = uploader.request.response_headers.get("upload-file-id")
    assert file_id, uploader.request.response_headers
    response = requests.get(f"{gateway.url}/files/{file_id}", timeout=10)
    assert response.status_code == 200
    return response.json()


def test_tus_expires_in_reaches_the_file(tus_gateway):
    before = now()
    record = tuspy_upload(tus_gateway, text_bytes(200 * 1024, seed=50),
                          {"filename": "short.txt", "expires_in": "3600"})
    assert_expires_in(record, 3600, before, now())


def test_tus_without_expires_in_gets_file_ttl(tus_gateway):
    before = now()
    record = tuspy_upload(tus_gateway, text_bytes(1000, seed=51), {"filename": "default.txt"})
    assert_expires_in(record, 600, before, now())


@pytest.mark.parametrize("value", ["0", "-1", "abc", "", "7201"])
def test_tus_bad_expires_in_is_400_and_nothing_is_stored(tus_gateway, value):
    before = leftover_files(tus_gateway.data_dir)
    response = requests.post(tus_gateway.url + "/tus/", timeout=10, data=b"hello\n", headers={
        "Tus-Resumable": TUS_VERSION, "Upload-Length": "6", "Content-Type": "application/offset+octet-stream",
        "Upload-Metadata": encode_metadata({"filename": "a.txt", "expires_in": value})})
    assert response.status_code == 400
    assert "expires_in" in response.json()["error"]
    assert "Location" not in response.headers
    assert leftover_files(tus_gateway.data_dir) == before


def test_an_expired_tus_file_is_gone_for_a_real_browser(tus_gateway, page):
    record = tuspy_upload(tus_gateway, text_bytes(1000, seed=52), {"filename": "brief.txt", "expires_in": "1"})
    time.sleep(1.1)
    page.add_init_script("""window.__violations = [];
        document.addEventListener("securitypolicyviolation",
            (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));""")
    response = page.goto(tus_gateway.url + record["download_url"])
    assert response.status == 410
    assert page.locator("h1").inner_text() == "This file has expired"
    # The stylesheet loaded under the page's own CSP.
    page.wait_for_load_state("load")
    assert page.evaluate("Array.from(document.styleSheets).some((s) => s.href && s.cssRules.length > 0)")
    assert page.evaluate("window.__violations") == []
    assert page.evaluate("document.scripts.length") == 0

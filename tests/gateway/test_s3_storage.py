"""STORAGE=s3 against a real S3 API (moto's server, tests/s3.py): the upload,
download, thumbnail, delete, expiry and reconcile flows of the gateway, with
what lands in the bucket checked through boto3 (list_objects_v2,
list_multipart_uploads), and nothing left on the local disk."""
from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from datetime import timedelta

import pytest
import requests

from gateway.storage.base import new_id
from tests.images import encode
from tests.processes import ROOT
from tests.samples import MZ_HEADER
from tests.tus.conftest import leftover_files, text_bytes

MiB = 1024 * 1024


@pytest.fixture
def s3_app(make_app, s3_bucket):
    return make_app(**s3_bucket.settings())


@pytest.fixture
def s3_client(s3_app):
    return s3_app.test_client()


def upload(client, name: str, data: bytes, **form) -> dict:
    response = client.post("/upload", data={"file": (io.BytesIO(data), name), **form})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def photo(size=(640, 480)) -> bytes:
    from PIL import Image

    return encode(Image.new("RGB", size, (200, 80, 40)), "JPEG")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- upload and download ---

def test_an_upload_lands_in_the_bucket_and_downloads_the_same(s3_app, s3_client, s3_bucket, tmp_path):
    data = text_bytes(300_000)
    record = upload(s3_client, "notes.txt", data)
    assert record["sha256"] == sha256(data)
    assert s3_bucket.keys() == [f"files/{record['filename']}"]
    assert s3_bucket.get(f"files/{record['filename']}") == data
    assert s3_bucket.uploads() == []  # a small file is one put_object

    response = s3_client.get(record["download_url"])
    assert response.status_code == 200
    assert response.data == data and sha256(response.data) == record["sha256"]
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["ETag"] == f'"{record["sha256"]}"'
    assert response.headers["Content-Disposition"] == "inline; filename=notes.txt"
    # No uploaded byte on the local disk: DATA_DIR holds the database and nothing else.
    assert leftover_files(tmp_path / "data") == []


def test_range_conditional_and_unsatisfiable_requests_behave_as_on_disk(s3_client):
    data = text_bytes(100_000, seed=3)
    record = upload(s3_client, "range.txt", data)
    url = record["download_url"]

    part = s3_client.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.data == data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert part.headers["Content-Length"] == "1000"
    assert s3_client.get(url, headers={"Range": "bytes=-10"}).data == data[-10:]

    beyond = s3_client.get(url, headers={"Range": f"bytes={len(data) + 5}-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    assert "error" in beyond.get_json()

    etag = s3_client.get(url).headers["ETag"]
    assert s3_client.get(url, headers={"If-None-Match": etag}).status_code == 304
    # If-Range with a stale validator: the whole file, not the range.
    stale = s3_client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.data == data
    head = s3_client.head(url)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data)) and head.data == b""


def test_active_types_are_still_sandboxed_attachments(s3_client):
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
           b'<rect width="10" height="10"/></svg>')
    record = upload(s3_client, "logo.svg", svg)
    response = s3_client.get(record["download_url"])
    assert response.status_code == 200 and response.data == svg
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert response.headers["Content-Disposition"].startswith("attachment")


def test_presigned_downloads_redirect_to_a_url_that_serves_the_bytes(make_app, s3_bucket):
    app = make_app(**s3_bucket.settings(S3_PRESIGNED_DOWNLOADS=True, S3_PRESIGNED_TTL=120))
    client = app.test_client()
    data = text_bytes(50_000, seed=5)
    record = upload(client, "report.txt", data)

    response = client.get(record["download_url"])
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(s3_bucket.server.url) and "X-Amz-Signature=" in location
    assert "X-Amz-Expires=120" in location
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["Content-Type"].startswith("text/plain")
    assert fetched.headers["Content-Disposition"] == "inline; filename=report.txt"
    ranged = requests.get(location, headers={"Range": "bytes=10-19"}, timeout=10)
    assert ranged.status_code == 206 and ranged.content == data[10:20]
    # A client that has it already gets 304 from the gateway, no redirect.
    assert client.get(record["download_url"], headers={"If-None-Match": f'"{record["sha256"]}"'}).status_code == 304


def test_presigned_urls_use_the_public_endpoint_when_given(make_app, s3_bucket):
    public = "http://files.example.test:9000"
    app = make_app(**s3_bucket.settings(S3_PRESIGNED_DOWNLOADS=True, S3_PUBLIC_ENDPOINT_URL=public))
    client = app.test_client()
    record = upload(client, "report.txt", b"for the outside world\n")
    location = client.get(record["download_url"]).headers["Location"]
    assert location.startswith(f"{public}/{s3_bucket.name}/files/{record['filename']}?")
    # The gateway itself still talks to the store at S3_ENDPOINT_URL.
    assert s3_bucket.keys() == [f"files/{record['filename']}"]


def test_a_bucket_that_fails_midway_is_a_503_with_a_sentence(s3_app, s3_client, s3_bucket):
    kept = upload(s3_client, "kept.txt", b"stored before the bucket went away\n")
    s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key=f"files/{kept['filename']}")
    s3_bucket.client.delete_bucket(Bucket=s3_bucket.name)
    try:
        response = s3_client.post("/upload", data={"file": (io.BytesIO(text_bytes(10 * MiB)), "big.txt")})
        assert response.status_code == 503
        assert "file storage cannot be reached" in response.get_json()["error"]
        assert s3_client.get("/files").get_json()["files"] == [kept]  # nothing half-stored
    finally:
        s3_bucket.client.create_bucket(Bucket=s3_bucket.name)


def test_share_links_stream_or_redirect_like_downloads(make_app, s3_bucket):
    from tests.accounts import TOKEN_SETTINGS, create_user

    app = make_app(**s3_bucket.settings(**TOKEN_SETTINGS, S3_PRESIGNED_DOWNLOADS=True))
    client = app.test_client()
    owner = create_user(client, "owner")
    data = text_bytes(20_000, seed=9)
    response = client.post("/upload", data={"file": (io.BytesIO(data), "shared.txt")}, headers=owner["headers"])
    record = response.get_json()
    assert client.get(record["download_url"]).status_code == 401  # no token, no bytes
    link = client.post(f"/files/{record['id']}/share", json={"expires_in": 60}, headers=owner["headers"])
    opened = client.get(link.get_json()["url"])
    assert opened.status_code == 302
    assert requests.get(opened.headers["Location"], timeout=10).content == data


def test_thumbnails_live_under_their_own_prefix(s3_client, s3_bucket):
    record = upload(s3_client, "photo.jpg", photo())
    name = record["thumbnail_url"].rsplit("/", 1)[1]
    assert s3_bucket.keys() == sorted([f"files/{record['filename']}", f"thumbnails/{name}"])
    response = s3_client.get(record["thumbnail_url"])
    assert response.status_code == 200
    assert response.data == s3_bucket.get(f"thumbnails/{name}")
    from PIL import Image

    assert max(Image.open(io.BytesIO(response.data)).size) <= 200


def test_s3_prefix_puts_every_key_under_it(make_app, s3_bucket):
    client = make_app(**s3_bucket.settings(S3_PREFIX="svc/")).test_client()
    record = upload(client, "photo.jpg", photo())
    keys = s3_bucket.keys()
    assert len(keys) == 2 and all(k.startswith(("svc/files/", "svc/thumbnails/")) for k in keys)
    assert client.get(record["download_url"]).status_code == 200


# --- delete and expiry ---

def test_delete_removes_the_objects(s3_client, s3_bucket):
    record = upload(s3_client, "photo.jpg", photo())
    assert len(s3_bucket.keys()) == 2
    assert s3_client.delete(f"/files/{record['id']}").status_code == 204
    assert s3_bucket.keys() == []
    assert s3_client.get(record["download_url"]).status_code == 404
    assert s3_client.get(record["thumbnail_url"]).status_code == 404


def test_expiry_removes_the_objects(s3_app, s3_client, s3_bucket):
    record = upload(s3_client, "photo.jpg", photo(), expires_in="60")
    kept = upload(s3_client, "kept.txt", b"stays\n")
    from gateway.storage.expiry import now

    assert s3_app.extensions["file_reaper"].reap(at=now() + timedelta(seconds=120)) == 1
    assert s3_bucket.keys() == [f"files/{kept['filename']}"]
    assert s3_client.get(record["download_url"]).status_code == 404


# --- big files: multipart, streamed ---

def test_a_big_upload_goes_up_in_parts_copied_once(s3_app, s3_client, s3_bucket):
    data = text_bytes(40 * MiB, seed=7)
    storage = s3_app.extensions["storage"]
    before = storage.copied
    record = upload(s3_client, "big.txt", data)
    key = f"files/{record['filename']}"
    # 40 MiB in 8 MiB parts: an S3 multipart object's ETag ends in "-<parts>".
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key)
    assert head["ETag"].strip('"').endswith("-5"), head["ETag"]
    assert head["ContentLength"] == len(data)
    assert s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key, PartNumber=1)["PartsCount"] == 5
    # Each byte was copied once, into its part buffer, and no more.
    assert storage.copied - before == len(data)
    assert storage.counts["multipart"] == 1 and storage.counts["parts"] == 5 and not storage.counts["aborted"]
    assert s3_bucket.uploads() == []
    response = s3_client.get(record["download_url"])
    assert sha256(response.data) == sha256(data) == record["sha256"]


def test_a_refused_file_leaves_no_object_and_no_open_upload(make_app, s3_bucket, start_validator):
    from validator_service.config import Settings

    small = start_validator(settings=Settings(max_file_size=12 * MiB))
    app = make_app(**s3_bucket.settings(VALIDATOR_ADDR=small.address))
    client, counts = app.test_client(), app.extensions["storage"].counts
    # Too large, found out after a first 8 MiB part was sent.
    response = client.post("/upload", data={"file": (io.BytesIO(text_bytes(13 * MiB)), "big.txt")})
    assert response.status_code == 413
    assert counts["multipart"] == counts["parts"] == counts["aborted"] == 1
    # Content that is not what its name says, refused from its head.
    response = client.post("/upload", data={"file": (io.BytesIO(MZ_HEADER + b"\0" * (9 * MiB)), "setup.pdf")})
    assert response.status_code == 415
    assert s3_bucket.keys() == []
    assert s3_bucket.uploads() == []


def test_a_refusal_at_the_end_aborts_the_multipart_upload(make_app, s3_bucket, start_validator):
    # An image whose pixels pass the limit is only refused once it has all arrived.
    from PIL import Image

    wide = encode(Image.new("L", (6000, 10), 0), "PNG") + b"\0" * (9 * MiB)
    client = make_app(**s3_bucket.settings()).test_client()
    response = client.post("/upload", data={"file": (io.BytesIO(wide), "wide.png")})
    assert response.status_code in (413, 415, 422), response.get_json()
    assert s3_bucket.keys() == [] and s3_bucket.uploads() == []


# --- tus: finished uploads go to the bucket ---

def test_a_finished_tus_upload_is_stored_in_the_bucket(s3_app, s3_client, s3_bucket, tmp_path):
    data = text_bytes(3 * MiB, seed=11)
    headers = {"Tus-Resumable": "1.0.0"}
    import base64

    created = s3_client.post("/tus/", headers={**headers, "Upload-Length": str(len(data)),
                                                "Upload-Metadata": "filename " + base64.b64encode(b"t.txt").decode()})
    assert created.status_code == 201
    url = created.headers["Location"]
    for start in range(0, len(data), MiB):
        patched = s3_client.patch(url, data=data[start:start + MiB], headers={
            **headers, "Upload-Offset": str(start), "Content-Type": "application/offset+octet-stream"})
        assert patched.status_code == 204, patched.get_json()
    file_id = patched.headers["Upload-File-Id"]
    record = s3_client.get(f"/files/{file_id}").get_json()
    assert record["sha256"] == sha256(data)
    assert s3_bucket.keys() == [f"files/{record['filename']}"]
    assert s3_client.get(record["download_url"]).data == data
    assert leftover_files(tmp_path / "data") == []


# --- reconcile ---

def reconcile(app, *args: str) -> str:
    result = app.test_cli_runner().invoke(args=["reconcile", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_reconcile_aborts_stale_multipart_uploads_and_removes_orphans(s3_app, s3_client, s3_bucket):
    client, bucket = s3_bucket.client, s3_bucket.name
    kept = upload(s3_client, "kept.txt", b"a file that is fine\n")
    gone = upload(s3_client, "gone.txt", b"a file whose bytes were lost\n")
    client.delete_object(Bucket=bucket, Key=f"files/{gone['filename']}")
    orphan = f"files/{new_id()}.txt"
    client.put_object(Bucket=bucket, Key=orphan, Body=b"bytes without a record")
    orphan_thumb = f"thumbnails/{new_id()}.jpg"
    client.put_object(Bucket=bucket, Key=orphan_thumb, Body=b"a thumbnail without a record")
    # What a gateway killed mid-upload leaves: a multipart upload with a part, never completed.
    cut_off = f"files/{new_id()}.pdf"
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=cut_off)["UploadId"]
    client.upload_part(Bucket=bucket, Key=cut_off, UploadId=upload_id, PartNumber=1, Body=b"%PDF-1.4" * 1000)

    # Young leftovers may be uploads in flight on another replica: untouched.
    output = reconcile(s3_app)
    assert "1 rows without bytes" in output  # a row whose object is gone is repaired at once
    assert [u["UploadId"] for u in s3_bucket.uploads()] == [upload_id]
    assert orphan in s3_bucket.keys()

    output = reconcile(s3_app, "--orphan-age", "0")
    assert "1 temp removed" in output and "1 orphan bytes removed" in output
    assert "1 orphan thumbnails removed" in output
    assert s3_bucket.uploads() == []
    assert s3_bucket.keys() == [f"files/{kept['filename']}"]
    assert [f["id"] for f in s3_client.get("/files").get_json()["files"]] == [kept["id"]]


def test_reconcile_verify_finds_damaged_objects(s3_app, s3_client, s3_bucket):
    record = upload(s3_client, "notes.txt", b"the right bytes\n")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"files/{record['filename']}", Body=b"the wrong bytes\n")
    assert "nothing to repair" in reconcile(s3_app)  # same size: only --verify can tell
    assert "1 rows damaged" in reconcile(s3_app, "--verify")
    assert s3_bucket.keys() == []


# --- start-up ---

def test_a_missing_bucket_stops_the_start_with_one_sentence(make_app, s3_server):
    with pytest.raises(SystemExit) as raised:
        make_app(**s3_server.settings("no-such-bucket"))
    message = str(raised.value)
    assert "'no-such-bucket' does not exist" in message and s3_server.url in message


def test_the_gateway_process_refuses_to_start_without_its_bucket(tmp_path, s3_server, validator, thumbnailer):
    from tests.conftest import free_port

    env = {**s3_server.env("no-such-bucket"), "DATA_DIR": str(tmp_path / "data"),
           "GATEWAY_PORT": str(free_port()), "VALIDATOR_ADDR": validator.address,
           "THUMBNAIL_ADDR": thumbnailer.address}
    import os

    result = subprocess.run([sys.executable, "-m", "gateway"], cwd=ROOT, env={**os.environ, **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert lines[-1].startswith("The S3 bucket 'no-such-bucket' does not exist"), result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_endpoint_is_said_so(make_app, s3_bucket):
    from tests.conftest import free_port

    with pytest.raises(SystemExit, match="cannot be reached"):
        make_app(**s3_bucket.settings(S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}"))


def test_settings_are_checked():
    from gateway.config import from_env

    with pytest.raises(SystemExit, match="STORAGE=s3 needs S3_BUCKET"):
        from_env({"STORAGE": "s3"})
    with pytest.raises(SystemExit, match="STORAGE must be local or s3"):
        from_env({"STORAGE": "ftp"})
    with pytest.raises(SystemExit, match="S3_PART_SIZE"):
        from_env({"STORAGE": "s3", "S3_BUCKET": "b", "S3_PART_SIZE": str(MiB)})
    settings = from_env({"STORAGE": "s3", "S3_BUCKET": "b", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert settings["AWS_REGION"] == "eu-west-1" and settings["S3_PRESIGNED_DOWNLOADS"] is False
    # A presigned URL valid longer than SigV4 allows is refused by the bucket on every download;
    # a lock that never holds lets two requests write one upload (and is renewed in a busy loop).
    for name, value in (("S3_PRESIGNED_TTL", "0"), ("S3_PRESIGNED_TTL", "604801"),
                        ("TUS_LOCK_EXPIRY", "0"), ("TUS_LOCK_EXPIRY", "-5"), ("TUS_LOCK_EXPIRY", "nan")):
        with pytest.raises(SystemExit, match=name):
            from_env({"STORAGE": "s3", "S3_BUCKET": "b", name: value})
    assert from_env({"S3_PRESIGNED_TTL": "604800", "TUS_LOCK_EXPIRY": "0.5"})["TUS_LOCK_EXPIRY"] == 0.5
    # S3 takes at most 10000 parts: a file passing 10000 parts would fail at its end, after all its bytes.
    with pytest.raises(SystemExit, match="raise S3_PART_SIZE to at least 10737419"):
        from_env({"STORAGE": "s3", "S3_BUCKET": "b", "MAX_FILE_SIZE": str(100 * 1024 ** 3)})
    assert from_env({"STORAGE": "s3", "S3_BUCKET": "b", "MAX_FILE_SIZE": str(100 * 1024 ** 3),
                     "S3_PART_SIZE": "10737419"})["S3_PART_SIZE"] == 10737419


# --- a real gateway process: memory stays flat ---

def test_a_large_upload_through_a_gateway_process_keeps_memory_flat(tmp_path, s3_bucket, validator, thumbnailer):
    from tests.conftest import start_gateway_process
    from tests.gateway.test_http_streaming import curl_upload, gunicorn_worker, peak_rss_kib
    from tests.tus.conftest import stop_gateway

    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address, **s3_bucket.env())
    try:
        small = tmp_path / "small.txt"
        small.write_bytes(b"hello\n" * 200)
        assert curl_upload(gateway.url, small, "small.txt")[0] == 201
        worker = gunicorn_worker(gateway.proc.pid)
        before = peak_rss_kib(worker)
        big = tmp_path / "big.txt"
        big.write_bytes(text_bytes(44 * MiB, seed=2))
        status, body = curl_upload(gateway.url, big, "big.txt")
        assert status == 201, body
        growth_mib = (peak_rss_kib(worker) - before) / 1024
        # One 8 MiB part buffer (and boto3's send of it), never the 44 MB file.
        assert growth_mib < 24, f"the gateway's peak memory grew by {growth_mib:.1f} MiB"
        assert body["sha256"] == sha256(big.read_bytes())
        assert requests.get(gateway.url + body["download_url"], timeout=30).content == big.read_bytes()
        assert leftover_files(tmp_path / "data") == []
    finally:
        stop_gateway(gateway)

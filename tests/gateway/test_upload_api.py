"""POST /upload through the real app and real gRPC services."""
from __future__ import annotations

import hashlib
import io
import os

import pytest
from PIL import Image

from tests.images import encode
from tests.samples import ALLOWED_EXTENSIONS, make_sample


def stored_files(app) -> list[str]:
    root = os.path.join(app.config["DATA_DIR"], "files")
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def post(client, *files, **fields):
    data = {"file": [(io.BytesIO(content), name) for name, content in files], **fields}
    return client.post("/upload", data=data, content_type="multipart/form-data")


@pytest.mark.parametrize("ext", ALLOWED_EXTENSIONS)
def test_every_allowed_type_is_stored(client, app, tmp_path, ext):
    data = make_sample(ext, tmp_path).read_bytes()
    response = post(client, (f"sample.{ext}", data))
    assert response.status_code == 201, response.get_json()
    rec = response.get_json()
    assert rec["size"] == len(data)
    assert rec["sha256"] == hashlib.sha256(data).hexdigest()
    assert rec["original_name"] == f"sample.{ext}"
    assert client.get(rec["download_url"]).data == data


def test_record_has_the_contract_fields(client, tmp_path):
    rec = post(client, ("Holiday Photo.JPG", make_sample("jpg", tmp_path).read_bytes())).get_json()
    for field in ("id", "filename", "original_name", "size", "size_formatted", "type", "is_image",
                  "thumbnail_url", "download_url", "sha256", "uploaded_at", "expires_at"):
        assert field in rec
    assert rec["filename"] != rec["original_name"]
    assert rec["filename"].startswith(rec["id"]) and len(rec["id"]) == 32
    assert rec["type"] == "image/jpeg" and rec["is_image"] is True
    assert rec["uploaded_at"].endswith("Z") and rec["expires_at"] is None
    assert rec["thumbnail_url"].startswith("/thumbnails/")
    assert rec["size_formatted"].endswith("KiB")


def test_stored_name_is_random_not_the_clients(client, tmp_path):
    data = make_sample("txt", tmp_path).read_bytes()
    first = post(client, ("../../etc/passwd.txt", data)).get_json()
    second = post(client, ("../../etc/passwd.txt", data)).get_json()
    assert first["filename"] != second["filename"]
    assert "passwd" not in first["filename"] and "/" not in first["filename"]
    assert first["original_name"] == "passwd.txt"


def test_several_files_in_one_request(client, tmp_path):
    response = post(client, ("a.txt", b"first file\n"), ("b.png", make_sample("png", tmp_path).read_bytes()))
    assert response.status_code == 201
    names = [r["original_name"] for r in response.get_json()["files"]]
    assert names == ["a.txt", "b.png"]


def test_a_refused_file_in_a_batch_stores_nothing(client, app):
    response = post(client, ("a.txt", b"fine\n"), ("b.jpg", b"MZ" + b"\0" * 100))
    assert response.status_code == 415
    assert response.get_json()["filename"] == "b.jpg"
    assert client.get("/files").get_json()["files"] == []
    assert stored_files(app) == []


@pytest.mark.parametrize("name,data,status,code", [
    ("setup.exe", b"MZ\x90\0", 415, "extension_not_allowed"),
    ("photo.jpg", b"MZ\x90\0" + b"\0" * 300, 415, "executable_content"),
    ("report.pdf", encode(Image.new("RGB", (10, 10)), "PNG"), 415, "content_mismatch"),
    ("empty.txt", b"", 400, "empty_file"),
    ("huge.png", encode(Image.new("L", (6000, 10)), "PNG"), 422, "image_too_large"),
])
def test_refusals_have_the_right_status_and_a_sentence(client, app, name, data, status, code):
    response = post(client, (name, data))
    assert response.status_code == status
    body = response.get_json()
    assert body["code"] == code
    assert body["error"].endswith(".") and len(body["error"].split()) >= 4
    assert stored_files(app) == []
    assert client.get("/files").get_json()["files"] == []


def test_no_file_part_is_400(client):
    response = client.post("/upload", data={"other": "x"}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert "file" in response.get_json()["error"]


def test_empty_file_name_is_400(client):
    response = post(client, ("", b"data"))
    assert response.status_code == 400


def test_not_multipart_is_400(client):
    response = client.post("/upload", data=b"raw bytes", content_type="application/octet-stream")
    assert response.status_code == 400
    assert "multipart/form-data" in response.get_json()["error"]


def test_truncated_multipart_is_400_and_stores_nothing(client, app):
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\nhello world, this body never ends")
    response = client.post("/upload", data=body, content_type="multipart/form-data; boundary=XyZ")
    assert response.status_code == 400
    assert stored_files(app) == []


def test_content_length_over_the_limit_is_413_before_reading(app, client):
    app.config["MAX_REQUEST_SIZE"] = 1000
    response = post(client, ("a.txt", b"x" * 5000))
    assert response.status_code == 413
    assert response.get_json()["code"] == "file_too_large"


def test_file_over_the_validators_limit_is_413_and_leaves_nothing(tmp_path, start_validator, thumbnailer):
    from gateway import create_app
    from validator_service.config import Settings

    small = start_validator(settings=Settings(max_file_size=1000))
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "d"), "VALIDATOR_ADDR": small.address,
                      "THUMBNAIL_ADDR": thumbnailer.address})
    try:
        client = app.test_client()
        response = post(client, ("a.txt", b"x" * 5000 + b"\n"))
        assert response.status_code == 413
        assert "1000 bytes limit" in response.get_json()["error"]
        assert client.get("/policy").get_json()["max_file_size"] == 1000
        assert stored_files(app) == []
        assert post(client, ("a.txt", b"x" * 900 + b"\n")).status_code == 201
    finally:
        app.extensions["thumbnails"].stop()


def test_control_characters_are_removed_from_the_original_name(client):
    rec = post(client, ("evil\u202eexe.txt\x00\t", b"hello\n")).get_json()
    assert rec["original_name"] == "evilexe.txt"


def test_validator_down_is_503_and_nothing_is_stored(tmp_path, thumbnailer):
    from gateway import create_app
    from tests.conftest import free_port

    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "d"),
                      "VALIDATOR_ADDR": f"127.0.0.1:{free_port()}", "THUMBNAIL_ADDR": thumbnailer.address})
    try:
        response = post(app.test_client(), ("a.txt", b"hello\n"))
        assert response.status_code == 503
        assert "try again" in response.get_json()["error"]
        assert stored_files(app) == []
    finally:
        app.extensions["thumbnails"].stop()

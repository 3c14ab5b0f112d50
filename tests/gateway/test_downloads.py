"""GET /uploads/<name> and /thumbnails/<name>: types, caching, ranges, safety."""
from __future__ import annotations

import io

import pytest

from tests.samples import make_sample


def upload(client, name: str, data: bytes):
    response = client.post("/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def pdf(client, tmp_path):
    data = make_sample("pdf", tmp_path).read_bytes()
    return upload(client, "Quarterly report.pdf", data), data


def test_download_has_detected_type_nosniff_and_strong_etag(client, pdf):
    rec, data = pdf
    response = client.get(rec["download_url"])
    assert response.status_code == 200 and response.data == data
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["ETag"] == f'"{rec["sha256"]}"'
    assert response.headers["Content-Disposition"].startswith("inline")
    assert 'filename="Quarterly report.pdf"' in response.headers["Content-Disposition"]


def test_if_none_match_gives_304(client, pdf):
    rec, _ = pdf
    response = client.get(rec["download_url"], headers={"If-None-Match": f'"{rec["sha256"]}"'})
    assert response.status_code == 304 and response.data == b""


def test_range_gives_206(client, pdf):
    rec, data = pdf
    response = client.get(rec["download_url"], headers={"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.data == data[10:20]
    assert response.headers["Content-Range"] == f"bytes 10-19/{len(data)}"


def test_unsatisfiable_range_is_416(client, pdf):
    rec, data = pdf
    response = client.get(rec["download_url"], headers={"Range": f"bytes={len(data) + 10}-"})
    assert response.status_code == 416


def test_svg_is_an_attachment_in_a_sandbox(client, tmp_path):
    rec = upload(client, "logo.svg", make_sample("svg", tmp_path).read_bytes())
    response = client.get(rec["download_url"])
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["Content-Security-Policy"] == "sandbox"


def test_non_ascii_name_uses_rfc_5987(client):
    rec = upload(client, "Grüße – 東京.txt", b"hello\n")
    disposition = client.get(rec["download_url"]).headers["Content-Disposition"]
    assert "filename*=UTF-8''Gr%C3%BC%C3%9Fe" in disposition
    disposition.encode("latin-1")  # the header itself stays ASCII-safe


@pytest.mark.parametrize("path", [
    "/uploads/../uploads.db", "/uploads/..%2Fuploads.db", "/uploads/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/uploads/uploads.db", "/uploads/" + "0" * 32, "/thumbnails/..%2F..%2Fuploads.db",
    "/thumbnails/" + "a" * 32 + ".jpg",
])
def test_paths_outside_storage_are_404(client, pdf, path):
    response = client.get(path)
    assert response.status_code == 404


def test_thumbnail_is_cacheable_image(client, tmp_path):
    rec = upload(client, "p.jpg", make_sample("jpg", tmp_path).read_bytes())
    response = client.get(rec["thumbnail_url"])
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert "immutable" in response.headers["Cache-Control"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_text_file_is_served_inline_as_text(client):
    rec = upload(client, "notes.txt", b"plain words\n")
    response = client.get(rec["download_url"])
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers["Content-Disposition"].startswith("inline")

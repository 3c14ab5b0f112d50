"""CORS_ORIGINS opens the API to the listed origins, and only to them."""
from __future__ import annotations

import pytest

from gateway import create_app


@pytest.fixture
def cors_client(tmp_path, validator, thumbnailer):
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "d"), "VALIDATOR_ADDR": validator.address,
                      "THUMBNAIL_ADDR": thumbnailer.address, "CORS_ORIGINS": "https://app.example, http://localhost:3000"})
    yield app.test_client()
    app.extensions["thumbnails"].stop()


def test_preflight_allows_the_tus_headers(cors_client):
    response = cors_client.options("/upload", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "upload-length, tus-resumable"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    allowed = response.headers["Access-Control-Allow-Headers"]
    for header in ("Tus-Resumable", "Upload-Length", "Upload-Offset", "Upload-Metadata", "Upload-Checksum",
                   "Upload-Concat", "Upload-Defer-Length", "Content-Type", "Authorization"):
        assert header in allowed
    assert "PATCH" in response.headers["Access-Control-Allow-Methods"]


def test_responses_expose_the_tus_headers(cors_client):
    response = cors_client.get("/files", headers={"Origin": "http://localhost:3000"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    exposed = response.headers["Access-Control-Expose-Headers"]
    for header in ("Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Tus-Resumable"):
        assert header in exposed
    assert "Origin" in response.headers["Vary"]


def test_other_origins_get_no_cors_headers(cors_client):
    response = cors_client.get("/files", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_no_cors_by_default(client):
    response = client.get("/files", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in response.headers

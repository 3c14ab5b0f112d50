"""GET /files/<id>/audit: which rules ran on a stored file and what each decided."""
from __future__ import annotations

import base64
import io

import pytest

from tests.accounts import TOKEN_SETTINGS, create_user
from tests.plugin_modules.eicar import EICAR
from tests.samples import make_sample
from validator_service.server import create_plugins as validator_plugins

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True

BUILT_IN = ("validator_service.rules.filetypes", "validator_service.rules.content",
            "validator_service.rules.image", "validator_service.rules.size")


def upload(client, name: str, data: bytes, headers: dict | None = None) -> dict:
    response = client.post("/upload", data={"file": (io.BytesIO(data), name)}, headers=headers or {})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_the_audit_lists_every_rule_and_its_decision(client, tmp_path):
    data = make_sample("png", tmp_path).read_bytes()
    record = upload(client, "photo.png", data)
    audit = client.get(f"/files/{record['id']}/audit")
    assert audit.status_code == 200
    body = audit.get_json()
    assert body["id"] == record["id"] and body["sha256"] == record["sha256"] and body["size"] == len(data)
    assert body["accepted"] is True and body["detected_type"] == "image/png"
    assert 0 < body["bytes_read"] <= len(data)
    rules = [d["rule"] for d in body["decisions"]]
    assert set(BUILT_IN) <= set(rules)
    assert len(rules) == len(set(rules))  # each rule once (the size rule has two checks)
    assert all(d["outcome"] == "pass" for d in body["decisions"])
    assert body["reasons"] == []


def test_a_tus_upload_is_audited_the_same_way(client):
    data = b"plain words, resumably uploaded\n"
    created = client.post("/tus/", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
        "Upload-Metadata": "filename " + base64.b64encode(b"words.txt").decode()})
    done = client.patch(created.headers["Location"], data=data, headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    body = client.get(f"/files/{done.headers['Upload-File-Id']}/audit").get_json()
    assert body["detected_type"] == "text/plain"
    assert set(BUILT_IN) <= {d["rule"] for d in body["decisions"]}


def test_a_plugin_rule_appears_in_the_audit(make_app, start_validator, tmp_path):
    plugged = start_validator(pm=validator_plugins(env={"UPLOAD_PLUGINS": "tests.plugin_modules.eicar"}))
    client = make_app(VALIDATOR_ADDR=plugged.address).test_client()
    record = upload(client, "clean.txt", b"nothing to see here\n")
    rules = [d["rule"] for d in client.get(f"/files/{record['id']}/audit").get_json()["decisions"]]
    assert "tests.plugin_modules.eicar" in rules
    refused = client.post("/upload", data={"file": (io.BytesIO(EICAR), "virus.txt")})
    assert refused.status_code == 422 and refused.get_json()["code"] == "malware"
    assert refused.get_json()["rule"] == "tests.plugin_modules.eicar"  # whose refusal it was


def test_a_refusal_names_its_rule_for_multipart_and_tus(client):
    program = b"MZ\x90\x00" + bytes(200)
    refused = client.post("/upload", data={"file": (io.BytesIO(program), "photo.jpg")})
    assert refused.status_code == 415
    assert refused.get_json()["rule"] == "validator_service.rules.content"
    created = client.post("/tus/", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(len(program)),
        "Upload-Metadata": "filename " + base64.b64encode(b"photo.jpg").decode()})
    patched = client.patch(created.headers["Location"], data=program, headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert patched.status_code == 415
    assert patched.get_json()["rule"] == "validator_service.rules.content"


def test_unknown_ids_are_404(client):
    assert client.get("/files/" + "0" * 32 + "/audit").status_code == 404
    assert client.get("/files/nope/audit").status_code == 404


@pytest.fixture
def token_client(make_app):
    return make_app(**TOKEN_SETTINGS).test_client()


def test_another_users_audit_is_404_and_no_token_is_401(token_client):
    alice, bob = create_user(token_client, "alice"), create_user(token_client, "bob")
    record = upload(token_client, "a.txt", b"alice's\n", alice["headers"])
    path = f"/files/{record['id']}/audit"
    assert token_client.get(path, headers=alice["headers"]).status_code == 200
    assert token_client.get(path, headers=bob["headers"]).status_code == 404
    assert token_client.get(path).status_code == 401

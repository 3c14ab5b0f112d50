"""What a transform gives back is judged again before it is stored: the validator saw the
upload's bytes, and a transform (a plugin's, or the stripper cutting a segment out) could
make of them a file a rule refuses. And a transform that fails in the thumbnail service
is a clear refusal, never a 500. Real services: a thumbnail service with plugin transforms,
a validator with its built-in rules or with the ClamAV rule on a real clamd."""
from __future__ import annotations

import io
import os

from protos.plugins import hookimpl
from tests.clamd import MARKER, MARKER_NAME
from tests.metadata_images import with_gps
from tests.samples import MZ_HEADER
from thumbnail_service import server as thumbnail_server
from thumbnail_service.hookspecs import Transform, TransformResult
from validator_service.server import create_plugins


def with_comment(data: bytes, comment: bytes) -> bytes:
    """A JPEG comment segment after SOI."""
    return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


# The plugins' transforms run in the thumbnail service's child processes: module-level, picklable.
def adds_the_marker(source, mime_type, parameters):
    return TransformResult(with_comment(source.read(), MARKER), ("nothing",))


def adds_a_harmless_comment(source, mime_type, parameters):
    return TransformResult(with_comment(source.read(), b"harmless"), ("nothing",))


def becomes_a_program(source, mime_type, parameters):
    return TransformResult(MZ_HEADER + source.read(), ("nothing",))


def breaks(source, mime_type, parameters):
    raise RuntimeError("a bug in a plugin's transform")


class Plugin:
    def __init__(self, apply):
        self.apply = apply

    @hookimpl
    def upload_transforms(self):
        yield Transform("plugin", ("image/jpeg",), self.apply)


def stored_files(app) -> list[str]:
    root = os.path.join(app.config["DATA_DIR"], "files")
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def upload(client, name: str, data: bytes):
    return client.post("/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def app_with(make_app, start_thumbnailer, apply, **config):
    running = start_thumbnailer(pm=thumbnail_server.create_plugins(env={}, extra_plugins=[Plugin(apply)]))
    return make_app(THUMBNAIL_ADDR=running.address, **config)


def assert_nothing_kept(app, client):
    assert stored_files(app) == []
    assert client.get("/files").get_json()["files"] == []


def test_bytes_a_transform_made_refusable_are_refused_by_a_whole_file_rule(make_app, start_thumbnailer,
                                                                          start_validator, clamd):
    scanning = start_validator(pm=create_plugins(env={"CLAMD_ADDRESS": clamd.unix}))
    app = app_with(make_app, start_thumbnailer, adds_the_marker, VALIDATOR_ADDR=scanning.address)
    client = app.test_client()
    data = with_gps("jpg")
    assert MARKER not in data
    response = upload(client, "photo.jpg", data)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["code"] == "malware" and MARKER_NAME in response.get_json()["error"]
    assert_nothing_kept(app, client)


def test_bytes_a_transform_made_refusable_are_refused_by_the_head_rules(make_app, start_thumbnailer):
    app = app_with(make_app, start_thumbnailer, becomes_a_program)
    client = app.test_client()
    response = upload(client, "photo.jpg", with_gps("jpg"))
    assert response.status_code == 415, response.get_json()
    assert response.get_json()["code"] == "executable_content"
    assert_nothing_kept(app, client)


def test_transformed_bytes_that_pass_are_stored_with_the_check_in_the_audit(make_app, start_thumbnailer,
                                                                           start_validator, clamd):
    scanning = start_validator(pm=create_plugins(env={"CLAMD_ADDRESS": clamd.unix}))
    app = app_with(make_app, start_thumbnailer, adds_a_harmless_comment, VALIDATOR_ADDR=scanning.address)
    client = app.test_client()
    response = upload(client, "photo.jpg", with_gps("jpg"))
    assert response.status_code == 201, response.get_json()
    record = response.get_json()
    audit = client.get(f"/files/{record['id']}/audit").get_json()
    checked = audit["transform"]["checked"]
    assert int(checked["bytes_read"]) == record["size"]  # every byte of the stored file was scanned
    assert {"rule": "clamav", "outcome": "pass"}.items() <= checked["decisions"][-1].items()


def test_a_transform_failing_in_the_thumbnail_service_is_a_clear_refusal(make_app, start_thumbnailer):
    app = app_with(make_app, start_thumbnailer, breaks)
    client = app.test_client()
    response = upload(client, "photo.jpg", with_gps("jpg"))
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["code"] == "transform_failed"
    assert "processing failed" in body["error"]
    assert_nothing_kept(app, client)
    # Other files still go in.
    assert upload(client, "notes.txt", b"hello\n").status_code == 201

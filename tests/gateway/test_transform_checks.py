"""What a transform gives back is judged again before it is stored: the validator saw the
upload's bytes, and a transform (a plugin's, or the stripper cutting a segment out) could
make of them a file a rule refuses. And a transform that fails in the thumbnail service
is a clear refusal, never a 500. Real services: a thumbnail service with plugin transforms,
a validator with its built-in rules or with the ClamAV rule on a real clamd."""
from __future__ import annotations

import io
import os
import zlib

from protos.plugins import hookimpl
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc
from tests.clamd import MARKER, MARKER_NAME
from tests.metadata_images import gps_of, image_bytes, with_gps
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


def adds_a_png_text_chunk(source, mime_type, parameters):
    """A tEXt chunk before IEND (a plugin's own reason to change a file: not metadata removal)."""
    data = source.read()
    body = b"tEXt" + b"Software\x00plugin"
    chunk = (len(body) - 4).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    end = data.rindex(b"IEND") - 4
    return TransformResult(data[:end] + chunk + data[end:], ("nothing",))


class PngPlugin:
    @hookimpl
    def upload_transforms(self):
        yield Transform("software_text", ("image/png",), adds_a_png_text_chunk)


def test_image_metadata_keep_does_not_turn_off_a_plugins_transform(make_app, start_thumbnailer):
    # IMAGE_METADATA is the shipped transform's setting: with it at keep, a plugin's transform
    # (a watermark, a text chunk) was never called, the gateway skipping every transform.
    running = start_thumbnailer(pm=thumbnail_server.create_plugins(env={}, extra_plugins=[PngPlugin()]))
    app = make_app(THUMBNAIL_ADDR=running.address, IMAGE_METADATA="keep")
    client = app.test_client()
    png = with_gps("png")
    stored = client.get(upload(client, "photo.png", png).get_json()["download_url"]).data
    assert b"Software\x00plugin" in stored and gps_of(stored) == gps_of(png) != {}  # the plugin's; location kept
    jpeg = with_gps("jpg")  # no plugin's transform for JPEG: stored as uploaded
    response = upload(client, "photo.jpg", jpeg)
    assert client.get(response.get_json()["download_url"]).data == jpeg
    audit = client.get(f"/files/{response.get_json()['id']}/audit").get_json()
    assert audit.get("transform") is None


def test_the_thumbnail_service_lists_each_transform_with_its_types(start_thumbnailer):
    running = start_thumbnailer(pm=thumbnail_server.create_plugins(env={}, extra_plugins=[PngPlugin()]))
    listed = thumbnail_pb2_grpc.ThumbnailStub(running.channel).GetTransforms(thumbnail_pb2.GetTransformsRequest(),
                                                                               timeout=5)
    by_name = {info.name: list(info.mime_types) for info in listed.transforms}
    assert by_name["software_text"] == ["image/png"]
    assert {"image/jpeg", "image/png", "image/webp"} <= set(by_name["image_metadata"])
    assert [info.name for info in listed.transforms] == ["image_metadata", "software_text"]  # the order they run


def test_a_plugins_transform_is_never_skipped_when_the_service_is_down(make_app, start_thumbnailer):
    # A plain image (no metadata) was stored untransformed when the thumbnail service failed: right
    # for metadata removal (there was nothing to remove), wrong for a plugin's own transform.
    running = start_thumbnailer(pm=thumbnail_server.create_plugins(env={}, extra_plugins=[PngPlugin()]))
    app = make_app(THUMBNAIL_ADDR=running.address, THUMBNAIL_TIMEOUT=0.5, HEALTH_TIMEOUT=0.2)
    client = app.test_client()
    plain = image_bytes("png")
    assert upload(client, "first.png", plain).status_code == 201  # the list of transforms is read
    running.close()
    response = upload(client, "second.png", plain)
    assert response.status_code == 503, response.get_json()
    assert "could not be processed" in response.get_json()["error"]
    assert [f["original_name"] for f in client.get("/files").get_json()["files"]] == ["first.png"]
    assert upload(client, "notes.txt", b"hello\n").status_code == 201  # no transform for text: stored


def upper_text(source, mime_type, parameters):
    return TransformResult(source.read().upper(), ("case",))


class TextPlugin:
    @hookimpl
    def upload_transforms(self):
        yield Transform("upper_text", ("text/plain",), upper_text)


def test_on_s3_a_file_a_plugins_transform_handles_is_never_stored_untransformed(make_app, start_thumbnailer,
                                                                               s3_bucket):
    # Past one part its bytes cannot be read back before the multipart upload completes, so the
    # transform cannot run: it was stored as uploaded (only images were refused).
    running = start_thumbnailer(pm=thumbnail_server.create_plugins(env={}, extra_plugins=[TextPlugin()]))
    app = make_app(THUMBNAIL_ADDR=running.address, **s3_bucket.settings(S3_PART_SIZE=5 * 1024 * 1024))
    client = app.test_client()
    small = upload(client, "small.txt", b"plain words\n")
    assert client.get(small.get_json()["download_url"]).data == b"PLAIN WORDS\n"
    response = upload(client, "big.txt", b"plain words\n" * (6 * 1024 * 1024 // 12))
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["code"] == "transform_too_large" and "tus" in response.get_json()["error"]
    assert [f["original_name"] for f in client.get("/files").get_json()["files"]] == ["small.txt"]
    assert s3_bucket.uploads() == []

"""IMAGE_METADATA on STORAGE=s3 (a real S3 API, tests/s3.py): a multipart upload's bytes are
stripped from its part buffer before the object is written; one larger than a part that must be
stripped is refused, never stored with its location (its bytes cannot be read back before the
multipart upload completes); a type no transform handles is stored whole however large; a tus
upload's finished object is stripped in the bucket."""
from __future__ import annotations

import base64
import hashlib
import io
import struct

import pytest

from tests.metadata_images import gps_of, orientation_of, pixels, with_gps

PART = 5 * 1024 * 1024  # S3's smallest part, so that a test file can outgrow it


@pytest.fixture
def s3_app(make_app, s3_bucket):
    return make_app(**s3_bucket.settings(S3_PART_SIZE=PART))


def upload(client, name, data):
    return client.post("/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def padded(jpeg: bytes, size: int) -> bytes:
    """The JPEG made larger than ``size`` with APP15 segments (no metadata, ignored by decoders),
    put just before its scan so that its header stays within the validator's head."""
    segment = b"\xff\xef" + struct.pack(">H", 65535) + bytes(65533)
    count = size // len(segment) + 1
    scan = jpeg.index(b"\xff\xda")
    return jpeg[:scan] + segment * count + jpeg[scan:]


def test_a_small_image_is_stripped_before_its_object_is_written(s3_app, s3_bucket):
    data = with_gps("jpg")
    response = upload(s3_app.test_client(), "photo.jpg", data)
    assert response.status_code == 201, response.get_json()
    record = response.get_json()
    stored = s3_bucket.get(f"files/{record['filename']}")
    assert gps_of(stored) == {} and orientation_of(stored) == 6 and pixels(stored) == pixels(data)
    assert record["sha256"] == hashlib.sha256(stored).hexdigest() and record["size"] == len(stored)


def test_an_image_larger_than_a_part_with_a_location_is_refused_not_stored(s3_app, s3_bucket):
    data = padded(with_gps("jpg"), PART)
    assert gps_of(data)
    response = upload(s3_app.test_client(), "big.jpg", data)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["code"] == "image_metadata_too_large"
    assert not [k for k in s3_bucket.keys() if k.startswith("files/")]
    assert s3_bucket.uploads() == []  # its multipart upload was aborted too


def test_an_image_of_a_type_no_transform_handles_is_stored_whole_however_large(s3_app, s3_bucket):
    from PIL import Image

    from tests.images import encode

    data = encode(Image.effect_noise((2600, 2600), 120).convert("P"), "GIF")  # LZW cannot shrink noise
    assert len(data) > PART
    response = upload(s3_app.test_client(), "big.gif", data)
    assert response.status_code == 201, response.get_json()
    record = response.get_json()
    assert s3_bucket.get(f"files/{record['filename']}") == data


def test_a_tus_upload_is_stripped_in_the_bucket(s3_app, s3_bucket):
    client = s3_app.test_client()
    data = with_gps("png")
    metadata = "filename " + base64.b64encode(b"photo.png").decode()
    created = client.post("/tus/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
                                             "Upload-Metadata": metadata})
    assert created.status_code == 201, created.data
    patched = client.patch(created.headers["Location"], data=data, headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert patched.status_code == 204, patched.data
    [record] = client.get("/files").get_json()["files"]
    stored = s3_bucket.get(f"files/{record['filename']}")
    assert gps_of(stored) == {} and pixels(stored) == pixels(data)
    assert record["sha256"] == hashlib.sha256(stored).hexdigest()


def test_a_stripped_tus_upload_whose_record_failed_is_finished_by_the_next_head(s3_app, s3_bucket, monkeypatch):
    """The database refusing the row (a fault a test cannot cause on demand, hence the
    stand-in) after the stripped bytes were stored: they were written over the upload's own
    object and then deleted, and the upload, its bytes gone, could never be finished."""
    import sqlalchemy as sa

    client = s3_app.test_client()
    data = with_gps("jpg")
    tus = {"Tus-Resumable": "1.0.0"}
    created = client.post("/tus/", headers={**tus, "Upload-Length": str(len(data)),
                                            "Upload-Metadata": "filename " + base64.b64encode(b"photo.jpg").decode()})
    url = created.headers["Location"]
    repo = s3_app.extensions["files"]
    real_add = repo.add

    def fail_once(row):
        monkeypatch.setattr(repo, "add", real_add)
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(repo, "add", fail_once)
    last = client.patch(url, data=data, headers={**tus, "Upload-Offset": "0",
                                                 "Content-Type": "application/offset+octet-stream"})
    assert last.status_code >= 500 and last.is_json
    assert client.get("/files").get_json()["files"] == []

    head = client.head(url, headers=tus)
    assert head.status_code == 200 and head.headers.get("Upload-File-Id"), head.get_json()
    record = client.get(f"/files/{head.headers['Upload-File-Id']}").get_json()
    stored = s3_bucket.get(f"files/{record['filename']}")
    assert gps_of(stored) == {} and pixels(stored) == pixels(data)
    assert record["sha256"] == hashlib.sha256(stored).hexdigest()
    # Only the stored file is left: neither the upload's own object nor the failed attempt's.
    assert [k for k in s3_bucket.keys() if k.startswith("files/")] == [f"files/{record['filename']}"]


def test_a_tus_upload_finished_again_after_a_crash_stores_its_transformed_file_once(s3_app, s3_bucket):
    """A crash after the record was written but before the upload's own object was deleted and
    its state saved: the next HEAD finishes it again. A drawn id stored the file a second time."""
    ingest = s3_app.extensions["ingest"]
    upload_id = "a" * 32
    filename = f"{upload_id}.jpg"
    data = with_gps("jpg")
    with s3_app.app_context():
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"files/{filename}", Body=data)
        first = ingest.adopt_stored(upload_id, filename, "photo.jpg", "image/jpeg")
        assert f"files/{filename}" not in s3_bucket.keys()
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"files/{filename}", Body=data)  # the crash
        again = ingest.adopt_stored(upload_id, filename, "photo.jpg", "image/jpeg")
    assert again.id == first.id
    assert [f["id"] for f in s3_app.test_client().get("/files").get_json()["files"]] == [first.id]
    assert [k for k in s3_bucket.keys() if k.startswith("files/")] == [f"files/{first.filename}"]

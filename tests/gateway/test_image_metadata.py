"""IMAGE_METADATA through the whole gateway (contract, "Post-processing"): location
goes from stored JPEG, PNG, WebP, HEIC and AVIF images, orientation and pixels stay; an image
with nothing to remove is stored byte for byte; the record's size and sha256, and the
download's ETag, are the stored bytes'; the audit keeps the upload's sha256 and what
was removed. Multipart and tus alike; the thumbnail service unreachable stores nothing."""
from __future__ import annotations

import base64
import hashlib
import io

import pytest

from tests.conftest import free_port
from tests.metadata_images import FORMATS, gps_of, image_bytes, opened, orientation_of, pixels, with_gps, \
    exif_with_gps, MAKE, XMP_WITH_GPS, IPTC_LOCATION, IPTC_OTHER, iptc_of, with_iptc


def upload(client, name, data):
    return client.post("/upload", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def download(client, record):
    response = client.get(record["download_url"])
    assert response.status_code == 200, response.status_code
    return response


@pytest.mark.parametrize("ext", FORMATS)
def test_location_goes_orientation_and_pixels_stay(client, ext):
    data = with_gps(ext)
    assert gps_of(data)  # the sample really has a location
    response = upload(client, f"photo.{ext}", data)
    assert response.status_code == 201, response.get_json()
    record = response.get_json()
    served = download(client, record)
    body = served.data
    assert gps_of(body) == {}
    assert orientation_of(body) == orientation_of(data)
    assert opened(body).getexif().get(MAKE) == "Camera Maker"  # strip-location keeps the rest
    assert pixels(body) == pixels(data)
    # The record, the ETag and the bytes agree; the audit keeps the upload's own.
    digest = hashlib.sha256(body).hexdigest()
    assert record["size"] == len(body) and record["sha256"] == digest
    assert served.headers["ETag"].strip('"') == digest
    audit = client.get(f"/files/{record['id']}/audit").get_json()
    assert audit["sha256"] == digest
    assert audit["transform"]["uploaded_sha256"] == hashlib.sha256(data).hexdigest()
    assert audit["transform"]["uploaded_size"] == len(data)
    assert "exif.gps" in audit["transform"]["removed"]


@pytest.mark.parametrize("ext", FORMATS)
def test_an_image_without_location_is_stored_byte_for_byte(client, ext):
    data = image_bytes(ext, exif_with_gps(gps=False))
    record = upload(client, f"plain.{ext}", data).get_json()
    body = download(client, record).data
    assert body == data
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get(f"/files/{record['id']}/audit").get_json()["transform"] is None


@pytest.mark.parametrize("ext", FORMATS)
def test_strip_all_keeps_only_the_orientation(make_app, ext):
    client = make_app(IMAGE_METADATA="strip-all").test_client()
    data = with_gps(ext)
    record = upload(client, f"photo.{ext}", data).get_json()
    body = download(client, record).data
    exif = opened(body).getexif()
    assert dict(exif.get_ifd(0x8825)) == {}
    assert MAKE not in exif
    assert exif.get(0x0112) == orientation_of(data)
    assert pixels(body) == pixels(data)
    assert record["sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "heic", "avif"])
def test_xmp_naming_a_place_goes(client, ext):
    data = image_bytes(ext, exif_with_gps(gps=False), xmp=XMP_WITH_GPS)
    assert b"GPSLatitude" in data or ext == "png"  # compressed in the PNG
    record = upload(client, f"photo.{ext}", data).get_json()
    body = download(client, record).data
    assert b"GPSLatitude" not in body
    assert pixels(body) == pixels(data)
    assert "xmp" in client.get(f"/files/{record['id']}/audit").get_json()["transform"]["removed"]


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_iptc_location_goes_and_the_rest_of_the_iptc_stays(client, ext):
    data = with_iptc(ext)
    assert IPTC_LOCATION.items() <= iptc_of(data).items()  # the sample really says where
    record = upload(client, f"photo.{ext}", data).get_json()
    body = download(client, record).data
    assert iptc_of(body) == IPTC_OTHER  # caption, credit, copyright... stay
    assert b"Montmartre" not in body and b"Paris" not in body
    assert pixels(body) == pixels(data) and orientation_of(body) == orientation_of(data) == 6
    assert record["sha256"] == hashlib.sha256(body).hexdigest()
    assert client.get(f"/files/{record['id']}/audit").get_json()["transform"]["removed"] == ["iptc.location"]


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_iptc_without_a_location_is_stored_byte_for_byte(client, ext):
    data = with_iptc(ext, IPTC_OTHER)
    record = upload(client, f"photo.{ext}", data).get_json()
    assert download(client, record).data == data
    assert client.get(f"/files/{record['id']}/audit").get_json()["transform"] is None


def test_keep_keeps_the_iptc_location(make_app):
    client = make_app(IMAGE_METADATA="keep").test_client()
    for ext in ("jpg", "png"):
        data = with_iptc(ext)
        assert download(client, upload(client, f"photo.{ext}", data).get_json()).data == data


@pytest.mark.parametrize("ext", ["jpg", "avif"])
def test_keep_stores_as_uploaded(make_app, ext):
    client = make_app(IMAGE_METADATA="keep").test_client()
    data = with_gps(ext)
    record = upload(client, f"photo.{ext}", data).get_json()
    assert download(client, record).data == data
    assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_tus_upload_is_stripped_too(client):
    data = with_gps("jpg")
    metadata = "filename " + base64.b64encode(b"photo.jpg").decode()
    created = client.post("/tus/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
                                             "Upload-Metadata": metadata})
    assert created.status_code == 201, created.data
    location = created.headers["Location"]
    patched = client.patch(location, data=data, headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert patched.status_code == 204, patched.data
    [record] = client.get("/files").get_json()["files"]
    file_id = record["id"]
    body = download(client, record).data
    assert gps_of(body) == {} and orientation_of(body) == 6 and pixels(body) == pixels(data)
    assert record["sha256"] == hashlib.sha256(body).hexdigest()
    audit = client.get(f"/files/{file_id}/audit").get_json()
    assert audit["transform"]["uploaded_sha256"] == hashlib.sha256(data).hexdigest()


def test_the_thumbnail_service_unreachable_stores_nothing(make_app):
    app = make_app(THUMBNAIL_ADDR=f"127.0.0.1:{free_port()}", THUMBNAIL_TIMEOUT=0.5, HEALTH_TIMEOUT=0.2)
    client = app.test_client()
    response = upload(client, "photo.jpg", with_gps("jpg"))
    assert response.status_code == 503, response.get_json()
    assert "metadata" in response.get_json()["error"]
    assert client.get("/files").get_json()["files"] == []
    # Files of other types still go in (nothing to remove from them), and so do images whose
    # containers hold no metadata at all: stored byte for byte, as without the service.
    assert upload(client, "notes.txt", b"hello\n" * 10).status_code == 201
    for ext in ("jpg", "png", "webp"):
        plain = image_bytes(ext)
        stored = upload(client, f"plain.{ext}", plain)
        assert stored.status_code == 201, stored.get_json()
        assert stored.get_json()["sha256"] == hashlib.sha256(plain).hexdigest()
    # One that may carry metadata but whose kind the gateway cannot walk (HEIC) waits for the service.
    assert upload(client, "photo.heic", image_bytes("heic")).status_code == 503
    assert upload(client, "photo.avif", image_bytes("avif")).status_code == 503


@pytest.mark.parametrize("damage", ["truncated exif", "offset outside", "ifd loop"])
def test_hostile_exif_never_fails_the_server(client, damage):
    data = bytearray(with_gps("jpg"))
    at = data.index(b"Exif\x00\x00") + 6  # the TIFF header
    if damage == "truncated exif":
        # The APP1 segment claims the same length, but the TIFF's IFD0 count says 4000 entries.
        data[at + 8:at + 10] = (4000).to_bytes(2, "little" if data[at] == 0x49 else "big")
    elif damage == "offset outside":
        data[at + 4:at + 8] = (0xFFFFFF00).to_bytes(4, "little" if data[at] == 0x49 else "big")
    else:
        # IFD0's next-IFD pointer points back at IFD0.
        little = data[at] == 0x49
        ifd0 = int.from_bytes(data[at + 4:at + 8], "little" if little else "big")
        count = int.from_bytes(data[at + ifd0:at + ifd0 + 2], "little" if little else "big")
        nxt = at + ifd0 + 2 + 12 * count
        data[nxt:nxt + 4] = ifd0.to_bytes(4, "little" if little else "big")
    response = upload(client, "photo.jpg", bytes(data))
    assert response.status_code in (201, 422), response.get_json()
    if response.status_code == 201:
        body = download(client, response.get_json()).data
        assert gps_of(body) == {}
        assert pixels(body) == pixels(bytes(data))


def test_a_damaged_container_is_refused_clearly(client):
    # A JPEG whose APP1 segment claims to run past the end of the file.
    data = with_gps("jpg")
    at = data.index(b"Exif\x00\x00") - 2
    broken = data[:at] + b"\xff\xff" + data[at + 2:]
    response = upload(client, "photo.jpg", broken)
    assert response.status_code in (201, 415, 422), response.get_json()
    if response.status_code == 201:
        assert gps_of(download(client, response.get_json()).data) == {}


def test_a_picture_appended_after_a_plain_one_loses_its_location(client):
    # No MPF index and no metadata in the first picture: the gateway's probe once stopped at its
    # scan and stored the file byte for byte, the appended picture's location with it.
    plain, appended = image_bytes("jpg"), with_gps("jpg")
    response = upload(client, "photo.jpg", plain + appended)
    assert response.status_code == 201, response.get_json()
    body = download(client, response.get_json()).data
    assert body[:len(plain)] == plain
    further = body[len(plain):]
    assert gps_of(appended) and gps_of(further) == {}
    assert pixels(further) == pixels(appended)

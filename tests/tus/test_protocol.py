"""The tus 1.0.0 protocol, raw HTTP against the real gateway process (gunicorn).

Spec: https://tus.io/protocols/resumable-upload (1.0.0): core protocol, creation,
creation-with-upload, creation-defer-length, termination, checksum, expiration, concatenation.
Where the spec leaves room, the gateway's decisions (see the CONTRACT) are tested.
"""
from __future__ import annotations

import base64
import hashlib
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import pytest

from tests.samples import MZ_HEADER, make_sample
from tests.tus.conftest import (
    IMF_FIXDATE, KiB, MiB, OFFSET_STREAM, TUS_VERSION, UPLOAD_PATH, Tus, leftover_files,
    parse_metadata, sha256, text_bytes, upload_id,
)
from validator_service.config import Settings

EXTENSIONS = {"creation", "creation-with-upload", "creation-defer-length", "termination",
              "checksum", "expiration", "concatenation"}
GONE = (404, 410)
TXT = {"filename": "notes.txt", "filetype": "text/plain"}


def header_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def assert_http_date_in_future(value: str | None):
    assert value, "no Upload-Expires"
    assert IMF_FIXDATE.match(value), f"Upload-Expires {value!r} is not an RFC 7231 IMF-fixdate"
    assert parsedate_to_datetime(value) > datetime.now(timezone.utc)


def digest(name: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(name, data).digest()).decode("ascii")


def exe_bytes(size: int) -> bytes:
    """A renamed program: the MZ header padded to 64 KiB, then random bytes."""
    head = MZ_HEADER.ljust(64 * KiB, b"\0")
    return head + random_bytes(size - len(head))


def wait_no_leftovers(data_dir, timeout: float = 3) -> list[str]:
    """The files left under data_dir (database aside), allowing a moment for clean-up."""
    deadline = time.monotonic() + timeout
    while (left := leftover_files(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def random_bytes(n: int) -> bytes:
    import random
    return random.Random(n).randbytes(n)


# ---------------------------------------------------------------- OPTIONS, versions


def test_options_advertises_the_server(tus):
    response = tus.options()
    assert response.status_code == 204
    assert header_list(response.headers.get("Tus-Version")) == [TUS_VERSION]
    assert set(header_list(response.headers.get("Tus-Extension"))) == EXTENSIONS
    assert len(header_list(response.headers.get("Tus-Extension"))) == len(EXTENSIONS)
    assert int(response.headers["Tus-Max-Size"]) == tus.policy()["max_file_size"]
    algorithms = header_list(response.headers.get("Tus-Checksum-Algorithm"))
    assert {"sha1", "sha256"} <= set(algorithms)
    # Spec (checksum): names are ASCII without uppercase characters.
    assert all(a.isascii() and a == a.lower() for a in algorithms)
    # Spec (Tus-Resumable): OPTIONS is the exception; where the header is sent anyway, it is the version.
    assert response.headers.get("Tus-Resumable", TUS_VERSION) == TUS_VERSION


@pytest.mark.parametrize("version", [None, "0.2.2", "banana"])
def test_options_ignores_tus_resumable(tus, version):
    """Spec (OPTIONS): the Server MUST ignore the Tus-Resumable header of an OPTIONS request."""
    response = tus.options(headers={"Tus-Resumable": version} if version else {})
    assert response.status_code == 204
    assert header_list(response.headers.get("Tus-Version")) == [TUS_VERSION]


def test_tus_max_size_follows_the_validators_policy(start_validator, gateways, tmp_path):
    small = start_validator(settings=Settings(max_file_size=MiB))
    gateway = gateways(tmp_path / "data", small.address)
    client = Tus(gateway.url)
    try:
        assert client.policy()["max_file_size"] == MiB
        assert client.options().headers.get("Tus-Max-Size") == str(MiB)
        assert client.create(MiB, TXT).status_code == 201
        response = client.create(MiB + 1, TXT)
        assert response.status_code == 413
        assert "Location" not in response.headers
    finally:
        client.close()


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0"])
def test_creation_without_the_right_version_is_412(tus, version):
    response = tus.create(10, TXT, headers={"Tus-Resumable": version})
    assert response.status_code == 412
    assert TUS_VERSION in header_list(response.headers.get("Tus-Version"))
    assert response.headers.get("Tus-Resumable") == TUS_VERSION
    assert "Location" not in response.headers


@pytest.mark.parametrize("version", [None, "0.2.2"])
def test_other_requests_without_the_right_version_are_412_and_not_processed(tus, version):
    data = text_bytes(100)
    url = tus.new(len(data), TXT)
    tus.send(url, data[:10])

    head = tus.head(url, headers={"Tus-Resumable": version})
    assert head.status_code == 412
    assert TUS_VERSION in header_list(head.headers.get("Tus-Version"))

    patch = tus.patch(url, 10, data[10:20], headers={"Tus-Resumable": version})
    assert patch.status_code == 412
    assert TUS_VERSION in header_list(patch.headers.get("Tus-Version"))
    assert patch.headers.get("Tus-Resumable") == TUS_VERSION
    assert tus.offset(url) == 10

    delete = tus.delete(url, headers={"Tus-Resumable": version})
    assert delete.status_code == 412
    assert TUS_VERSION in header_list(delete.headers.get("Tus-Version"))
    assert tus.head(url).status_code == 200


def test_every_response_carries_tus_resumable(tus):
    data = text_bytes(1000)
    responses = {}
    created = tus.create(len(data), TXT)
    responses["POST 201"] = created
    url = tus.url(created.headers["Location"])
    responses["HEAD 200"] = tus.head(url)
    responses["PATCH 204"] = tus.patch(url, 0, data[:100])
    responses["PATCH 409"] = tus.patch(url, 0, data[:100])
    responses["PATCH 415"] = tus.patch(url, 100, data[100:200], content_type="text/plain")
    responses["PATCH 460"] = tus.patch(url, 100, data[100:200],
                                       headers={"Upload-Checksum": f"sha1 {digest('sha1', b'x')}"})
    responses["PATCH 413"] = tus.patch(url, 100, text_bytes(2000)[100:])
    responses["POST 400"] = tus.create(None, TXT)
    responses["POST 413"] = tus.create(10 ** 15, TXT)
    responses["HEAD 404"] = tus.head(tus.endpoint + "0" * 32)
    responses["PATCH 404"] = tus.patch(tus.endpoint + "0" * 32, 0, b"x")
    responses["DELETE 204"] = tus.delete(url)
    responses["HEAD gone"] = tus.head(url)
    for name, response in responses.items():
        assert response.headers.get("Tus-Resumable") == TUS_VERSION, name


# ---------------------------------------------------------------- creation


def test_creation(tus):
    response = tus.create(1000, TXT)
    assert response.status_code == 201
    location = response.headers["Location"]
    assert UPLOAD_PATH.match(urlsplit(location).path), location
    if urlsplit(location).scheme:
        assert urlsplit(location).netloc == urlsplit(tus.base).netloc
    # No body sent: Upload-Offset belongs to creation-with-upload only.
    assert "Upload-Offset" not in response.headers
    assert_http_date_in_future(response.headers.get("Upload-Expires"))


def test_each_upload_gets_its_own_url(tus):
    urls = {tus.new(10, TXT) for _ in range(5)}
    assert len(urls) == 5


def test_head_of_a_new_upload(tus):
    metadata = {"filename": "Résumé 2024.txt", "filetype": "text/plain", "is_confidential": None}
    url = tus.new(1234, metadata)
    response = tus.head(url)
    assert response.status_code == 200
    assert response.headers["Upload-Offset"] == "0"
    assert response.headers["Upload-Length"] == "1234"
    assert "Upload-Defer-Length" not in response.headers
    assert "no-store" in response.headers.get("Cache-Control", "")
    assert response.headers.get("Tus-Resumable") == TUS_VERSION
    assert parse_metadata(response.headers["Upload-Metadata"]) == {
        "filename": "Résumé 2024.txt".encode(), "filetype": b"text/plain", "is_confidential": None}
    assert_http_date_in_future(response.headers.get("Upload-Expires"))
    assert response.content == b""


def test_upload_length_above_the_maximum_is_413(tus):
    limit = tus.policy()["max_file_size"]
    response = tus.create(limit + 1, TXT)
    assert response.status_code == 413
    assert "Location" not in response.headers
    at_limit = tus.create(limit, TXT)
    assert at_limit.status_code == 201
    assert tus.delete(tus.url(at_limit.headers["Location"])).status_code == 204


def test_creation_needs_a_length(tus):
    response = tus.create(None, TXT)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert response.json()["error"]


@pytest.mark.parametrize("headers", [
    {"Upload-Length": "-1"},
    {"Upload-Length": "abc"},
    {"Upload-Length": "1.5"},
    {"Upload-Length": ""},
    {"Upload-Length": "0x10"},
    {"Upload-Defer-Length": "2"},
    {"Upload-Defer-Length": "0"},
    {"Upload-Defer-Length": "yes"},
])
def test_creation_with_invalid_numbers_is_400(tus, headers):
    response = tus.create(None, TXT, headers=headers)
    assert response.status_code == 400
    assert "Location" not in response.headers


@pytest.mark.parametrize("metadata", [
    "filename !!!notbase64!!!",
    "filename bm90ZXMudHh0,filename b3RoZXIudHh0",
    "fïlename bm90ZXMudHh0".encode("utf-8"),
    "filename bm90ZXMudHh0,filetype dGV4dC9wbGFpbg==,filename bm90ZXMudHh0",
])
def test_malformed_metadata_is_400(tus, metadata):
    response = tus.create(10, headers={"Upload-Metadata": metadata})
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_an_executable_name_is_refused_at_creation(tus):
    response = tus.create(1000, {"filename": "setup.exe", "filetype": "application/octet-stream"})
    assert response.status_code == 415
    assert "Location" not in response.headers
    body = response.json()
    assert body["code"] == "extension_not_allowed"
    assert isinstance(body["error"], str) and body["error"]


def test_an_executable_name_is_refused_at_creation_uppy_keys(tus):
    response = tus.create(1000, {"name": "setup.exe", "type": "application/octet-stream"})
    assert response.status_code == 415
    assert response.json()["code"] == "extension_not_allowed"


# ---------------------------------------------------------------- creation-with-upload


def test_creation_with_upload_of_a_first_chunk(tus):
    data = text_bytes(300 * KiB, seed=11)
    response = tus.create(len(data), TXT, data=data[:100 * KiB])
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == str(100 * KiB)
    assert_http_date_in_future(response.headers.get("Upload-Expires"))
    url = tus.url(response.headers["Location"])
    assert tus.offset(url) == 100 * KiB
    last = tus.send(url, data, start=100 * KiB)
    record = tus.record(last.headers["Upload-File-Id"]).json()
    assert record["sha256"] == sha256(data)


def test_creation_with_upload_of_an_executable_head_is_refused(tus):
    data = MZ_HEADER.ljust(64 * KiB, b"\0") + random_bytes(100 * KiB)
    response = tus.create(20 * MiB, {"filename": "photo.jpg", "filetype": "image/jpeg"}, data=data)
    assert response.status_code == 415
    assert response.json()["code"] == "executable_content"
    assert "Location" not in response.headers


def test_creation_with_upload_of_the_whole_file(tus):
    data = text_bytes(5000, seed=12)
    response = tus.create(len(data), {"filename": "whole.txt"}, data=data)
    assert response.status_code == 201
    assert response.headers["Upload-Offset"] == str(len(data))
    head = tus.head(tus.url(response.headers["Location"]))
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))
    record = tus.record(head.headers["Upload-File-Id"])
    assert record.status_code == 200
    assert record.json()["sha256"] == sha256(data)
    assert record.json()["original_name"] == "whole.txt"


# ---------------------------------------------------------------- core: HEAD, PATCH


def test_head_of_an_unknown_upload_is_404(tus):
    for url in (tus.endpoint + "0123456789abcdef0123456789abcdef", tus.endpoint + "not-an-upload"):
        response = tus.head(url)
        assert response.status_code == 404
        assert "Upload-Offset" not in response.headers


def test_patch_of_an_unknown_upload_is_404(tus):
    assert tus.patch(tus.endpoint + "0123456789abcdef0123456789abcdef", 0, b"hello").status_code == 404


def test_patch_moves_the_offset(tus):
    data = text_bytes(10 * KiB, seed=1)
    url = tus.new(len(data), TXT)
    response = tus.patch(url, 0, data[:4000])
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "4000"
    assert response.headers.get("Tus-Resumable") == TUS_VERSION
    assert_http_date_in_future(response.headers.get("Upload-Expires"))
    assert response.content == b""
    head = tus.head(url)
    assert head.headers["Upload-Offset"] == "4000"
    assert_http_date_in_future(head.headers.get("Upload-Expires"))
    # An empty PATCH is fine and changes nothing.
    empty = tus.patch(url, 4000, b"")
    assert empty.status_code == 204 and empty.headers["Upload-Offset"] == "4000"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream",
                                          "multipart/form-data; boundary=x"])
def test_patch_needs_the_offset_stream_content_type(tus, content_type):
    data = text_bytes(2000, seed=2)
    url = tus.new(len(data), TXT)
    response = tus.patch(url, 0, data[:1000], content_type=content_type)
    assert response.status_code == 415
    assert tus.offset(url) == 0


def test_patch_at_the_wrong_offset_is_409_and_changes_nothing(tus):
    data = text_bytes(3000, seed=3)
    url = tus.new(len(data), TXT)
    tus.send(url, data[:1000])
    for wrong in (0, 999, 1001, 2000):
        response = tus.patch(url, wrong, data[wrong:wrong + 500])
        assert response.status_code == 409, wrong
        assert tus.offset(url) == 1000
    last = tus.send(url, data, start=1000)
    assert tus.record(last.headers["Upload-File-Id"]).json()["sha256"] == sha256(data)


def test_patch_past_the_upload_length_is_413(tus):
    data = text_bytes(1000, seed=4)
    url = tus.new(1000, TXT)
    tus.send(url, data[:400])
    response = tus.patch(url, 400, text_bytes(1700, seed=4)[400:])
    assert response.status_code == 413
    head = tus.head(url)
    assert head.status_code in (200, *GONE)
    if head.status_code == 200:
        assert 400 <= int(head.headers["Upload-Offset"]) <= 1000
        assert head.headers["Upload-Length"] == "1000"


def test_x_http_method_override_patch(tus):
    data = text_bytes(2000, seed=5)
    url = tus.new(len(data), TXT)
    response = tus.http.post(url, data=data[:1500], headers={
        "Tus-Resumable": TUS_VERSION, "X-HTTP-Method-Override": "PATCH",
        "Content-Type": OFFSET_STREAM, "Upload-Offset": "0"})
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == "1500"
    assert tus.offset(url) == 1500


def test_x_http_method_override_delete(tus):
    url = tus.new(100, TXT)
    response = tus.http.post(url, headers={"Tus-Resumable": TUS_VERSION,
                                           "X-HTTP-Method-Override": "DELETE"})
    assert response.status_code == 204
    assert tus.head(url).status_code in GONE


# ---------------------------------------------------------------- creation-defer-length


def test_deferred_length(tus):
    data = text_bytes(200 * KiB, seed=6)
    response = tus.create(None, {"filename": "stream.txt"}, defer=True)
    assert response.status_code == 201
    url = tus.url(response.headers["Location"])
    head = tus.head(url)
    assert head.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in head.headers
    assert head.headers["Upload-Offset"] == "0"

    first = tus.patch(url, 0, data[:100 * KiB])
    assert first.status_code == 204 and first.headers["Upload-Offset"] == str(100 * KiB)
    assert tus.head(url).headers["Upload-Defer-Length"] == "1"

    last = tus.patch(url, 100 * KiB, data[100 * KiB:], headers={"Upload-Length": str(len(data))})
    assert last.status_code == 204
    assert last.headers["Upload-Offset"] == str(len(data))
    head = tus.head(url)
    assert head.headers["Upload-Length"] == str(len(data))
    assert "Upload-Defer-Length" not in head.headers
    record = tus.record(last.headers["Upload-File-Id"]).json()
    assert record["sha256"] == sha256(data)
    assert record["original_name"] == "stream.txt"


def test_deferred_length_set_early_then_completed(tus):
    data = text_bytes(50 * KiB, seed=7)
    url = tus.new(None, {"filename": "early.txt"}, defer=True)
    first = tus.patch(url, 0, data[:10 * KiB], headers={"Upload-Length": str(len(data))})
    assert first.status_code == 204
    assert tus.head(url).headers["Upload-Length"] == str(len(data))
    last = tus.send(url, data, start=10 * KiB)
    assert tus.record(last.headers["Upload-File-Id"]).json()["sha256"] == sha256(data)


def test_deferred_length_passing_the_limit_is_413(start_validator, gateways, tmp_path):
    small = start_validator(settings=Settings(max_file_size=MiB))
    gateway = gateways(tmp_path / "data", small.address)
    client = Tus(gateway.url)
    try:
        data = text_bytes(MiB + 200 * KiB, seed=8)
        url = client.new(None, {"filename": "endless.txt"}, defer=True)
        assert client.patch(url, 0, data[:700 * KiB]).status_code == 204
        response = client.patch(url, 700 * KiB, data[700 * KiB:])
        assert response.status_code == 413
        head = client.head(url)
        if head.status_code == 200:
            assert int(head.headers["Upload-Offset"]) <= MiB
        else:
            assert head.status_code in GONE
        # Declaring a length over the limit in a PATCH is refused too.
        other = client.new(None, {"filename": "liar.txt"}, defer=True)
        declared = client.patch(other, 0, data[:1000], headers={"Upload-Length": str(MiB + 1)})
        assert declared.status_code == 413
        assert client.files() == []
    finally:
        client.close()


def test_concatenation_over_the_limit_is_413(start_validator, gateways, tmp_path):
    """Spec (creation): an upload longer than Tus-Max-Size is 413; a final upload's length is
    the sum of its partials'."""
    small = start_validator(settings=Settings(max_file_size=MiB))
    gateway = gateways(tmp_path / "data", small.address)
    client = Tus(gateway.url)
    try:
        assert client.create(MiB + 1, concat="partial").status_code == 413
        urls = []
        for seed in (27, 28):
            url = client.new(600 * KiB, concat="partial")
            client.send(url, text_bytes(600 * KiB, seed=seed))
            urls.append(urlsplit(url).path)
        response = client.create(None, {"filename": "too-big.txt"}, concat="final;" + " ".join(urls))
        assert response.status_code == 413
        assert "Location" not in response.headers
        assert client.files() == []
    finally:
        client.close()


# ---------------------------------------------------------------- checksum


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_checksum_match(tus, algorithm):
    data = text_bytes(100 * KiB, seed=9)
    url = tus.new(len(data), TXT)
    response = tus.patch(url, 0, data[:60 * KiB],
                         headers={"Upload-Checksum": f"{algorithm} {digest(algorithm, data[:60 * KiB])}"})
    assert response.status_code == 204
    assert response.headers["Upload-Offset"] == str(60 * KiB)


def test_every_advertised_checksum_algorithm_works(tus):
    algorithms = header_list(tus.options().headers.get("Tus-Checksum-Algorithm"))
    data = text_bytes(1000 * len(algorithms), seed=10)
    url = tus.new(len(data), TXT)
    for i, algorithm in enumerate(algorithms):
        piece = data[i * 1000:(i + 1) * 1000]
        response = tus.patch(url, i * 1000, piece,
                             headers={"Upload-Checksum": f"{algorithm} {digest(algorithm, piece)}"})
        assert response.status_code == 204, algorithm


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_checksum_mismatch_is_460_and_discards_the_chunk(tus, algorithm):
    data = text_bytes(100 * KiB, seed=13)
    url = tus.new(len(data), TXT)
    tus.send(url, data[:10 * KiB])
    wrong = digest(algorithm, data[10 * KiB:20 * KiB] + b"!")
    response = tus.patch(url, 10 * KiB, data[10 * KiB:20 * KiB],
                         headers={"Upload-Checksum": f"{algorithm} {wrong}"})
    assert response.status_code == 460
    assert tus.offset(url) == 10 * KiB
    # The discarded bytes left no trace: the rest goes on from the same offset.
    last = tus.send(url, data, start=10 * KiB)
    assert tus.record(last.headers["Upload-File-Id"]).json()["sha256"] == sha256(data)


def test_unsupported_checksum_algorithm_is_400(tus):
    algorithms = header_list(tus.options().headers.get("Tus-Checksum-Algorithm"))
    unsupported = next(a for a in ("crc32", "adler32", "whirlpool") if a not in algorithms)
    data = text_bytes(1000, seed=14)
    url = tus.new(len(data), TXT)
    response = tus.patch(url, 0, data[:500], headers={"Upload-Checksum": f"{unsupported} AAAAAA=="})
    assert response.status_code == 400
    assert tus.offset(url) == 0


# ---------------------------------------------------------------- termination


def test_termination(tus):
    data = text_bytes(1000, seed=15)
    url = tus.new(len(data), TXT)
    tus.send(url, data[:300])
    response = tus.delete(url)
    assert response.status_code == 204
    assert response.headers.get("Tus-Resumable") == TUS_VERSION
    head = tus.head(url)
    assert head.status_code in GONE
    assert "Upload-Offset" not in head.headers
    assert tus.patch(url, 300, data[300:]).status_code in GONE
    assert tus.delete(url).status_code in GONE


def test_termination_of_an_unknown_upload_is_404(tus):
    assert tus.delete(tus.endpoint + "0123456789abcdef0123456789abcdef").status_code == 404


def test_termination_frees_the_bytes(fresh_tus, fresh_gateway):
    data = text_bytes(300 * KiB, seed=16)
    url = fresh_tus.new(len(data), TXT)
    fresh_tus.send(url, data[:200 * KiB])
    assert fresh_tus.delete(url).status_code == 204
    assert wait_no_leftovers(fresh_gateway.data_dir) == []


# ---------------------------------------------------------------- concatenation


def _partial(base_url: str, data: bytes, chunk: int, results: dict, key: str):
    client = Tus(base_url)
    try:
        url = client.new(len(data), concat="partial")
        client.send(url, data, chunk=chunk)
        results[key] = url
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        results[key] = exc
    finally:
        client.close()


def _parallel_partials(tus, parts: list[bytes]) -> list[str]:
    results: dict = {}
    threads = [threading.Thread(target=_partial, args=(tus.base, part, 256 * KiB, results, i))
               for i, part in enumerate(parts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i in range(len(parts)):
        assert isinstance(results.get(i), str), results.get(i)
    return [results[i] for i in range(len(parts))]


@pytest.mark.parametrize("form", ["path", "absolute"])
def test_concatenation(fresh_tus, form):
    tus = fresh_tus
    first, second = text_bytes(700 * KiB, seed=17), text_bytes(500 * KiB, seed=18)
    urls = _parallel_partials(tus, [first, second])
    for url, part in zip(urls, (first, second)):
        head = tus.head(url)
        assert head.status_code == 200
        assert head.headers["Upload-Concat"] == "partial"
        assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(part))
    # Spec: partial uploads are not processed until they are concatenated.
    assert tus.files() == []

    refs = [urlsplit(u).path if form == "path" else u for u in urls]
    concat = "final;" + " ".join(refs)
    response = tus.create(None, {"filename": "joined.txt", "filetype": "text/plain"}, concat=concat)
    assert response.status_code == 201, response.text
    final = tus.url(response.headers["Location"])
    assert UPLOAD_PATH.match(urlsplit(final).path)

    total = len(first) + len(second)
    deadline = time.monotonic() + 15
    while True:
        head = tus.head(final)
        assert head.status_code == 200
        if head.headers.get("Upload-File-Id") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    value = head.headers["Upload-Concat"]
    assert value.startswith("final;")
    assert [upload_id(u) for u in value[len("final;"):].split()] == [upload_id(u) for u in urls]
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(total)

    record = tus.record(head.headers["Upload-File-Id"])
    assert record.status_code == 200
    record = record.json()
    assert record["sha256"] == sha256(first + second)
    assert record["size"] == total
    assert record["original_name"] == "joined.txt"
    assert [r["id"] for r in tus.files()] == [record["id"]]

    # Spec: PATCH against a final upload is 403 and modifies nothing.
    assert tus.patch(final, total, b"more").status_code == 403
    assert tus.patch(final, 0, b"more").status_code == 403
    head = tus.head(final)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(total)


def test_concatenation_of_an_unfinished_partial_is_400(tus):
    done = tus.new(10, concat="partial")
    tus.send(done, b"0123456789")
    unfinished = tus.new(10, concat="partial")
    tus.send(unfinished, b"01234")
    response = tus.create(None, {"filename": "x.txt"},
                          concat=f"final;{urlsplit(done).path} {urlsplit(unfinished).path}")
    assert response.status_code == 400
    assert "Location" not in response.headers


def test_concatenation_of_an_unknown_upload_is_refused(tus):
    done = tus.new(10, concat="partial")
    tus.send(done, b"0123456789")
    response = tus.create(None, {"filename": "x.txt"},
                          concat=f"final;{urlsplit(done).path} /tus/0123456789abcdef0123456789abcdef")
    assert 400 <= response.status_code < 500
    assert "Location" not in response.headers


def test_a_partial_upload_is_not_a_file(fresh_tus):
    url = fresh_tus.new(1000, {"filename": "part.txt"}, concat="partial")
    last = fresh_tus.send(url, text_bytes(1000, seed=19))
    assert "Upload-File-Id" not in last.headers
    assert fresh_tus.files() == []


# ---------------------------------------------------------------- the pipeline


def test_a_finished_upload_is_a_file(fresh_tus):
    tus = fresh_tus
    data = text_bytes(3 * MiB + 123, seed=20)
    url, last = tus.upload(data, {"filename": "report.txt", "filetype": "text/plain"}, chunk=MiB)
    file_id = last.headers.get("Upload-File-Id")
    assert file_id
    response = tus.record(file_id)
    assert response.status_code == 200
    record = response.json()
    assert record["id"] == file_id
    assert record["sha256"] == sha256(data)
    assert record["size"] == len(data)
    assert record["original_name"] == "report.txt"
    assert record["type"] == "text/plain"
    assert record["is_image"] is False and record["thumbnail_url"] is None
    assert record["expires_at"] is None
    download = tus.http.get(tus.base + record["download_url"])
    assert download.status_code == 200 and download.content == data

    head = tus.head(url)
    assert head.status_code == 200
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))
    assert head.headers["Upload-File-Id"] == file_id
    assert parse_metadata(head.headers["Upload-Metadata"]) == {
        "filename": b"report.txt", "filetype": b"text/plain"}

    # Newest first.
    _, second = tus.upload(text_bytes(1000, seed=21), {"filename": "later.txt"})
    assert [r["id"] for r in tus.files()] == [second.headers["Upload-File-Id"], file_id]


def test_only_the_last_patch_names_the_file(tus):
    data = text_bytes(30 * KiB, seed=22)
    url = tus.new(len(data), TXT)
    first = tus.patch(url, 0, data[:10 * KiB])
    assert first.status_code == 204
    assert "Upload-File-Id" not in first.headers
    assert "Upload-File-Id" not in tus.head(url).headers
    last = tus.send(url, data, start=10 * KiB)
    assert last.headers.get("Upload-File-Id")


def test_uppy_metadata_keys(tus):
    data = text_bytes(2000, seed=23)
    _, last = tus.upload(data, {"name": "from-uppy.txt", "type": "text/plain"})
    record = tus.record(last.headers["Upload-File-Id"]).json()
    assert record["original_name"] == "from-uppy.txt"
    assert record["sha256"] == sha256(data)


def test_an_image_gets_a_thumbnail(tus, tmp_path):
    data = make_sample("jpg", tmp_path).read_bytes()
    _, last = tus.upload(data, {"filename": "holiday.jpg", "filetype": "image/jpeg"})
    file_id = last.headers["Upload-File-Id"]
    deadline = time.monotonic() + 10
    while True:
        record = tus.record(file_id).json()
        if record["thumbnail_url"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert record["type"] == "image/jpeg" and record["is_image"] is True
    assert record["thumbnail_url"]
    assert record["sha256"] == sha256(data)
    thumbnail = tus.http.get(tus.base + record["thumbnail_url"])
    assert thumbnail.status_code == 200
    assert thumbnail.headers["Content-Type"].startswith("image/")


def test_expires_in_metadata(tus):
    data = text_bytes(2000, seed=24)
    _, last = tus.upload(data, {"filename": "short-lived.txt", "expires_in": "3600"})
    record = tus.record(last.headers["Upload-File-Id"]).json()
    assert record["expires_at"]
    expires = datetime.fromisoformat(record["expires_at"].replace("Z", "+00:00"))
    expected = datetime.now(timezone.utc) + timedelta(seconds=3600)
    assert abs((expires - expected).total_seconds()) < 120


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name,content,status,code", [
    ("photo.jpg", MZ_HEADER + b"\0" * 3000, 415, "executable_content"),
    ("report.pdf", "png", 415, "content_mismatch"),
    ("huge.png", "huge", 422, "image_too_large"),
], ids=["executable", "mismatch", "too-large-image"])
def test_a_small_file_is_judged_when_its_last_byte_arrives(fresh_tus, fresh_gateway, name, content, status, code):
    """The whole file is smaller than the head: the same verdicts as POST /upload, at the end."""
    tus = fresh_tus
    data = {"png": lambda: _png(10, 10), "huge": lambda: _png(6000, 10)}.get(content, lambda: content)()
    url = tus.new(len(data), {"filename": name})
    response = tus.patch(url, 0, data)
    assert response.status_code == status
    body = response.json()
    assert body["code"] == code and body["error"]
    assert "Upload-File-Id" not in response.headers
    assert tus.head(url).status_code == 410
    assert tus.patch(url, 0, data).status_code == 410
    assert tus.files() == []
    assert wait_no_leftovers(fresh_gateway.data_dir) == []


def test_an_empty_upload_is_not_left_hanging(fresh_tus):
    """Upload-Length: 0 is complete as soon as it is created (offset == length), so it goes
    through the pipeline at once, which refuses empty files (POST /upload: 400 empty_file): the
    creation is refused, or the upload is created and answers 410 like any refused upload. It is
    never an unfinished upload that no PATCH can complete."""
    tus = fresh_tus
    response = tus.create(0, {"filename": "empty.txt"})
    if response.status_code == 201:
        head = tus.head(tus.url(response.headers["Location"]))
        assert head.status_code == 410, (head.status_code, dict(head.headers))
    else:
        assert response.status_code == 400
        assert response.json()["code"] == "empty_file"
    assert tus.files() == []


def test_the_original_name_is_sanitized(tus):
    data = text_bytes(500, seed=25)
    _, last = tus.upload(data, {"filename": "../../etc/passwd.txt"})
    record = tus.record(last.headers["Upload-File-Id"]).json()
    assert record["original_name"] == "passwd.txt"
    assert "passwd" not in record["filename"]


# ---------------------------------------------------------------- expiration


def test_an_expired_upload_cannot_be_resumed(gateways, tmp_path):
    """Spec (expiration): the unfinished upload is available until Upload-Expires; after that
    it can not be resumed, and the server answers 404 or 410."""
    gateway = gateways(tmp_path / "data", TUS_EXPIRY=2)
    client = Tus(gateway.url)
    try:
        data = text_bytes(1000, seed=26)
        response = client.create(len(data), TXT)
        assert response.status_code == 201
        url = client.url(response.headers["Location"])
        expires = parsedate_to_datetime(response.headers["Upload-Expires"])
        assert -0.5 <= (expires - datetime.now(timezone.utc)).total_seconds() <= 3
        patch = client.patch(url, 0, data[:100])
        assert patch.status_code == 204
        expires = parsedate_to_datetime(patch.headers["Upload-Expires"])
        # (An HTTP-date has whole seconds: the real instant may be up to 1 s later.)
        time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 1.2)
        assert client.head(url).status_code in GONE
        assert client.patch(url, 100, data[100:]).status_code in GONE
        assert client.files() == []
    finally:
        client.close()


def test_expired_uploads_are_reaped(gateways, tmp_path):
    """The reaper (TUS_REAP_INTERVAL) removes expired unfinished uploads: 404 or 410, no bytes left."""
    gateway = gateways(tmp_path / "data", TUS_EXPIRY=1, TUS_REAP_INTERVAL=0.3)
    client = Tus(gateway.url)
    try:
        data = text_bytes(300 * KiB, seed=29)
        url = client.new(len(data), TXT)
        assert client.patch(url, 0, data[:200 * KiB]).status_code == 204
        deadline = time.monotonic() + 6
        while client.head(url).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.head(url).status_code in GONE
        assert client.patch(url, 200 * KiB, data[200 * KiB:]).status_code in GONE
        assert wait_no_leftovers(gateway.data_dir) == []
    finally:
        client.close()


# ---------------------------------------------------------------- connections


def test_error_answers_leave_the_connection_usable(tus):
    """Refusals of large bodies (409, 415, 413, 460, 412) on one keep-alive connection: each
    answer arrives whole and the next request on the same connection works."""
    data = text_bytes(3 * MiB, seed=30)
    url = tus.new(len(data), TXT)
    tus.send(url, data[:1000])
    cases = [
        (409, lambda: tus.patch(url, 0, data[:2 * MiB])),
        (415, lambda: tus.patch(url, 1000, data[1000:2 * MiB], content_type="text/plain")),
        (413, lambda: tus.patch(url, 1000, data[1000:] + data[:MiB])),
        (460, lambda: tus.patch(url, 1000, data[1000:2 * MiB],
                                headers={"Upload-Checksum": f"sha1 {digest('sha1', b'other')}"})),
        (412, lambda: tus.patch(url, 1000, data[1000:2 * MiB], headers={"Tus-Resumable": "0.2.2"})),
    ]
    for status, send in cases:
        assert send().status_code == status
        head = tus.head(url)
        assert head.status_code == 200, status
        assert head.headers["Upload-Offset"] == "1000", status
    last = tus.send(url, data, start=1000)
    assert tus.record(last.headers["Upload-File-Id"]).json()["sha256"] == sha256(data)


# ---------------------------------------------------------------- early refusal


@pytest.mark.parametrize("chunks", [[256 * KiB], [32 * KiB, 64 * KiB]], ids=["one-patch", "two-patches"])
def test_a_renamed_executable_is_refused_as_soon_as_its_head_arrives(live_tus, live_gateway, chunks):
    tus = live_tus
    size = 20 * MiB
    data = exe_bytes(sum(chunks) + 1024)
    url = tus.new(size, {"filename": "photo.jpg", "filetype": "image/jpeg"})
    offset, response = 0, None
    for i, chunk in enumerate(chunks):
        response = tus.patch(url, offset, data[offset:offset + chunk])
        if offset + chunk < 64 * KiB and response.status_code == 204:
            offset += chunk
            continue
        break
    assert response.status_code == 415
    assert response.headers.get("Content-Type", "").startswith("application/json")
    body = response.json()
    assert body["code"] == "executable_content"
    assert isinstance(body["error"], str) and len(body["error"]) > 10
    assert response.headers.get("Tus-Resumable") == TUS_VERSION

    head = tus.head(url)
    assert head.status_code == 410
    assert "Upload-Offset" not in head.headers
    assert tus.patch(url, 0, data[:1000]).status_code == 410
    assert tus.patch(url, offset, data[offset:offset + 1000]).status_code == 410
    assert tus.files() == []
    assert wait_no_leftovers(live_gateway.data_dir) == []

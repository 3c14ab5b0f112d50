"""A real tus client (tuspy, module `tusclient`) against the real gateway process."""
from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io

import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusUploadFailed
from tusclient.storage.filestorage import FileStorage
from tusclient.uploader import Uploader

from tests.samples import make_sample
from tests.tus.conftest import MiB, interrupted_patch, sha256, text_bytes, wait_stable_offset

BIG = {"filename": "big.txt", "filetype": "text/plain"}


@pytest.fixture
def tuspy(shared_gateway):
    return tus_client.TusClient(shared_gateway.url + "/tus/")


def file_id_of(uploader) -> str:
    """The record id the gateway names in the last PATCH's response (header Upload-File-Id)."""
    file_id = uploader.request.response_headers.get("upload-file-id")
    assert file_id, uploader.request.response_headers
    return file_id


def test_tuspy_uploads_20_mib(tuspy, tus):
    data = text_bytes(20 * MiB, seed=100)
    uploader = tuspy.uploader(file_stream=io.BytesIO(data), chunk_size=2 * MiB, metadata=BIG)
    uploader.upload()
    assert uploader.offset == len(data)
    file_id = file_id_of(uploader)
    record = tus.record(file_id).json()
    assert record["sha256"] == sha256(data)
    assert record["size"] == len(data)
    assert record["original_name"] == "big.txt"
    assert record["type"] == "text/plain"
    assert tus.files()[0]["id"] == file_id
    head = tus.head(uploader.url)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))


def test_tuspy_resumes_after_an_interrupted_patch(tuspy, tus):
    data = text_bytes(20 * MiB, seed=101)
    chunk = 2 * MiB
    uploader = tuspy.uploader(file_stream=io.BytesIO(data), chunk_size=chunk, metadata=BIG)
    for _ in range(3):
        uploader.upload_chunk()
    assert uploader.offset == 3 * chunk
    assert tus.offset(uploader.url) == 3 * chunk

    # The connection dies half-way through the fourth chunk.
    interrupted_patch(uploader.url, 3 * chunk, chunk, data[3 * chunk:3 * chunk + chunk // 2])
    offset = wait_stable_offset(tus, uploader.url)
    assert 3 * chunk <= offset <= 3 * chunk + chunk // 2

    # A new uploader on the same URL asks the server (HEAD) and goes on from there.
    resumed = tuspy.uploader(file_stream=io.BytesIO(data), chunk_size=chunk, url=uploader.url)
    assert resumed.offset == offset
    resumed.upload()
    assert resumed.offset == len(data)
    record = tus.record(file_id_of(resumed)).json()
    assert record["sha256"] == sha256(data)
    assert record["size"] == len(data)
    assert record["original_name"] == "big.txt"


def test_tuspy_resumes_from_its_url_storage(tuspy, tus, tmp_path):
    data = text_bytes(6 * MiB, seed=102)
    # (tuspy's fingerprinting closes a file_stream: resumable uploads go by file_path.)
    path = tmp_path / "big.txt"
    path.write_bytes(data)
    storage = FileStorage(str(tmp_path / "tus-urls.json"))
    try:
        first = tuspy.uploader(file_path=str(path), chunk_size=MiB, metadata=BIG,
                               store_url=True, url_storage=storage)
        first.upload(stop_at=2 * MiB)
        assert first.offset == 2 * MiB
        # A "new run of the program": the URL comes from the storage, the offset from the server.
        second = tuspy.uploader(file_path=str(path), chunk_size=MiB, metadata=BIG,
                                store_url=True, url_storage=storage)
        assert second.url == first.url
        assert second.offset == 2 * MiB
        second.upload()
    finally:
        storage.close()
    record = tus.record(file_id_of(second)).json()
    assert record["sha256"] == sha256(data)


def test_tuspy_with_checksums(tuspy, tus):
    data = text_bytes(5 * MiB, seed=103)
    uploader = tuspy.uploader(file_stream=io.BytesIO(data), chunk_size=MiB, metadata=BIG,
                              upload_checksum=True)
    assert uploader.checksum_algorithm_name == "sha1"
    uploader.upload()
    assert tus.record(file_id_of(uploader)).json()["sha256"] == sha256(data)


class Sha256Uploader(Uploader):
    CHECKSUM_ALGORITHM_PAIR = ("sha256", hashlib.sha256)


class LyingUploader(Uploader):
    """Sends a sha1 checksum that does not match the chunk."""
    CHECKSUM_ALGORITHM_PAIR = ("sha1", lambda chunk: hashlib.sha1(chunk + b"tampered"))


def test_tuspy_with_sha256_checksums(tuspy, tus):
    data = text_bytes(3 * MiB, seed=104)
    uploader = Sha256Uploader(file_stream=io.BytesIO(data), client=tuspy, chunk_size=MiB,
                              metadata=BIG, upload_checksum=True)
    uploader.upload()
    assert tus.record(file_id_of(uploader)).json()["sha256"] == sha256(data)


def test_tuspy_with_a_wrong_checksum_fails_with_460(tuspy, tus):
    data = text_bytes(3 * MiB, seed=105)
    uploader = LyingUploader(file_stream=io.BytesIO(data), client=tuspy, chunk_size=MiB,
                             metadata=BIG, upload_checksum=True)
    with pytest.raises(TusUploadFailed) as failure:
        uploader.upload()
    assert failure.value.status_code == 460
    assert tus.offset(uploader.url) == 0


def test_tuspy_single_request_image(tuspy, tus, tmp_path):
    data = make_sample("png", tmp_path).read_bytes()
    uploader = tuspy.uploader(file_stream=io.BytesIO(data),
                              metadata={"filename": "logo.png", "filetype": "image/png"})
    uploader.upload()
    record = tus.record(file_id_of(uploader)).json()
    assert record["type"] == "image/png"
    assert record["is_image"] is True
    assert record["sha256"] == sha256(data)
    assert record["original_name"] == "logo.png"


def test_tuspy_async_uploader(tuspy, tus):
    data = text_bytes(3 * MiB, seed=106)
    uploader = tuspy.async_uploader(file_stream=io.BytesIO(data), chunk_size=MiB, metadata=BIG)
    # A loop of its own, on a thread of its own: the session's Playwright keeps
    # an event loop running on the main thread once the browser tests have run.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, uploader.upload()).result(timeout=120)
    assert uploader.offset == len(data)
    record = tus.record(file_id_of(uploader)).json()
    assert record["sha256"] == sha256(data)


def test_tuspy_sees_a_refusal(tuspy, tus):
    """The gateway's early refusal reaches a stock client as a failed upload with the 415."""
    from tests.samples import MZ_HEADER
    data = MZ_HEADER.ljust(64 * 1024, b"\0") + text_bytes(2 * MiB, seed=107)
    uploader = tuspy.uploader(file_stream=io.BytesIO(data), chunk_size=MiB,
                              metadata={"filename": "photo.jpg", "filetype": "image/jpeg"})
    with pytest.raises(TusUploadFailed) as failure:
        uploader.upload()
    assert failure.value.status_code == 415
    assert b"executable_content" in failure.value.response_content
    assert tus.head(uploader.url).status_code == 410

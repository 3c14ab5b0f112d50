"""tus on STORAGE=s3 (gateway/tus/s3.py): partial uploads live in S3 multipart
uploads plus a tail object for what is short of a part, the write lock is in
the database, and so any gateway replica continues any upload. Against moto's
real S3 server (tests/s3.py) and real gateway processes."""
from __future__ import annotations

import base64
import hashlib
import io
import threading
import time

import pytest
import requests
from tusclient import client as tus_client

from tests.s3 import Bucket
from tests.samples import MZ_HEADER
from tests.tus.conftest import (MiB, Tus, interrupted_patch, kill_gateway, leftover_files, open_patch, sha256,
                                text_bytes, wait_stable_offset)

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
# 8 MiB parts (the default S3_PART_SIZE).
PART = 8 * MiB


def meta(name: str) -> str:
    return "filename " + base64.b64encode(name.encode()).decode()


@pytest.fixture
def s3_app(make_app, s3_bucket):
    return make_app(**s3_bucket.settings())


@pytest.fixture
def client(s3_app):
    return s3_app.test_client()


def create(client, length: int, name: str = "big.txt", **headers) -> str:
    response = client.post("/tus/", headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": meta(name),
                                             **headers})
    assert response.status_code == 201, response.get_json()
    return response.headers["Location"]


def patch(client, url: str, offset: int, data: bytes, expect: int = 204):
    response = client.patch(url, data=data, headers={**TUS, "Upload-Offset": str(offset),
                                                     "Content-Type": OFFSET_STREAM})
    assert response.status_code == expect, (response.status_code, response.get_json())
    return response


def state(bucket: Bucket, filename: str) -> tuple[list[str], list[str]]:
    """(the keys that are this upload's, the keys of its open multipart uploads)."""
    keys = [k for k in bucket.keys("files/") if filename in k]
    return keys, [u["Key"] for u in bucket.uploads("files/")]


def filename_of(s3_app, url: str) -> str:
    return s3_app.extensions["tus"].get(url.rsplit("/", 1)[1]).filename


# --- the layout in the bucket ---

def test_parts_and_tails_collect_in_the_bucket_and_complete_at_the_final_key(s3_app, client, s3_bucket, tmp_path):
    data = text_bytes(21 * MiB, seed=21)
    url = create(client, len(data))
    name = filename_of(s3_app, url)

    patch(client, url, 0, data[:1 * MiB])  # less than S3's smallest part: a tail object
    assert state(s3_bucket, name) == ([f"files/.{name}.{1 * MiB}.part"], [])
    patch(client, url, 1 * MiB, data[1 * MiB:3 * MiB])  # the tail grows: a new one, named after its end
    assert state(s3_bucket, name) == ([f"files/.{name}.{3 * MiB}.part"], [])
    assert s3_bucket.get(f"files/.{name}.{3 * MiB}.part") == data[:3 * MiB]
    patch(client, url, 3 * MiB, data[3 * MiB:12 * MiB])  # part 1 leaves, the rest is a tail after it
    assert state(s3_bucket, name) == ([f"files/.{name}.{12 * MiB}.part"], [f"files/{name}"])
    assert s3_bucket.get(f"files/.{name}.{12 * MiB}.part") == data[PART:12 * MiB]
    patch(client, url, 12 * MiB, data[12 * MiB:16 * MiB])  # exactly two parts: no tail at all
    assert state(s3_bucket, name) == ([], [f"files/{name}"])
    response = patch(client, url, 16 * MiB, data[16 * MiB:])  # the last part is short, then complete
    record = client.get(f"/files/{response.headers['Upload-File-Id']}").get_json()

    assert state(s3_bucket, name) == ([f"files/{name}"], [])
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=f"files/{name}")
    assert head["ETag"].strip('"').endswith("-3")  # 8 + 8 + 5 MiB
    assert record["sha256"] == sha256(data) and record["size"] == len(data)
    assert client.get(record["download_url"]).data == data
    assert leftover_files(tmp_path / "data") == []  # nothing of it ever touched the local disk


def test_creation_with_upload_and_an_upload_of_one_piece(client, s3_bucket):
    data = b"one small piece of text\n" * 100
    response = client.post("/tus/", data=data, headers={**TUS, "Upload-Length": str(len(data)),
                                                         "Upload-Metadata": meta("small.txt"),
                                                         "Content-Type": OFFSET_STREAM})
    assert response.status_code == 201
    record = client.get(f"/files/{response.headers['Upload-File-Id']}").get_json()
    assert record["sha256"] == sha256(data)
    assert s3_bucket.keys() == [f"files/{record['filename']}"] and s3_bucket.uploads() == []


def test_a_refused_upload_leaves_nothing_in_the_bucket(client, s3_bucket):
    url = create(client, 10 * MiB, name="setup.pdf")
    response = client.patch(url, data=MZ_HEADER + b"\0" * (10 * MiB - len(MZ_HEADER)),
                            headers={**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_STREAM})
    assert response.status_code == 415
    assert client.head(url, headers=TUS).status_code == 410
    assert s3_bucket.keys() == [] and s3_bucket.uploads() == []


def test_termination_aborts_the_multipart_upload_and_deletes_the_tail(s3_app, client, s3_bucket):
    data = text_bytes(10 * MiB, seed=3)
    url = create(client, 20 * MiB)
    patch(client, url, 0, data)
    name = filename_of(s3_app, url)
    assert state(s3_bucket, name) == ([f"files/.{name}.{10 * MiB}.part"], [f"files/{name}"])
    assert client.delete(url, headers=TUS).status_code == 204
    assert s3_bucket.keys() == [] and s3_bucket.uploads() == []
    assert client.head(url, headers=TUS).status_code == 410


def test_expired_uploads_are_reaped_from_the_bucket(make_app, s3_bucket):
    app = make_app(**s3_bucket.settings(TUS_EXPIRY=0.5))
    client = app.test_client()
    url = create(client, 20 * MiB)
    patch(client, url, 0, text_bytes(9 * MiB))
    assert s3_bucket.keys() and s3_bucket.uploads()
    time.sleep(0.6)
    assert app.extensions["tus"].reap() == 1
    assert s3_bucket.keys() == [] and s3_bucket.uploads() == []


def test_concatenation_joins_partial_uploads_in_the_bucket(client, s3_bucket):
    first, second = text_bytes(9 * MiB, seed=1), text_bytes(3 * MiB, seed=2)
    urls = []
    for piece in (first, second):
        url = create(client, len(piece), **{"Upload-Concat": "partial"})
        patch(client, url, 0, piece)
        urls.append(url)
    response = client.post("/tus/", headers={**TUS, "Upload-Metadata": meta("joined.txt"),
                                              "Upload-Concat": "final;" + " ".join(urls)})
    assert response.status_code == 201, response.get_json()
    record = client.get(f"/files/{response.headers['Upload-File-Id']}").get_json()
    assert record["sha256"] == sha256(first + second)
    assert client.get(record["download_url"]).data == first + second
    assert s3_bucket.keys() == [f"files/{record['filename']}"] and s3_bucket.uploads() == []


def test_joining_a_partial_upload_whose_bytes_are_gone_is_410_not_500(s3_app, client, s3_bucket):
    """A partial upload's multipart upload aborted behind the gateway's back (a bucket lifecycle
    rule "abort incomplete multipart uploads after N days" does exactly that): joining it says
    so with a 410 and leaves nothing, instead of an unexplained 500."""
    piece = text_bytes(1000, seed=45)
    url = create(client, len(piece), **{"Upload-Concat": "partial"})
    patch(client, url, 0, piece)
    [multipart] = s3_bucket.uploads()
    s3_bucket.client.abort_multipart_upload(Bucket=s3_bucket.name, Key=multipart["Key"],
                                            UploadId=multipart["UploadId"])
    response = client.post("/tus/", headers={**TUS, "Upload-Metadata": meta("joined.txt"),
                                              "Upload-Concat": f"final;{url}"})
    assert response.status_code == 410 and "partial upload" in response.get_json()["error"]
    assert s3_bucket.keys() == [] and s3_bucket.uploads() == []


def test_reconcile_keeps_uploads_in_progress_and_removes_forgotten_ones(s3_app, client, s3_bucket):
    url = create(client, 20 * MiB)
    patch(client, url, 0, text_bytes(10 * MiB))
    name = filename_of(s3_app, url)
    # A tus upload's tail of which the database knows nothing (its row was lost).
    stray = f"files/.{'a' * 32}.txt.0.part"
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=stray, Body=b"forgotten")
    result = s3_app.test_cli_runner().invoke(args=["reconcile", "--orphan-age", "0"])
    assert result.exit_code == 0, result.output
    assert "1 partial removed" in result.output and "temp removed" not in result.output
    assert state(s3_bucket, name) == ([f"files/.{name}.{10 * MiB}.part"], [f"files/{name}"])
    assert stray not in s3_bucket.keys()


def test_a_last_patch_sent_again_after_finishing_failed_finishes_the_upload(make_app, s3_bucket):
    """The last PATCH's bytes are all in (its tail gone, its last part sent, its multipart upload
    even completed), but the validator was down: sent again at the same offset with no body, as
    on local disk it finishes the upload, instead of looking for the tail and answering 503."""
    from tests.conftest import Running, free_port
    from validator_service import server as validator_server

    port = free_port()
    validator = Running(*validator_server.create_server(f"127.0.0.1:{port}"))
    app = make_app(**s3_bucket.settings(VALIDATOR_ADDR=validator.address, VALIDATOR_TIMEOUT=2))
    client = app.test_client()
    data = text_bytes(2 * MiB, seed=41)
    url = create(client, len(data))
    patch(client, url, 0, data[:1 * MiB])  # the head is judged here
    validator.close()
    patch(client, url, 1 * MiB, data[1 * MiB:], expect=503)
    validator = Running(*validator_server.create_server(f"127.0.0.1:{port}"))
    try:
        deadline = time.monotonic() + 15
        while True:  # as a client would: until the gateway's channel has found the validator again
            response = client.patch(url, data=b"", headers={**TUS, "Upload-Offset": str(len(data)),
                                                            "Content-Type": OFFSET_STREAM})
            if "validation service" not in response.get_data(as_text=True) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status_code == 204, response.get_json()
        record = client.get(f"/files/{response.headers['Upload-File-Id']}").get_json()
        assert client.get(record["download_url"]).data == data
    finally:
        validator.close()


def test_a_gateway_that_died_right_after_completing_the_multipart_upload_leaves_it_finishable(
        s3_app, client, s3_bucket):
    """Completing the multipart upload and clearing its id in the row are two steps: a gateway
    killed between them (or one that lost S3's answer) leaves a row naming an upload S3 no longer
    has. The next HEAD must still finish the upload, from the object now whole at its key."""
    store = s3_app.extensions["tus"]
    data = text_bytes(10 * MiB, seed=42)
    url = create(client, len(data))
    upload = store.get(url.rsplit("/", 1)[1])
    # The last PATCH's steps up to finishing (gateway/tus/write.py), then finalize's S3 half.
    with store.writing(upload, wait=0) as writer:
        writer.begin(0)
        writer.write(data)
        writer.sync(last=True)
        upload.offset = len(data)
        store.save(upload, "offset", fence=writer.lock_owner)
        writer.saved()
    key, multipart_id = f"files/{upload.filename}", store._multipart_id(upload.id)
    parts = s3_bucket.client.list_parts(Bucket=s3_bucket.name, Key=key, UploadId=multipart_id)["Parts"]
    s3_bucket.client.complete_multipart_upload(
        Bucket=s3_bucket.name, Key=key, UploadId=multipart_id,
        MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]})

    head = client.head(url, headers=TUS)
    assert head.status_code == 200 and head.headers.get("Upload-File-Id")
    record = client.get(f"/files/{head.headers['Upload-File-Id']}").get_json()
    assert client.get(record["download_url"]).data == data
    assert s3_bucket.uploads() == []


def test_a_tail_and_a_last_part_go_up_from_the_part_buffer_itself(s3_app, client):
    """Stream, don't buffer: what a PATCH sends at its end (its tail, or the last part) goes up
    from its part buffer, not from a copy of it (a second part's worth of memory per request)."""
    import tracemalloc

    store = s3_app.extensions["tus"]
    data = text_bytes(15 * MiB, seed=43)
    url = create(client, len(data))
    upload = store.get(url.rsplit("/", 1)[1])

    def peak_of(call) -> int:
        tracemalloc.start()
        try:
            call()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    for start, end in ((0, 14 * MiB), (14 * MiB, 15 * MiB)):  # part 1 and a 6 MiB tail; a 7 MiB last part
        with store.writing(upload, wait=0) as writer:
            writer.begin(start)
            writer.write(data[start:end])
            assert peak_of(lambda: writer.sync(last=end == len(data))) < 1 * MiB
            upload.offset = end
            store.save(upload, "offset", fence=writer.lock_owner)
            writer.saved()
    head = client.head(url, headers=TUS)
    record = client.get(f"/files/{head.headers['Upload-File-Id']}").get_json()
    assert client.get(record["download_url"]).data == data


# --- the lock, in the database ---

def test_a_patch_meets_423_while_another_request_holds_the_lock(make_app, s3_bucket):
    app = make_app(**s3_bucket.settings(TUS_LOCK_WAIT=0.3))
    client = app.test_client()
    url = create(client, 1000)
    store = app.extensions["tus"]
    upload = store.get(url.rsplit("/", 1)[1])
    holding, release = threading.Event(), threading.Event()

    def hold():
        with store.writing(upload, wait=1):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(5)
        patch(client, url, 0, b"x" * 10, expect=423)
    finally:
        release.set()
        thread.join()
    patch(client, url, 0, b"now it can go\n")


def test_an_abandoned_lock_expires_and_a_stalled_holder_cannot_move_the_offset(make_app, s3_bucket):
    from gateway.tus.store import LockLost, WriteLocked

    app = make_app(**s3_bucket.settings())
    store = app.extensions["tus"]
    store.lock_ttl = type(store.lock_ttl)(seconds=0.5)
    url = create(app.test_client(), 1000)
    upload = store.get(url.rsplit("/", 1)[1])
    # A holder that dies without releasing (a killed replica): its lock outlives it until it expires.
    stalled = store.writing(upload, wait=0)
    writer = stalled.__enter__()
    writer.heartbeat.set()  # frozen: no more renewals
    with pytest.raises(WriteLocked):
        with store.writing(upload, wait=0.1):
            pass
    time.sleep(0.6)
    with store.writing(upload, wait=0) as taker:
        upload.offset = 0
        store.save(upload, "offset", fence=taker.lock_owner)
    # The stalled holder wakes up: its saves are fenced off.
    with pytest.raises(LockLost):
        store.save(upload, "offset", fence=writer.lock_owner)
    with pytest.raises(LockLost):
        store.renew(upload.id, writer.lock_owner)


def test_a_holder_that_lost_the_lock_cannot_cut_short_the_tail_the_offset_needs(make_app, s3_bucket):
    """Nothing in S3 is fenced by the lock: a holder frozen past its expiry still sends its tail when it
    wakes. That tail must not replace the one the offset saved since then names (the next PATCH would
    find it short, and the upload could never go on)."""
    from gateway.tus.store import LockLost

    app = make_app(**s3_bucket.settings())
    store = app.extensions["tus"]
    store.lock_ttl = type(store.lock_ttl)(seconds=0.5)
    client = app.test_client()
    data = text_bytes(3 * MiB, seed=40)
    url = create(client, len(data))
    patch(client, url, 0, data[:1000])
    upload = store.get(url.rsplit("/", 1)[1])

    stalled = store.writing(upload, wait=0)
    late = stalled.__enter__()
    late.heartbeat.set()  # frozen: no more renewals
    late.begin(1000)
    late.write(data[1000:1500])  # what reached it before it froze
    time.sleep(0.6)
    patch(client, url, 1000, data[1000:2 * MiB])  # meanwhile the client went on through another request
    late.sync()  # the late holder wakes and sends its tail...
    with pytest.raises(LockLost):
        store.save(upload, "offset", fence=late.lock_owner)  # ...but cannot move the offset
    stalled.__exit__(None, None, None)

    response = patch(client, url, 2 * MiB, data[2 * MiB:])
    record = client.get(f"/files/{response.headers['Upload-File-Id']}").get_json()
    assert client.get(record["download_url"]).data == data


def test_a_holder_that_lost_the_lock_sends_no_more_parts(make_app, s3_bucket):
    """A holder that stalled past its lock's expiry and was overtaken stops at its next part,
    instead of streaming the rest of its body into parts another request now writes."""
    from gateway.tus.store import LockLost

    app = make_app(**s3_bucket.settings())
    store = app.extensions["tus"]
    store.lock_ttl = type(store.lock_ttl)(seconds=0.5)
    client = app.test_client()
    data = text_bytes(3 * PART, seed=44)
    url = create(client, len(data))
    patch(client, url, 0, data[:PART])  # part 1, and the multipart upload, exist
    upload = store.get(url.rsplit("/", 1)[1])

    stalled = store.writing(upload, wait=0)
    late = stalled.__enter__()
    late.heartbeat.set()  # frozen: no more renewals
    late.begin(PART)
    time.sleep(0.6)
    with store.writing(upload, wait=0):
        pass  # another request takes the lock
    with pytest.raises(LockLost):
        late.write(data[PART:2 * PART])
    stalled.__exit__(None, None, None)
    [multipart] = s3_bucket.uploads()
    parts = s3_bucket.client.list_parts(Bucket=s3_bucket.name, Key=multipart["Key"],
                                        UploadId=multipart["UploadId"]).get("Parts", [])
    assert [p["PartNumber"] for p in parts] == [1]


# --- two gateway processes, one database, one bucket ---

@pytest.fixture
def two_gateways(tmp_path, empty_database, s3_bucket, gateways):
    """Two gateway processes sharing one database (SQLite file or PostgreSQL) and one bucket,
    each with its own (empty) DATA_DIR."""
    url = empty_database
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/shared.db"
    env = s3_bucket.env(DATABASE_URL=url, TUS_LOCK_EXPIRY=2)
    a = gateways(tmp_path / "a", **env)
    b = gateways(tmp_path / "b", **env)
    return a, b


def test_patches_alternate_between_two_gateways(two_gateways, s3_bucket):
    a, b = two_gateways
    data = text_bytes(30 * MiB, seed=30)
    tus_a, tus_b = Tus(a.url), Tus(b.url)
    upload_url = tus_a.new(len(data), {"filename": "shared.txt"})
    path = upload_url.split("/tus/", 1)[1]
    # 3 MiB PATCHes (below S3's smallest part): every one ends in a tail the next replica picks up.
    offset, turn = 0, 0
    while offset < len(data):
        tus = (tus_a, tus_b)[turn % 2]
        piece = data[offset:offset + 3 * MiB]
        response = tus.patch(f"{tus.base}/tus/{path}", offset, piece)
        assert response.status_code == 204, (turn, response.status_code, response.text)
        offset += len(piece)
        assert int(response.headers["Upload-Offset"]) == offset
        assert int(tus_a.head(f"{a.url}/tus/{path}").headers["Upload-Offset"]) == offset
        turn += 1
    file_id = response.headers["Upload-File-Id"]
    record = tus_b.record(file_id).json()
    assert record["sha256"] == sha256(data)
    downloaded = requests.get(a.url + record["download_url"], timeout=60).content
    assert hashlib.sha256(downloaded).hexdigest() == sha256(data)
    assert s3_bucket.keys() == [f"files/{record['filename']}"] and s3_bucket.uploads() == []
    assert leftover_files(a.data_dir) == [] and leftover_files(b.data_dir) == []


def test_tuspy_moves_between_gateways_and_a_replica_dies_mid_patch(two_gateways, s3_bucket):
    a, b = two_gateways
    data = text_bytes(24 * MiB, seed=31)
    metadata = {"filename": "tuspy.txt", "filetype": "text/plain"}
    uploader = tus_client.TusClient(a.url + "/tus/").uploader(file_stream=io.BytesIO(data), chunk_size=5 * MiB,
                                                              metadata=metadata)
    uploader.upload_chunk()
    uploader.upload_chunk()
    assert uploader.offset == 10 * MiB
    upload_path = uploader.url.split("/tus/", 1)[1]

    # A dies while a PATCH is half-way (past a part it already sent): nothing of it counts.
    sock = open_patch(f"{a.url}/tus/{upload_path}", 10 * MiB, 10 * MiB)
    sock.sendall(data[10 * MiB:19 * MiB])
    time.sleep(1.0)
    kill_gateway(a.proc)
    sock.close()

    # tuspy, pointed at B with the same upload, asks where it stands and finishes there.
    # Its lock outlives it by TUS_LOCK_EXPIRY (2 s here): 423 until then, and tuspy retries.
    resumed = tus_client.TusClient(b.url + "/tus/").uploader(
        file_stream=io.BytesIO(data), chunk_size=4 * MiB, url=f"{b.url}/tus/{upload_path}",
        retries=10, retry_delay=0.5)
    assert resumed.offset == 10 * MiB
    resumed.upload()
    file_id = resumed.request.response_headers.get("upload-file-id")
    record = requests.get(f"{b.url}/files/{file_id}", timeout=30).json()
    assert record["sha256"] == sha256(data)
    assert requests.get(b.url + record["download_url"], timeout=60).content == data
    assert s3_bucket.uploads() == []


def test_an_interrupted_patch_keeps_what_arrived_for_the_other_replica(two_gateways):
    a, b = two_gateways
    data = text_bytes(12 * MiB, seed=32)
    tus_a, tus_b = Tus(a.url), Tus(b.url)
    upload_url = tus_a.new(len(data), {"filename": "cut.txt"})
    path = upload_url.split("/tus/", 1)[1]
    interrupted_patch(f"{a.url}/tus/{path}", 0, len(data), data[:9 * MiB + 123])
    offset = wait_stable_offset(tus_b, f"{b.url}/tus/{path}")
    assert 0 < offset <= 9 * MiB + 123
    response = tus_b.patch(f"{b.url}/tus/{path}", offset, data[offset:])
    assert response.status_code == 204, response.text
    record = tus_b.record(response.headers["Upload-File-Id"]).json()
    assert record["sha256"] == sha256(data)

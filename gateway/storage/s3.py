"""STORAGE=s3: files and thumbnails in an S3-compatible bucket (boto3).

Keys: ``<S3_PREFIX>files/<stored name>`` and ``<S3_PREFIX>thumbnails/<name>``.

Writing a file never holds it whole: its bytes are copied once, as they
arrive, into a part buffer of S3_PART_SIZE bytes, and each full buffer is
sent as one part of a multipart upload to the file's final key. Finishing is
``complete_multipart_upload`` (the object appears whole, at once: the S3 form
of the local rename); giving up is ``abort_multipart_upload`` (nothing
appears). A file smaller than one part never starts a multipart upload: one
``put_object`` at the end. A process killed mid-upload leaves an incomplete
multipart upload, invisible but billed: reconcile lists them and aborts the
ones older than ORPHAN_AGE.

One boto3 client per process (thread-safe, pooled connections: at least one
per gateway thread), with retries of throttling and dropped connections.
"""
from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import BinaryIO, Iterator
from urllib.parse import quote

from gateway.storage.base import NAME_RE, Entry, Stat, entry_kind

log = logging.getLogger("upload.gateway")

AREAS = ("files", "thumbnails")
# The tail of a tus upload: ".<stored name>.<offset its bytes reach>.part" (gateway/tus/s3.py).
TAIL_RE = re.compile(r"^\.(?P<name>[0-9a-f]{32}(\.[a-z0-9]{1,16})?)\.(?P<end>\d+)\.part$")
# Bytes per read of an object being passed on (downloads, thumbnails, hashing).
READ_CHUNK = 256 * 1024


class BucketUnavailable(SystemExit):
    """The bucket is missing or cannot be reached at start-up (one sentence, for the operator)."""


@dataclass
class S3Temp:
    """A file being written: its part buffer and the multipart upload it feeds
    (started only once a first part is full)."""
    key: str
    buffer: bytearray
    filled: int = 0
    upload_id: str | None = None
    parts: list[dict] = field(default_factory=list)
    done: bool = False


def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is boto3 failing to reach or use the bucket."""
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is a dependency
        return False
    return isinstance(exc, (BotoCoreError, ClientError))


def is_missing(exc: BaseException) -> bool:
    """Whether ``exc`` says the object or multipart upload is not there."""
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in (
        "404", "NoSuchKey", "NotFound", "NoSuchUpload")


def make_client(config: dict, endpoint_url: str | None = None):
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url if endpoint_url is not None else config["S3_ENDPOINT_URL"]
    style = config["S3_ADDRESSING_STYLE"] or ("path" if endpoint else "auto")
    credentials = {}
    if config["AWS_ACCESS_KEY_ID"]:
        credentials = {"aws_access_key_id": config["AWS_ACCESS_KEY_ID"],
                       "aws_secret_access_key": config["AWS_SECRET_ACCESS_KEY"]}
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint or None, region_name=config["AWS_REGION"], **credentials,
        config=Config(
            # A connection per gateway thread (and the thumbnailer's, the reapers'), never a wait for one.
            max_pool_connections=max(10, config["GATEWAY_THREADS"] + 4),
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5, read_timeout=60,
            s3={"addressing_style": style},
            signature_version="s3v4",  # presigned URLs too (SigV2 is gone from newer AWS regions)
            # Checksums only where S3 requires them: many S3-compatible servers refuse the
            # trailing CRC32 headers boto3 sends by default since 1.36.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ))


class S3Storage:
    local = False

    def __init__(self, client, bucket: str, prefix: str = "", part_size: int = 8 * 1024 * 1024,
                 presigned: bool = False, presigned_ttl: int = 300, presign_client=None):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.presigned = presigned
        self.presigned_ttl = presigned_ttl
        self.presign_client = presign_client or client
        # Since start: bytes copied into part buffers (each uploaded byte exactly once),
        # multipart uploads started, parts sent, multipart uploads aborted.
        self.copied = 0
        self.counts = Counter()
        self._copied_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: dict) -> "S3Storage":
        client = make_client(config)
        public = config["S3_PUBLIC_ENDPOINT_URL"]
        storage = cls(client, config["S3_BUCKET"], config["S3_PREFIX"], config["S3_PART_SIZE"],
                      config["S3_PRESIGNED_DOWNLOADS"], config["S3_PRESIGNED_TTL"],
                      presign_client=make_client(config, public) if public else None)
        storage.check()
        return storage

    def check(self) -> None:
        """The bucket must exist and answer (it is the operator's: never created here)."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = self.client.meta.endpoint_url
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise BucketUnavailable(
                    f"The S3 bucket {self.bucket!r} does not exist at {where}: create it (the gateway "
                    "never does) or fix S3_BUCKET / S3_ENDPOINT_URL.") from None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise BucketUnavailable(
                    f"The S3 bucket {self.bucket!r} at {where} refuses these credentials: check "
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy.") from None
            raise BucketUnavailable(f"The S3 bucket {self.bucket!r} at {where} answered {code or exc}: "
                                    "check S3_BUCKET and S3_ENDPOINT_URL.") from None
        except BotoCoreError as exc:
            raise BucketUnavailable(f"The S3 endpoint {where} cannot be reached ({exc}): check "
                                    "S3_ENDPOINT_URL and that the server is up.") from None

    # --- names ---

    def area_prefix(self, area: str) -> str:
        if area not in AREAS:
            raise ValueError(f"not an area: {area!r}")
        return f"{self.prefix}{area}/"

    def key(self, area: str, name: str) -> str | None:
        """The key of a stored name, or None for anything that is not one of our names."""
        if not NAME_RE.fullmatch(name):
            return None
        return self.area_prefix(area) + name

    def _key(self, area: str, name: str) -> str:
        key = self.key(area, name)
        if key is None:
            raise ValueError(f"not a stored name: {name!r}")
        return key

    # --- writing ---

    def create_temp(self, area: str, name: str) -> S3Temp:
        # The buffer grows with the first part (a small file never holds a whole part's memory).
        return S3Temp(self._key(area, name), bytearray())

    def write_temp(self, temp: S3Temp, data) -> None:
        """Copy ``data`` into the part buffer (its one copy), sending each part as it fills."""
        with self._copied_lock:
            self.copied += len(data)
        fill_parts(temp, data, self.part_size, lambda: self._send_part(temp))

    def read_temp(self, temp: S3Temp):
        """A function giving the temp's bytes so far, while all of them are still in its
        part buffer (a file smaller than S3_PART_SIZE); None once parts were sent (the
        parts of an unfinished multipart upload cannot be read back)."""
        if temp.upload_id is not None:
            return None
        return lambda: iter((bytes(memoryview(temp.buffer)[:temp.filled]),))

    def _send_part(self, temp: S3Temp) -> None:
        if temp.upload_id is None:
            temp.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=temp.key)["UploadId"]
            self._count("multipart")
        number = len(temp.parts) + 1
        body = temp.buffer if temp.filled == len(temp.buffer) else bytes(memoryview(temp.buffer)[:temp.filled])
        reply = self.client.upload_part(Bucket=self.bucket, Key=temp.key, UploadId=temp.upload_id,
                                        PartNumber=number, Body=body)
        temp.parts.append({"PartNumber": number, "ETag": reply["ETag"]})
        self._count("parts")
        temp.filled = 0

    def _count(self, what: str) -> None:
        with self._copied_lock:
            self.counts[what] += 1

    def commit(self, temp: S3Temp) -> None:
        if temp.upload_id is None:
            # Smaller than one part: a single PUT. The buffer is cut to its bytes in place (no copy).
            del temp.buffer[temp.filled:]
            self.client.put_object(Bucket=self.bucket, Key=temp.key, Body=temp.buffer)
        else:
            if temp.filled or not temp.parts:
                self._send_part(temp)  # the last part may be smaller than the minimum
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=temp.key, UploadId=temp.upload_id,
                                                  MultipartUpload={"Parts": temp.parts})
        temp.done = True
        temp.buffer = bytearray()

    def discard(self, temp: S3Temp) -> None:
        temp.buffer = bytearray()
        if temp.done or temp.upload_id is None:
            return
        temp.done = True
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=temp.key, UploadId=temp.upload_id)
            self._count("aborted")
        except Exception as exc:  # reconcile aborts it later
            log.warning("could not abort the multipart upload of %s (reconcile will): %s", temp.key, exc)

    def write(self, area: str, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(area, name), Body=data)

    # --- reading ---

    def stat(self, area: str, name: str) -> Stat | None:
        key = self.key(area, name)
        if key is None:
            return None
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
        return Stat(head["ContentLength"], head["LastModified"].timestamp())

    def exists(self, area: str, name: str) -> bool:
        return self.stat(area, name) is not None

    def open(self, area: str, name: str) -> BinaryIO | None:
        """The object's body, streamed (a file-like object: read(n), close())."""
        key = self.key(area, name)
        if key is None:
            return None
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except Exception as exc:
            if is_missing(exc):
                return None
            raise

    def read_range(self, area: str, name: str, start: int, length: int) -> Iterator[bytes]:
        """``length`` bytes from ``start``, in chunks, fetched when first iterated."""
        if length <= 0:
            return
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(area, name),
                                      Range=f"bytes={start}-{start + length - 1}")["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def presigned_url(self, area: str, name: str, mimetype: str, download_name: str, attachment: bool) -> str:
        params = {"Bucket": self.bucket, "Key": self._key(area, name), "ResponseContentType": mimetype,
                  "ResponseContentDisposition": content_disposition(download_name, attachment),
                  "ResponseCacheControl": "private, no-cache"}
        return self.presign_client.generate_presigned_url("get_object", Params=params,
                                                          ExpiresIn=self.presigned_ttl)

    # --- removing ---

    def delete(self, area: str, name: str) -> None:
        key = self.key(area, name)
        if key is not None:
            self.client.delete_object(Bucket=self.bucket, Key=key)  # deleting nothing is fine in S3

    def entries(self, area: str) -> Iterator[Entry]:
        """The area's objects (stored names; anything else is "other"), then its
        incomplete multipart uploads as "temp" (path: (key, upload id)), dated by
        their newest part (an upload still receiving parts is not left behind)."""
        prefix = self.area_prefix(area)
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                filename = obj["Key"][len(prefix):]
                kind = entry_kind(filename)
                if (tail := TAIL_RE.fullmatch(filename)) is not None:
                    # Bytes past the last full part of a tus upload (gateway/tus/s3.py).
                    kind, filename = "partial", f".{tail['name']}.part"
                yield Entry(kind, filename, obj["Key"], obj["Size"], obj["LastModified"].timestamp())
        for upload in self.multipart_uploads(prefix):
            key, upload_id = upload["Key"], upload["UploadId"]
            yield Entry("temp", key[len(prefix):], (key, upload_id), 0, self._last_activity(upload))

    def multipart_uploads(self, prefix: str) -> Iterator[dict]:
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                 Prefix=prefix):
            yield from page.get("Uploads", [])

    def _last_activity(self, upload: dict) -> float:
        newest = upload["Initiated"]
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            for page in pages:
                for part in page.get("Parts", []):
                    newest = max(newest, part["LastModified"])
        except Exception as exc:
            if not is_missing(exc):
                raise
            return datetime.now(timezone.utc).timestamp()  # finished or aborted meanwhile: not ours to judge
        return newest.timestamp()

    def remove_entry(self, entry: Entry) -> None:
        if isinstance(entry.path, tuple):
            key, upload_id = entry.path
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception as exc:
                if not is_missing(exc):
                    raise
        else:
            self.client.delete_object(Bucket=self.bucket, Key=entry.path)


def fill_parts(holder, data, part_size: int, send) -> None:
    """Copy ``data`` into ``holder.buffer`` from ``holder.filled`` on; each time
    the buffer holds a whole part, ``send()`` it (which sets ``filled`` back to 0)."""
    view = memoryview(data)
    while view:
        take = min(len(view), part_size - holder.filled)
        fill(holder.buffer, holder.filled, view[:take])
        holder.filled += take
        view = view[take:]
        if holder.filled == part_size:
            send()


def fill(buffer: bytearray, at: int, data) -> None:
    """Copy ``data`` into ``buffer`` at ``at``: appended while the buffer is
    still growing to its first part's size, written over once it has."""
    if at == len(buffer):
        buffer += data
    else:
        buffer[at:at + len(data)] = data


def content_disposition(download_name: str, attachment: bool) -> str:
    """Content-Disposition as werkzeug's send_file writes it (an ASCII name, and
    the real one in filename* when it is not ASCII)."""
    from werkzeug.datastructures import Headers

    value = "attachment" if attachment else "inline"
    try:
        download_name.encode("ascii")
        names = {"filename": download_name}
    except UnicodeEncodeError:
        simple = unicodedata.normalize("NFKD", download_name).encode("ascii", "ignore").decode("ascii")
        names = {"filename": simple, "filename*": f"UTF-8''{quote(download_name, safe='!#$&+-.^_`|~')}"}
    headers = Headers()
    headers.set("Content-Disposition", value, **names)
    return headers["Content-Disposition"]

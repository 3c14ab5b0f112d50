"""tus uploads on STORAGE=s3: any replica continues any upload.

The bytes live in the bucket, as tusd's s3store keeps them:

- an S3 multipart upload to the file's final key (``files/<stored name>``)
  collects the parts, every one S3_PART_SIZE bytes (part n holds bytes
  [(n-1)*P, n*P) of the upload), started when the first part is full, its id
  in the upload's row (``multipart_id``);
- what is past the last full part (less than a part, which S3 will not take
  unless it is the last) is an object of its own, ``files/.<name>.<end>.part``,
  end being the offset its bytes reach.

The database's offset is the truth: a request that dies after sending parts
but before saving its offset leaves parts and a tail that the next request
overwrites or ignores. Nothing S3 holds is fenced by the lock, so what a
holder that lost it may still send must be harmless: a part number is a
fixed range of bytes of a fixed size, and a tail is named after the offset it
reaches, so the tail a saved offset names can only ever be written with
exactly those bytes (named after where it starts, a late holder could cut it
short under the offset that needs it, and the upload could never go on).
Stale tails go once the new offset is saved.

Finishing is ``complete_multipart_upload`` (the file appears whole at its
final key), then the ingest pipeline judges it there; a refused file is
deleted. The sha256 is the running one when this replica saw every PATCH,
else the object is read back and hashed.

The lock is a row lock in the database, the same on SQLite and PostgreSQL:
a conditional UPDATE of the upload's ``lock_owner`` (free, or its holder's
``lock_expires_at`` passed). A thread of the holder renews it every third of
TUS_LOCK_EXPIRY, so a replica that dies holding it blocks the upload for at
most that long (423 meanwhile, as for any held lock); every save of the
offset is fenced by it (a holder frozen past its expiry and overtaken cannot
move the offset any more).
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from gateway.metadata.tables import files, tus_uploads
from gateway.storage.s3 import is_missing
from gateway.tus.s3_writer import S3Writer
from gateway.tus.store import BytesGone, LockLost, TusStore, TusUpload, WriteLocked

log = logging.getLogger("upload.tus")


class S3TusStore(TusStore):
    def __init__(self, engine: sa.Engine, storage, ttl: float, lock_ttl: float = 15.0):
        super().__init__(engine, storage, ttl)
        self.s3 = storage
        self.client, self.bucket = storage.client, storage.bucket
        self.part_size = storage.part_size
        self.lock_ttl = timedelta(seconds=lock_ttl)
        self._me = f"{socket.gethostname()[:30]}:{os.getpid()}"

    # --- keys ---

    def key(self, upload: TusUpload) -> str:
        return self.s3._key("files", upload.filename)

    def tail_key(self, upload: TusUpload, end: int) -> str:
        """The tail of the upload's bytes up to offset ``end`` (from the last full part before it)."""
        return f"{self.s3.area_prefix('files')}.{upload.filename}.{end}.part"

    def path(self, upload: TusUpload):
        raise TypeError("an upload kept in S3 has no local path")

    # --- lifecycle ---

    def add(self, upload: TusUpload) -> None:
        """Only the row: the multipart upload starts with the first full part."""
        with self.engine.begin() as conn:
            conn.execute(tus_uploads.insert().values(**{f: getattr(upload, f) for f in upload.__dataclass_fields__}))

    def drop_bytes(self, upload: TusUpload) -> None:
        """Abort its multipart upload, delete its tails, and the object a finish
        placed at its final key unless a stored file owns that (it was accepted)."""
        multipart_id = self._multipart_id(upload.id)
        if multipart_id:
            self._abort(self.key(upload), multipart_id)
        prefix = f"{self.s3.area_prefix('files')}.{upload.filename}."
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])
        with self.engine.connect() as conn:
            owned = conn.execute(sa.select(files.c.id).where(files.c.filename == upload.filename)).first()
        if owned is None:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(upload))
        with self.engine.begin() as conn:
            conn.execute(tus_uploads.update().where(tus_uploads.c.id == upload.id).values(multipart_id=None))

    def _abort(self, key: str, multipart_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart_id)
        except Exception as exc:
            if not is_missing(exc):
                raise

    def _multipart_id(self, upload_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(tus_uploads.c.multipart_id)
                                .where(tus_uploads.c.id == upload_id)).scalar()

    # --- the lock ---

    def _try_lock(self, upload_id: str, owner: str) -> bool:
        now = datetime.now(timezone.utc)
        c = tus_uploads.c
        query = (tus_uploads.update()
                 .where(c.id == upload_id, sa.or_(c.lock_owner.is_(None), c.lock_expires_at < now))
                 .values(lock_owner=owner, lock_expires_at=now + self.lock_ttl))
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount == 1

    def renew(self, upload_id: str, owner: str) -> None:
        query = (tus_uploads.update()
                 .where(tus_uploads.c.id == upload_id, tus_uploads.c.lock_owner == owner)
                 .values(lock_expires_at=datetime.now(timezone.utc) + self.lock_ttl))
        with self.engine.begin() as conn:
            if conn.execute(query).rowcount == 0:
                raise LockLost()

    def _heartbeat(self, upload_id: str, owner: str, stop: threading.Event) -> None:
        while not stop.wait(self.lock_ttl.total_seconds() / 3):
            try:
                self.renew(upload_id, owner)
            except LockLost:
                return  # taken over; the holder's next save finds out (it is fenced)
            except Exception:
                log.warning("could not renew the lock of tus upload %s", upload_id, exc_info=True)

    def _unlock(self, upload_id: str, owner: str) -> None:
        query = (tus_uploads.update()
                 .where(tus_uploads.c.id == upload_id, tus_uploads.c.lock_owner == owner)
                 .values(lock_owner=None, lock_expires_at=None))
        with self.engine.begin() as conn:
            conn.execute(query)

    @contextmanager
    def writing(self, upload: TusUpload, wait: float):
        """The upload's lock (any replica's request waits for it up to ``wait``
        seconds, then WriteLocked); yields an S3Writer. BytesGone when the upload
        ended or finished meanwhile, or was forgotten."""
        owner = f"{self._me}:{secrets.token_hex(6)}"
        deadline = time.monotonic() + wait
        while not self._try_lock(upload.id, owner):
            if self.get(upload.id) is None:
                raise BytesGone()
            if time.monotonic() >= deadline:
                raise WriteLocked()
            time.sleep(0.05)
        # Renewed while held, so it expires soon after a holder that died (lock_ttl), never under a live one.
        stop = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(upload.id, owner, stop), daemon=True,
                                     name="tus-lock")
        heartbeat.start()
        try:
            fresh = self.get(upload.id)
            if fresh is None or fresh.state != "uploading":
                raise BytesGone()
            writer = S3Writer(self, fresh, owner)
            writer.heartbeat = stop
            yield writer
        finally:
            stop.set()
            heartbeat.join()
            try:
                self._unlock(upload.id, owner)
            except Exception:  # it expires by itself
                log.warning("could not release the lock of tus upload %s", upload.id, exc_info=True)

    # --- reading and finishing ---

    def read(self, upload: TusUpload):
        """A finished upload's bytes (a partial one, to join): completed into its object first."""
        self.finalize(upload)
        body = self.s3.open("files", upload.filename)
        if body is None:
            raise BytesGone()
        with body:
            yield from body.iter_chunks(1024 * 1024)

    def finalize(self, upload: TusUpload) -> None:
        """Complete the multipart upload of an upload whose bytes have all
        arrived: the object appears at its final key. Done already (an earlier
        try failed after it): the object is checked instead."""
        multipart_id = self._multipart_id(upload.id)
        key = self.key(upload)
        if multipart_id is None:
            stat = self.s3.stat("files", upload.filename)
            if stat is None and upload.length == 0:
                self.s3.write("files", upload.filename, b"")  # complete on creation: no part ever came
                return
            if stat is None or stat.size != upload.length:
                raise BytesGone()
            return
        count = max(1, -(-upload.length // self.part_size))
        try:
            parts = {}
            for page in self.client.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key,
                                                                         UploadId=multipart_id):
                for part in page.get("Parts", []):
                    parts[part["PartNumber"]] = part
            chosen = []
            for number in range(1, count + 1):
                part = parts.get(number)
                expected = min(self.part_size, upload.length - (number - 1) * self.part_size)
                if part is None or part["Size"] != expected:
                    raise BytesGone()
                chosen.append({"PartNumber": number, "ETag": part["ETag"]})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart_id,
                                                  MultipartUpload={"Parts": chosen})
        except Exception as exc:
            if not is_missing(exc):
                raise
            # Completed already, by a request that died (or lost S3's answer) before the row
            # said so, or by another join of this partial upload: the object must be there whole.
            stat = self.s3.stat("files", upload.filename)
            if stat is None or stat.size != upload.length:
                raise BytesGone() from None
        with self.engine.begin() as conn:
            conn.execute(tus_uploads.update().where(tus_uploads.c.id == upload.id).values(multipart_id=None))

    def adopt(self, ingest, upload: TusUpload, expires_at, sha256: str | None, verdict=None):
        self.finalize(upload)
        return ingest.adopt_stored(upload.id, upload.filename, upload.original_name, upload.declared_type,
                                   expires_at, upload.owner_id, sha256=sha256, verdict=verdict)

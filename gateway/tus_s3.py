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

from gateway.s3_storage import fill
from gateway.tus_store import BytesGone, LockLost, TusStore, TusUpload, WriteLocked, tus_uploads

log = logging.getLogger("upload.tus")



def _files_table():
    from gateway.db import files

    return files


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
        files = _files_table()
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
            from gateway.s3_storage import _missing

            if not _missing(exc):
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
        from gateway.s3_storage import _missing

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
            if not _missing(exc):
                raise
            # Completed already, by a request that died (or lost S3's answer) before the row
            # said so, or by another join of this partial upload: the object must be there whole.
            stat = self.s3.stat("files", upload.filename)
            if stat is None or stat.size != upload.length:
                raise BytesGone() from None
        with self.engine.begin() as conn:
            conn.execute(tus_uploads.update().where(tus_uploads.c.id == upload.id).values(multipart_id=None))

    def adopt(self, ingest, upload: TusUpload, expires_at, sha256: str | None):
        self.finalize(upload)
        return ingest.adopt_stored(upload.id, upload.filename, upload.original_name, upload.declared_type,
                                   expires_at, upload.owner_id, sha256=sha256)


class S3Writer:
    """One request's writing of an upload held under its lock: the bytes from
    the last full part on are in ``buffer``; each full buffer is sent as its part."""

    def __init__(self, store: S3TusStore, upload: TusUpload, owner: str):
        self.store = store
        self.upload = upload
        self.lock_owner = owner
        self.part_size = store.part_size
        self.buffer = bytearray()
        self.filled = 0
        self.base = 0          # full parts before the buffer
        self.begun = 0         # the saved offset this request started from
        self.old_tail: int | None = None  # the end of the tail object that offset names
        self.new_tail: int | None = None
        self.finished = False  # every byte, the last part too, had left before this request
        self.heartbeat: threading.Event | None = None  # set: the lock is no longer renewed

    def begin(self, start: int) -> None:
        self.buffer = bytearray()  # grows to a part as bytes come
        self.base, tail = divmod(start, self.part_size)
        self.begun = start
        self.old_tail = start if tail else None
        self.filled = 0
        if tail:
            try:
                body = self.store.client.get_object(Bucket=self.store.bucket,
                                                    Key=self.store.tail_key(self.upload, start))["Body"]
            except Exception as exc:
                from gateway.s3_storage import _missing

                if not (_missing(exc) and start == self.upload.length):
                    raise
                # All bytes arrived and the last part left (its tail goes only once the saved
                # offset no longer needs it), but finishing failed: a retried last PATCH adds nothing.
                self.old_tail, self.finished = None, True
                return
            with body:
                for chunk in body.iter_chunks(1024 * 1024):
                    self.buffer += chunk
            if len(self.buffer) != tail:
                raise BytesGone()
            self.filled = tail

    def write(self, data) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.part_size - self.filled)
            fill(self.buffer, self.filled, view[:take])
            self.filled += take
            view = view[take:]
            if self.filled == self.part_size:
                self._send_part(self.buffer)
                self.base += 1
                self.filled = 0

    def _send_part(self, body) -> None:
        store = self.store
        c = tus_uploads.c
        with store.engine.connect() as conn:
            row = conn.execute(sa.select(c.multipart_id, c.lock_owner).where(c.id == self.upload.id)).first()
        if row is None or row.lock_owner != self.lock_owner:
            # Overtaken (this holder stalled past its expiry): another request writes these parts now.
            # Checked before every part, so a late holder sends at most the one in flight.
            raise LockLost()
        multipart_id = row.multipart_id
        if multipart_id is None:
            multipart_id = store.client.create_multipart_upload(Bucket=store.bucket,
                                                                Key=store.key(self.upload))["UploadId"]
            query = (tus_uploads.update()
                     .where(tus_uploads.c.id == self.upload.id, tus_uploads.c.lock_owner == self.lock_owner)
                     .values(multipart_id=multipart_id))
            with store.engine.begin() as conn:
                if conn.execute(query).rowcount == 0:
                    store._abort(store.key(self.upload), multipart_id)
                    raise LockLost()
        store.client.upload_part(Bucket=store.bucket, Key=store.key(self.upload), UploadId=multipart_id,
                                 PartNumber=self.base + 1, Body=body)

    def head(self, size: int) -> bytes | None:
        """The first ``size`` bytes, while they are still in the buffer (before part 1 leaves)."""
        if self.base == 0 and self.filled >= size:
            return bytes(memoryview(self.buffer)[:size])
        return None

    def rollback(self) -> None:
        """Nothing to undo: parts sent past the saved offset are overwritten by the
        next request, and the tail the saved offset refers to was not touched."""

    def sync(self, last: bool = False) -> None:
        """Make what arrived durable before the offset moves: the last part of
        a finished upload, else the tail (or, a tail of at least S3's minimum
        that is not the end, nothing: it waits in a tail object like any other)."""
        # Nothing follows in this request: the buffer is cut to its bytes in place and sent
        # itself (a copy would hold up to a second part's worth of memory per request).
        del self.buffer[self.filled:]
        if last:
            if not self.finished and (self.filled or self.base == 0):
                self._send_part(self.buffer)
            self.new_tail = None
        elif self.filled:
            end = self.size()
            if end != self.begun:  # else the tail the saved offset names holds these very bytes
                self.store.client.put_object(Bucket=self.store.bucket, Key=self.store.tail_key(self.upload, end),
                                             Body=self.buffer)
            self.new_tail = end
        else:
            self.new_tail = None

    def saved(self) -> None:
        """The new offset is saved: the tail it no longer needs goes."""
        if self.old_tail is not None and self.old_tail != self.new_tail:
            try:
                self.store.client.delete_object(Bucket=self.store.bucket,
                                                Key=self.store.tail_key(self.upload, self.old_tail))
            except Exception:  # a stale tail is harmless; drop_bytes removes it at the end
                log.warning("could not delete a stale tail of tus upload %s", self.upload.id, exc_info=True)
        self.buffer = bytearray()

    def size(self) -> int:
        return self.base * self.part_size + self.filled

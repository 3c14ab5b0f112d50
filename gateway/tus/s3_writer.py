"""One request's writing of a tus upload on STORAGE=s3, under the upload's
lock (gateway/tus/s3.py says how the bytes are laid out in the bucket)."""
from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import sqlalchemy as sa

from gateway.metadata.tables import tus_uploads
from gateway.storage.s3 import fill_parts, is_missing
from gateway.tus.store import BytesGone, LockLost, TusUpload

log = logging.getLogger("upload.tus")


class PartStore(Protocol):
    """What a writer needs of its store: S3TusStore (gateway/tus/s3.py), which
    makes the writers, so this module does not import it back."""

    client: Any  # boto3's S3 client
    bucket: str
    engine: sa.Engine
    part_size: int

    def key(self, upload: TusUpload) -> str: ...

    def tail_key(self, upload: TusUpload, end: int) -> str: ...

    def _abort(self, key: str, multipart_id: str) -> None: ...


class S3Writer:
    """One request's writing of an upload held under its lock: the bytes from
    the last full part on are in ``buffer``; each full buffer is sent as its part."""

    def __init__(self, store: PartStore, upload: TusUpload, owner: str):
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
                if not (is_missing(exc) and start == self.upload.length):
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
        fill_parts(self, data, self.part_size, self._send_full_part)

    def _send_full_part(self) -> None:
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

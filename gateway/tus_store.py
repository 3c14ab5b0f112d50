"""Resumable uploads in progress: their state in the database, their bytes in
a hidden file beside the final place, and a lock that holds across threads,
gunicorn workers and processes (flock on that file)."""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from gateway.db import UTCDateTime, metadata, utc
from gateway.storage import LocalStorage

tus_uploads = sa.Table(
    "tus_uploads",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    # The stored name the file will have (random id plus the validated extension).
    sa.Column("filename", sa.String(64), nullable=False),
    # Null while the client defers it (creation-defer-length).
    sa.Column("length", sa.BigInteger, nullable=True),
    # Only ever moved after the bytes up to it are fsynced.
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("original_name", sa.String(255), nullable=False),
    sa.Column("declared_type", sa.String(255), nullable=False),
    sa.Column("expires_in", sa.Integer, nullable=True),
    # Null, "partial" or "final;<url> <url>..."
    sa.Column("concat", sa.Text, nullable=True),
    # uploading | complete | refused | terminated | expired
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("head_checked", sa.Boolean, nullable=False),
    sa.Column("file_id", sa.String(32), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Unfinished: when it will be reaped. Finished: when it will be forgotten.
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    # Who created it; only they (or an admin) may see and write it. Null with AUTH=off.
    sa.Column("owner_id", sa.String(32), nullable=True),
    sa.Index("ix_tus_uploads_expires_at", "expires_at"),
)


@dataclass
class TusUpload:
    id: str
    filename: str
    length: int | None
    offset: int
    metadata: str
    original_name: str
    declared_type: str
    expires_in: int | None
    concat: str | None
    state: str
    head_checked: bool
    file_id: str | None
    error: str | None
    created_at: datetime
    expires_at: datetime
    owner_id: str | None = None

    @property
    def is_partial(self) -> bool:
        return self.concat == "partial"

    @property
    def is_final(self) -> bool:
        return bool(self.concat and self.concat.startswith("final;"))

    @property
    def finished_bytes(self) -> bool:
        return self.length is not None and self.offset == self.length


class BytesGone(Exception):
    """The upload's bytes are no longer there (it ended while a request waited)."""


class WriteLocked(Exception):
    """Another request is writing this upload."""


class TusStore:
    def __init__(self, engine: sa.Engine, storage: LocalStorage, ttl: float):
        self.engine = engine
        self.storage = storage
        self.ttl = timedelta(seconds=ttl)

    def expiry(self) -> datetime:
        return datetime.now(timezone.utc) + self.ttl

    def add(self, upload: TusUpload) -> None:
        """Record a new upload and create its (empty) file: the only place that
        creates one, so a request for an ended upload never brings it back."""
        path = self.path(upload)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        try:
            with self.engine.begin() as conn:
                conn.execute(tus_uploads.insert().values(**asdict(upload)))
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def get(self, upload_id: str) -> TusUpload | None:
        with self.engine.connect() as conn:
            row = conn.execute(tus_uploads.select().where(tus_uploads.c.id == upload_id)).mappings().first()
        if row is None:
            return None
        data = dict(row)
        data["created_at"], data["expires_at"] = utc(data["created_at"]), utc(data["expires_at"])
        return TusUpload(**data)

    def save(self, upload: TusUpload, *names: str) -> None:
        values = {name: getattr(upload, name) for name in names} if names else {
            f.name: getattr(upload, f.name) for f in fields(upload) if f.name != "id"}
        with self.engine.begin() as conn:
            conn.execute(tus_uploads.update().where(tus_uploads.c.id == upload.id).values(**values))

    def forget(self, upload_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(tus_uploads.delete().where(tus_uploads.c.id == upload_id))

    def path(self, upload: TusUpload) -> Path:
        return self.storage.partial_path("files", upload.filename)

    def drop_bytes(self, upload: TusUpload) -> None:
        self.path(upload).unlink(missing_ok=True)

    @contextmanager
    def writing(self, upload: TusUpload, wait: float):
        """Exclusive access to the upload's bytes: yields its file, opened for
        writing, once no other request (in any process) holds it. Raises
        BytesGone when its bytes are gone (ended or finished meanwhile)."""
        try:
            fd = os.open(self.path(upload), os.O_RDWR)
        except FileNotFoundError:
            raise BytesGone() from None
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise WriteLocked() from None
                    time.sleep(0.05)
            if os.fstat(fd).st_nlink == 0:
                raise BytesGone()  # removed or placed while this request waited
            with os.fdopen(os.dup(fd), "r+b", buffering=0) as handle:
                yield handle
        finally:
            os.close(fd)  # also releases the lock

    def unfinished_filenames(self) -> set[str]:
        """The stored names of uploads that still have bytes collecting (for reconcile)."""
        query = sa.select(tus_uploads.c.filename).where(tus_uploads.c.state == "uploading")
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def reserved(self, owner: str, except_id: str | None = None) -> tuple[int, int]:
        """(files, bytes) a user's unfinished uploads hold: room a quota keeps
        for them, so open uploads cannot pass it together. Bytes are the length
        announced (or, deferred, what has arrived); partial uploads count bytes
        but no file (their final upload will be the file)."""
        is_partial = tus_uploads.c.concat == "partial"
        query = sa.select(
            sa.func.coalesce(sa.func.sum(sa.case((is_partial, 0), else_=1)), 0),
            sa.func.coalesce(sa.func.sum(sa.func.coalesce(tus_uploads.c.length, tus_uploads.c.offset)), 0),
        ).where(tus_uploads.c.owner_id == owner, tus_uploads.c.state == "uploading")
        if except_id is not None:
            query = query.where(tus_uploads.c.id != except_id)
        with self.engine.connect() as conn:
            count, size = conn.execute(query).one()
        return int(count), int(size)

    def due(self, limit: int = 100) -> list[TusUpload]:
        """Uploads whose time is up: unfinished ones to reap, finished ones to forget."""
        now = datetime.now(timezone.utc)
        query = tus_uploads.select().where(tus_uploads.c.expires_at < now).limit(limit)
        with self.engine.connect() as conn:
            ids = [row.id for row in conn.execute(query)]
        return [u for u in (self.get(i) for i in ids) if u is not None]

    def reap(self) -> int:
        """Remove the bytes of unfinished uploads whose time is up (they then
        answer 410), and forget ended uploads after the same time (404)."""
        done = 0
        for upload in self.due():
            if upload.state != "uploading":
                self.drop_bytes(upload)
                self.forget(upload.id)
                done += 1
                continue
            try:
                with self.writing(upload, wait=0):
                    self.drop_bytes(upload)
            except WriteLocked:
                continue  # a request is writing it right now: not abandoned after all
            except BytesGone:
                pass
            upload.state, upload.expires_at = "expired", self.expiry()
            self.save(upload, "state", "expires_at")
            done += 1
        return done

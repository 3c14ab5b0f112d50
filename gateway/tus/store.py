"""Resumable uploads in progress: their state in the database, their bytes in
a hidden file beside the final place, and a lock that holds across threads,
gunicorn workers and processes (flock on that file).

With STORAGE=s3 the bytes and the lock live elsewhere (gateway/tus/s3.py: an
S3 multipart upload, a lock in the database); both stores hand the write path
the same kind of writer (``writing()``)."""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa

from gateway.metadata.tables import tus_uploads, utc
from gateway.storage.local import LocalStorage
from protos.errors import InsufficientStorage, out_of_space_as_error
from protos.streaming import write_all


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


class LockLost(Exception):
    """The lock expired while its holder still worked (it hung): another may write now."""


class WriteLocked(Exception):
    """Another request is writing this upload."""


class FileWriter:
    """An upload's bytes in a local file, for one request that holds its lock:
    ``begin(offset)``, ``write()`` pieces, then ``sync()`` before the offset
    moves, or ``rollback()`` to where it began."""

    lock_owner = None  # the flock fences writers; no database fence needed

    def __init__(self, handle, disk=None):
        self.handle = handle
        self.disk = disk
        self.start = 0

    def begin(self, start: int) -> None:
        self.start = start
        self.handle.truncate(start)  # drop anything a crashed request wrote past the stored offset
        self.handle.seek(start)

    def write(self, data) -> None:
        try:
            if self.disk is not None:
                self.disk.write(self.handle, data)
            else:
                with out_of_space_as_error():
                    write_all(self.handle, data)
        except InsufficientStorage:
            # The offset stays where the last fsync left it, and the bytes of this
            # PATCH give their room back: the client resumes once there is space.
            self.rollback()
            raise

    def head(self, size: int) -> bytes | None:
        return os.pread(self.handle.fileno(), size, 0)

    def rollback(self) -> None:
        self.handle.truncate(self.start)

    def sync(self, last: bool = False) -> None:
        try:
            with out_of_space_as_error():
                os.fsync(self.handle.fileno())
        except InsufficientStorage:
            self.rollback()
            raise

    def saved(self) -> None:
        """The new offset is in the database."""

    def size(self) -> int:
        return os.fstat(self.handle.fileno()).st_size


class TusStore:
    def __init__(self, engine: sa.Engine, storage: LocalStorage, ttl: float, disk=None):
        self.engine = engine
        self.storage = storage
        self.ttl = timedelta(seconds=ttl)
        self.disk = disk  # ingest's DataDisk: every byte or an error, DISK_RESERVE kept free

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
        return None if row is None else _upload(row)

    def save(self, upload: TusUpload, *names: str, fence: str | None = None) -> None:
        """Write these fields of the upload; with ``fence`` (a lock owner) only while
        that owner still holds its lock, else LockLost."""
        values = {name: getattr(upload, name) for name in names} if names else {
            f.name: getattr(upload, f.name) for f in fields(upload) if f.name != "id"}
        query = tus_uploads.update().where(tus_uploads.c.id == upload.id).values(**values)
        if fence is not None:
            query = query.where(tus_uploads.c.lock_owner == fence)
        with self.engine.begin() as conn:
            if conn.execute(query).rowcount == 0 and fence is not None:
                raise LockLost()

    def move(self, upload_ids: list[str], from_state: str, to_state: str) -> bool:
        """Move every one of these uploads from ``from_state`` to ``to_state`` (their
        time starting anew), all or none: False, and nothing moved, when one was not
        in ``from_state``. One transaction, so of two requests moving the same upload
        only one can; rows in id order, so two of them never wait on each other."""
        c = tus_uploads.c
        with self.engine.connect() as conn, conn.begin() as transaction:
            for upload_id in sorted(upload_ids):
                query = (tus_uploads.update().where(c.id == upload_id, c.state == from_state)
                         .values(state=to_state, expires_at=self.expiry()))
                if conn.execute(query).rowcount != 1:
                    transaction.rollback()
                    return False
        return True

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
                yield FileWriter(handle, self.disk)
        finally:
            os.close(fd)  # also releases the lock

    def read(self, upload: TusUpload):
        """The bytes of an upload whose bytes have all arrived (a partial one, to join), in
        pieces; BytesGone if they are not there (it ended meanwhile)."""
        try:
            source = open(self.path(upload), "rb")
        except FileNotFoundError:
            raise BytesGone() from None
        with source:
            while chunk := source.read(1024 * 1024):
                yield chunk

    def adopt(self, ingest, upload: TusUpload, expires_at, sha256: str | None, verdict=None):
        """Hand a finished upload's bytes to the ingest pipeline (raises what it raises);
        ``verdict``: the one its Validate stream gave, if it had one."""
        return ingest.adopt(upload.id, self.path(upload), upload.original_name, upload.declared_type,
                            expires_at, upload.owner_id, sha256=sha256, verdict=verdict)

    def unfinished_filenames(self) -> set[str]:
        """The stored names of uploads that still have bytes collecting or being
        joined into a final upload (for reconcile)."""
        query = sa.select(tus_uploads.c.filename).where(tus_uploads.c.state.in_(("uploading", "joining")))
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def reserved(self, owner: str, except_id: str | None = None) -> tuple[int, int]:
        """(files, bytes) a user's unfinished uploads hold: room a quota keeps
        for them, so open uploads cannot pass it together. Bytes are the length
        announced (or, deferred, what has arrived); partial uploads count bytes
        but no file (their final upload will be the file). A partial upload
        taken by a final upload ("joining") counts no more: the final counts
        its whole length."""
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

    def due(self, limit: int = 100, after: tuple[datetime, str] | None = None,
            at: datetime | None = None) -> list[TusUpload]:
        """Uploads whose time was up at ``at`` (now): unfinished ones to reap, ended
        ones to forget; in (expires_at, id) order, ``after`` continuing past a previous batch."""
        c = tus_uploads.c
        query = (tus_uploads.select().where(c.expires_at < (at or datetime.now(timezone.utc)))
                 .order_by(c.expires_at, c.id).limit(limit))
        if after is not None:
            stamp, upload_id = after
            query = query.where(sa.or_(c.expires_at > stamp, sa.and_(c.expires_at == stamp, c.id > upload_id)))
        with self.engine.connect() as conn:
            return [_upload(row) for row in conn.execute(query).mappings()]

    def reap(self, batch: int = 100) -> int:
        """Remove the bytes of unfinished uploads whose time is up (they then
        answer 410), and forget ended uploads after the same time (404).

        A pass goes on, a batch at a time, until nothing that was due when it
        began is left: one user may create uploads faster than any fixed number
        per pass would remove them. It moves past each batch, so an upload that
        is being written (its lock is held) waits for the next pass without
        holding the pass up, and uploads whose time comes during the pass are
        left to the next, so a pass always ends."""
        done, after, at = 0, None, datetime.now(timezone.utc)
        while True:
            uploads = self.due(batch, after, at)
            if len(uploads) == batch:
                after = (uploads[-1].expires_at, uploads[-1].id)  # before _reap gives it a new time
            done += sum(self._reap(upload) for upload in uploads)
            if len(uploads) < batch:
                return done

    def _reap(self, upload: TusUpload) -> bool:
        if upload.state != "uploading":
            self.drop_bytes(upload)
            self.forget(upload.id)
            return True
        try:
            with self.writing(upload, wait=0):
                # Only if it is still "uploading": a final upload may have taken this
                # partial since it was listed (a join holds no write lock of its parts),
                # and then its bytes are the join's. The state decides who has it.
                if not self.move([upload.id], "uploading", "expired"):
                    return False
                self.drop_bytes(upload)
        except WriteLocked:
            return False  # a request is writing it right now: not abandoned after all
        except BytesGone:  # nothing left to drop: it only ends
            return self.move([upload.id], "uploading", "expired")
        return True


def _upload(row) -> TusUpload:
    data = {f.name: row[f.name] for f in fields(TusUpload)}
    data["created_at"], data["expires_at"] = utc(data["created_at"]), utc(data["expires_at"])
    return TusUpload(**data)

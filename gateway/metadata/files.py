"""The stored files' records: one row per stored file (the ``files`` table).

The repository is how the gateway reads and writes that table; a row is
written only after its bytes are in place, so a listed file always has its bytes.
Adding and deleting a row writes its event (file.stored, file.deleted or
file.expired) to the outbox in the same transaction (outbox.py).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import current_app

from gateway.hookspecs import FILE_DELETED, FILE_STORED
from gateway.metadata import cursors
from gateway.metadata.outbox import Outbox
from gateway.metadata.tables import files, share_links, utc


@dataclass
class FileRow:
    id: str
    filename: str
    original_name: str
    size: int
    type: str
    is_image: bool
    width: int | None
    height: int | None
    sha256: str
    thumbnail: str | None
    thumbnail_status: str
    uploaded_at: datetime
    expires_at: datetime | None
    verdict: str = "{}"
    owner_id: str | None = None


def snapshot(row: FileRow) -> str:
    """The row as an event carries it (JSON; the verdict is left out: the audit has it)."""
    data = {key: value for key, value in vars(row).items() if key != "verdict"}
    for key in ("uploaded_at", "expires_at"):
        data[key] = utc(data[key]).isoformat() if data[key] is not None else None
    return json.dumps(data)


def from_snapshot(text: str) -> FileRow:
    data = json.loads(text)
    for key in ("uploaded_at", "expires_at"):
        data[key] = utc(datetime.fromisoformat(data[key])) if data[key] is not None else None
    # Written by this version or an earlier one: a field since removed is ignored.
    return FileRow(**{key: value for key, value in data.items() if key in FileRow.__dataclass_fields__})


def _row(mapping) -> FileRow:
    data = dict(mapping)
    data["uploaded_at"] = utc(data["uploaded_at"])
    data["expires_at"] = utc(data["expires_at"])
    return FileRow(**data)


def encode_cursor(row: FileRow) -> str:
    return cursors.encode([row.uploaded_at, row.id])


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for anything that is not a cursor we made (text PostgreSQL
    cannot hold included: it would fail the query instead)."""
    stamp, file_id = cursors.decode(cursor, [files.c.uploaded_at, files.c.id])
    return stamp, file_id


class FileRepository:
    def __init__(self, engine: sa.Engine, outbox: Outbox | None = None):
        self.engine = engine
        # Where add() and delete() write their events (none while no plugin takes them).
        self.outbox = outbox or Outbox(engine)

    def add(self, row: FileRow) -> None:
        # Values as parameters of one constant statement: SQLAlchemy compiles it once.
        # (.values(**row) built a new statement per call: 40% of a small upload's time.)
        taken = self.outbox.takes(FILE_STORED)
        with self.engine.begin() as conn:
            conn.execute(files.insert(), dict(row.__dict__))
            if taken:
                self.outbox.add(conn, FILE_STORED, row.id, snapshot(row))
        if taken:
            self.outbox.added(FILE_STORED)

    # Reads take ``owner``: None reads every file (AUTH=off, an admin); a
    # user id reads only that user's, so another user's ids are simply absent.

    def _one(self, condition, owner: str | None) -> FileRow | None:
        query = files.select().where(condition)
        if owner is not None:
            query = query.where(files.c.owner_id == owner)
        with self.engine.connect() as conn:
            found = conn.execute(query).mappings().first()
        return _row(found) if found else None

    def get(self, file_id: str, owner: str | None = None) -> FileRow | None:
        return self._one(files.c.id == file_id, owner)

    def by_filename(self, filename: str, owner: str | None = None) -> FileRow | None:
        return self._one(files.c.filename == filename, owner)

    def by_thumbnail(self, thumbnail: str, owner: str | None = None) -> FileRow | None:
        return self._one(files.c.thumbnail == thumbnail, owner)

    def each(self, batch: int = 500) -> Iterator[FileRow]:
        """Every row, in id order, a batch at a time (for reconcile)."""
        after = ""
        while True:
            query = files.select().where(files.c.id > after).order_by(files.c.id).limit(batch)
            with self.engine.connect() as conn:
                rows = [_row(m) for m in conn.execute(query).mappings()]
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].id

    def usage(self, owner: str, expired_too: bool = False) -> tuple[int, int]:
        """(files, bytes) stored by one user: those they can see, or with
        ``expired_too`` also the expired ones whose bytes are still there."""
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(files.c.size), 0)).where(
            files.c.owner_id == owner)
        if not expired_too:
            now = datetime.now(timezone.utc)
            query = query.where(sa.or_(files.c.expires_at.is_(None), files.c.expires_at > now))
        with self.engine.connect() as conn:
            count, size = conn.execute(query).one()
        return int(count), int(size)

    def page(self, limit: int, cursor: str | None = None, owner: str | None = None, *,
             now: datetime | None = None) -> tuple[list[FileRow], str | None]:
        """Newest first; the cursor continues after the last row of the previous page.
        Expired files are left out (the reaper may not have removed them yet)."""
        query = files.select().order_by(files.c.uploaded_at.desc(), files.c.id.desc()).limit(limit + 1)
        if owner is not None:
            query = query.where(files.c.owner_id == owner)
        now = now or datetime.now(timezone.utc)
        query = query.where(sa.or_(files.c.expires_at.is_(None), files.c.expires_at > now))
        if cursor:
            stamp, file_id = decode_cursor(cursor)
            query = query.where(sa.or_(
                files.c.uploaded_at < stamp,
                sa.and_(files.c.uploaded_at == stamp, files.c.id < file_id),
            ))
        with self.engine.connect() as conn:
            rows = [_row(m) for m in conn.execute(query).mappings()]
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (encode_cursor(rows[-1]) if more and rows else None)

    def delete(self, file_id: str, event: str = FILE_DELETED) -> FileRow | None:
        """Delete the row and write ``event`` (file.deleted, or file.expired) about it;
        None, and no event, when it was already gone."""
        with self.engine.begin() as conn:
            found = conn.execute(files.select().where(files.c.id == file_id)).mappings().first()
            if found is None:
                return None
            # Its share links go in the same transaction: none outlives the file (PostgreSQL's
            # ON DELETE CASCADE would do it there; SQLite enforces foreign keys only when asked).
            conn.execute(share_links.delete().where(share_links.c.file_id == file_id))
            if conn.execute(files.delete().where(files.c.id == file_id)).rowcount != 1:
                return None  # another delete took it meanwhile (and reports it)
            row = _row(found)
            taken = self.outbox.takes(event)
            if taken:
                self.outbox.add(conn, event, file_id, snapshot(row))
        if taken:
            self.outbox.added(event)
        return row

    def expired(self, now: datetime, limit: int, after: tuple[datetime, str] | None = None,
                owner: str | None = None) -> list[FileRow]:
        """Files whose time is up at ``now`` (only ``owner``'s when given), in
        (expires_at, id) order; ``after`` continues past the last row of a previous batch."""
        query = (files.select().where(files.c.expires_at <= now)
                 .order_by(files.c.expires_at, files.c.id).limit(limit))
        if owner is not None:
            query = query.where(files.c.owner_id == owner)
        if after:
            stamp, file_id = after
            query = query.where(sa.or_(
                files.c.expires_at > stamp,
                sa.and_(files.c.expires_at == stamp, files.c.id > file_id),
            ))
        with self.engine.connect() as conn:
            return [_row(m) for m in conn.execute(query).mappings()]

    def set_expires_at(self, file_ids: list[str], expires_at: datetime | None) -> None:
        """(A form's expires_in that came after its files.) Their file.stored events
        that no plugin has taken yet say the new expiry too."""
        def change(text: str) -> str:
            row = from_snapshot(text)
            row.expires_at = expires_at
            return snapshot(row)

        with self.engine.begin() as conn:
            conn.execute(files.update().where(files.c.id.in_(file_ids)).values(expires_at=expires_at))
            if self.outbox.takes(FILE_STORED):
                self.outbox.rewrite(conn, FILE_STORED, file_ids, change)

    def set_thumbnail(self, file_id: str, thumbnail: str | None, status: str) -> bool:
        """False when the file's row is gone (deleted meanwhile)."""
        with self.engine.begin() as conn:
            result = conn.execute(files.update().where(files.c.id == file_id)
                                  .values(thumbnail=thumbnail, thumbnail_status=status))
        return result.rowcount > 0

    def pending_thumbnails(self, limit: int = 20, skip: Iterable[str] = ()) -> list[FileRow]:
        """The oldest files still waiting for a thumbnail, but those in ``skip``
        (waiting for their next try)."""
        query = (files.select().where(files.c.thumbnail_status == "pending")
                 .order_by(files.c.uploaded_at).limit(limit))
        skip = list(skip)
        if skip:
            query = query.where(files.c.id.notin_(skip))
        with self.engine.connect() as conn:
            return [_row(m) for m in conn.execute(query).mappings()]

    def set_thumbnail_if(self, file_id: str, status_was: str, thumbnail: str | None, status: str) -> bool:
        """set_thumbnail, only while the row's status is still ``status_was`` (another
        process may have given it a thumbnail meanwhile); False when it is not, or gone."""
        with self.engine.begin() as conn:
            result = conn.execute(files.update().where(files.c.id == file_id, files.c.thumbnail_status == status_was)
                                  .values(thumbnail=thumbnail, thumbnail_status=status))
        return result.rowcount > 0

    def without_thumbnails(self, types: Iterable[str], statuses: Iterable[str], after: str = "",
                           limit: int = 100, now: datetime | None = None) -> list[FileRow]:
        """Live files of one of ``types`` whose thumbnail status is one of ``statuses``, in
        id order after ``after`` (a backfill walks them a batch at a time)."""
        now = now or datetime.now(timezone.utc)
        query = (files.select()
                 .where(files.c.thumbnail_status.in_(list(statuses)), files.c.type.in_(list(types)),
                        files.c.id > after, sa.or_(files.c.expires_at.is_(None), files.c.expires_at > now))
                 .order_by(files.c.id).limit(limit))
        with self.engine.connect() as conn:
            return [_row(m) for m in conn.execute(query).mappings()]

    def per_minute(self, since: datetime) -> dict[datetime, tuple[int, int]]:
        """Files uploaded from ``since`` on, counted per minute (UTC) in the
        database: {minute: (files, bytes)}. Every gateway replica sharing the
        database sees the same numbers; files deleted since are not counted."""
        if self.engine.dialect.name == "postgresql":
            minute = sa.func.to_char(sa.func.timezone("UTC", files.c.uploaded_at), "YYYY-MM-DD HH24:MI")
        else:  # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff'
            minute = sa.func.substr(files.c.uploaded_at, 1, 16)
        minute = minute.label("minute")
        query = (sa.select(minute, sa.func.count(), sa.func.coalesce(sa.func.sum(files.c.size), 0))
                 .where(files.c.uploaded_at >= since).group_by(minute))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return {datetime.strptime(stamp, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc): (int(count), int(size))
                for stamp, count, size in rows}

    def totals(self, recent_since: datetime) -> tuple[tuple[int, int], tuple[int, int]]:
        """(files, bytes) stored, everyone's, and of them those uploaded from
        ``recent_since`` on. This reads the whole table (in one statement, so one
        snapshot): a caller that polls it counts the recent part again with
        uploaded_since() instead (gateway/http/dashboard.py)."""
        recent = files.c.uploaded_at >= recent_since
        query = sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(files.c.size), 0),
            sa.func.coalesce(sa.func.sum(sa.case((recent, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((recent, files.c.size), else_=0)), 0),
        ).select_from(files)
        with self.engine.connect() as conn:
            count, size, recent_count, recent_size = conn.execute(query).one()
        return (int(count), int(size)), (int(recent_count), int(recent_size))

    def uploaded_since(self, since: datetime) -> tuple[int, int]:
        """(files, bytes) uploaded from ``since`` on: a range of the uploaded_at index."""
        query = (sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(files.c.size), 0))
                 .where(files.c.uploaded_at >= since))
        with self.engine.connect() as conn:
            count, size = conn.execute(query).one()
        return int(count), int(size)

    def count_pending_thumbnails(self) -> int:
        query = sa.select(sa.func.count()).select_from(files).where(files.c.thumbnail_status == "pending")
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()


def repository() -> FileRepository:
    return current_app.extensions["files"]

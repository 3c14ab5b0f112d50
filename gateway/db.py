"""Metadata: one row per stored file, in SQLite (WAL) through SQLAlchemy Core.

The repository is the only code that knows the schema; a row is written only
after its bytes are in place, so a listed file always has its bytes.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import Flask, current_app

metadata = sa.MetaData()

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("filename", sa.String(64), nullable=False, unique=True),
    sa.Column("original_name", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("type", sa.String(255), nullable=False),
    sa.Column("is_image", sa.Boolean, nullable=False),
    sa.Column("width", sa.Integer, nullable=True),
    sa.Column("height", sa.Integer, nullable=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    # Thumbnail file name; null while there is none.
    sa.Column("thumbnail", sa.String(64), nullable=True),
    # none | pending (retry later) | done | failed (the image cannot be rendered)
    sa.Column("thumbnail_status", sa.String(16), nullable=False),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    # The validator's decisions, kept for the audit trail.
    sa.Column("verdict", sa.Text, nullable=False, default="{}"),
    # The user who uploaded it (see gateway/accounts.py); null with AUTH=off.
    sa.Column("owner_id", sa.String(32), nullable=True),
    sa.Index("ix_files_uploaded_at_id", "uploaded_at", "id"),
    sa.Index("ix_files_owner_uploaded_at", "owner_id", "uploaded_at"),
    sa.Index("ix_files_thumbnail_status", "thumbnail_status"),
)
# The reaper's query. Created apart from the table: create_all() skips a table
# that exists, so a database from before expiry would never get it.
EXPIRES_INDEX = sa.Index("ix_files_expires_at", files.c.expires_at)


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


def utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _row(mapping) -> FileRow:
    data = dict(mapping)
    data["uploaded_at"] = utc(data["uploaded_at"])
    data["expires_at"] = utc(data["expires_at"])
    return FileRow(**data)


def encode_cursor(row: FileRow) -> str:
    raw = json.dumps([row.uploaded_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for anything that is not a cursor we made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, file_id = json.loads(raw)
        return datetime.fromisoformat(stamp), str(file_id)
    except Exception as exc:
        raise ValueError("not a valid cursor") from exc


class FileRepository:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def add(self, row: FileRow) -> None:
        # Values as parameters of one constant statement: SQLAlchemy compiles it once.
        # (.values(**row) built a new statement per call: 40% of a small upload's time.)
        with self.engine.begin() as conn:
            conn.execute(files.insert(), dict(row.__dict__))

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

    def usage(self, owner: str) -> tuple[int, int]:
        """(files, bytes) stored by one user; expired files (hidden, soon reaped) do not count."""
        now = datetime.now(timezone.utc)
        query = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(files.c.size), 0)).where(
            files.c.owner_id == owner, sa.or_(files.c.expires_at.is_(None), files.c.expires_at > now))
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

    def delete(self, file_id: str) -> FileRow | None:
        with self.engine.begin() as conn:
            found = conn.execute(files.select().where(files.c.id == file_id)).mappings().first()
            if found is None:
                return None
            conn.execute(files.delete().where(files.c.id == file_id))
        return _row(found)

    def expired(self, now: datetime, limit: int,
                after: tuple[datetime, str] | None = None) -> list[FileRow]:
        """Files whose time is up at ``now``, in (expires_at, id) order; ``after``
        continues past the last row of a previous batch."""
        query = (files.select().where(files.c.expires_at <= now)
                 .order_by(files.c.expires_at, files.c.id).limit(limit))
        if after:
            stamp, file_id = after
            query = query.where(sa.or_(
                files.c.expires_at > stamp,
                sa.and_(files.c.expires_at == stamp, files.c.id > file_id),
            ))
        with self.engine.connect() as conn:
            return [_row(m) for m in conn.execute(query).mappings()]

    def set_expires_at(self, file_ids: list[str], expires_at: datetime | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(files.update().where(files.c.id.in_(file_ids)).values(expires_at=expires_at))

    def set_thumbnail(self, file_id: str, thumbnail: str | None, status: str) -> bool:
        """False when the file's row is gone (deleted meanwhile)."""
        with self.engine.begin() as conn:
            result = conn.execute(files.update().where(files.c.id == file_id)
                                  .values(thumbnail=thumbnail, thumbnail_status=status))
        return result.rowcount > 0

    def pending_thumbnails(self, limit: int = 20) -> list[FileRow]:
        query = (files.select().where(files.c.thumbnail_status == "pending")
                 .order_by(files.c.uploaded_at).limit(limit))
        with self.engine.connect() as conn:
            return [_row(m) for m in conn.execute(query).mappings()]

    def count_pending_thumbnails(self) -> int:
        query = sa.select(sa.func.count()).select_from(files).where(files.c.thumbnail_status == "pending")
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; NORMAL is durable across a process crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    metadata.create_all(engine)
    _add_missing_columns(engine)
    EXPIRES_INDEX.create(engine, checkfirst=True)
    return engine


def _add_missing_columns(engine: sa.Engine) -> None:
    """Bring a database made by an older version up to date. Only nullable
    columns are ever added, so this stays a plain ALTER TABLE ... ADD COLUMN."""
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def init_app(app: Flask) -> None:
    url = app.config["DATABASE_URL"] or f"sqlite:///{app.config['DATA_DIR']}/uploads.db"
    app.extensions["files"] = FileRepository(create_engine(url))


def repository() -> FileRepository:
    return current_app.extensions["files"]

"""Share links' records (the ``share_links`` table): made, listed, revoked, and
forgotten once expired.

The signed URL names a record (gateway/http/sharing.py); the record says whether
the link still works. A revoked record is kept until its expiry, so the link
answers 410 "revoked" rather than 404; after the expiry the URL itself says
"expired" and the record goes (``purge``, from the file reaper's passes).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from flask import current_app

from gateway.metadata import cursors
from gateway.metadata.locking import lock_row
from gateway.metadata.tables import files, share_links
from protos.errors import Conflict


@dataclass(frozen=True)
class ShareLink:
    id: str
    file_id: str
    owner_id: str | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _live(now: datetime):
    return sa.and_(share_links.c.revoked_at.is_(None), share_links.c.expires_at > now)


class ShareLinks:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def create(self, file_id: str, owner_id: str | None, created_by: str | None, expires_at: datetime,
               per_file: int = 0) -> ShareLink | None:
        """A new link to a file; None when the file is gone. Conflict when the file
        already has ``per_file`` live links (0: no cap)."""
        now = _now()
        link = ShareLink(id=secrets.token_hex(16), file_id=file_id, owner_id=owner_id, created_by=created_by,
                         created_at=now, expires_at=expires_at)
        with self.engine.begin() as conn:
            # The file's row is the lock: the cap holds under concurrent requests, and a
            # file deleted meanwhile gets no link.
            if not lock_row(conn, files.c.id, file_id):
                return None
            if per_file:
                count = sa.select(sa.func.count()).select_from(share_links).where(
                    share_links.c.file_id == file_id, _live(now))
                if conn.execute(count).scalar_one() >= per_file:
                    raise Conflict(f"This file already has {per_file} live share links, the most one file may "
                                   "have. Revoke some you no longer need (DELETE /shares/<id>) and try again.")
            conn.execute(share_links.insert(), dict(link.__dict__))
        return link

    def get(self, link_id: str) -> ShareLink | None:
        with self.engine.connect() as conn:
            found = conn.execute(share_links.select().where(share_links.c.id == link_id)).mappings().first()
        return ShareLink(**found) if found else None

    def page(self, limit: int, cursor: str | None = None, owner: str | None = None, file_id: str | None = None,
             *, now: datetime | None = None) -> tuple[list[ShareLink], str | None]:
        """Live links, newest first: ``owner``'s (None: everyone's), of one file or all.
        Raises ValueError for a cursor that is not one of ours."""
        query = share_links.select().where(_live(now or _now()))
        if owner is not None:
            query = query.where(share_links.c.owner_id == owner)
        if file_id is not None:
            query = query.where(share_links.c.file_id == file_id)
        with self.engine.connect() as conn:
            rows, next_cursor = cursors.page(conn, query, [share_links.c.created_at, share_links.c.id], limit,
                                             cursor, descending=True)
        return [ShareLink(**m) for m in rows], next_cursor

    def revoke(self, link_id: str, owner: str | None = None) -> bool:
        """False when there is no live link with that id (or it is not ``owner``'s)."""
        now = _now()
        query = share_links.update().where(share_links.c.id == link_id, _live(now)).values(revoked_at=now)
        if owner is not None:
            query = query.where(share_links.c.owner_id == owner)
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount > 0

    def purge(self, now: datetime | None = None) -> int:
        """Forget links past their expiry (their URLs say "expired" by themselves)."""
        with self.engine.begin() as conn:
            return conn.execute(share_links.delete().where(share_links.c.expires_at <= (now or _now()))).rowcount


def shares() -> ShareLinks:
    return current_app.extensions["shares"]

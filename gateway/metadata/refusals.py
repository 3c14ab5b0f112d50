"""Refused files, recorded (the ``refusals`` table) so that a person can look one up: who,
when, which file, which rule and why. Written by the gateway's one JSON error answer
(gateway/errors.py) for every refusal it sends; listed by GET /refusals and the dashboard
(admins); kept REFUSALS_KEEP_DAYS, each write forgetting what is older (0: none recorded)."""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import current_app

from gateway.metadata import cursors
from gateway.metadata.tables import refusals

log = logging.getLogger("upload.gateway")


@dataclass(frozen=True)
class Refusal:
    id: str
    refused_at: datetime
    owner_id: str | None
    original_name: str
    size: int | None
    rule: str
    code: str
    via: str


class RefusalLog:
    def __init__(self, engine: sa.Engine, keep_days: float = 30.0):
        self.engine = engine
        self.keep = timedelta(days=keep_days)

    def add(self, original_name: str, code: str, rule: str = "", size: int | None = None,
            owner_id: str | None = None, via: str = "upload", now: datetime | None = None) -> Refusal | None:
        now = now or datetime.now(timezone.utc)
        if self.keep <= timedelta(0):
            self.forget_old(now)  # recorded before REFUSALS_KEEP_DAYS became 0
            return None
        refusal = Refusal(id=secrets.token_hex(16), refused_at=now, owner_id=owner_id,
                          original_name=original_name[:255], size=size, rule=rule[:200], code=code[:64], via=via)
        with self.engine.begin() as conn:
            conn.execute(refusals.insert().values(**refusal.__dict__))
            conn.execute(refusals.delete().where(refusals.c.refused_at < now - self.keep))
        return refusal

    def forget_old(self, now: datetime | None = None) -> int:
        with self.engine.begin() as conn:
            return conn.execute(refusals.delete().where(
                refusals.c.refused_at < (now or datetime.now(timezone.utc)) - self.keep)).rowcount

    def page(self, limit: int, cursor: str | None = None) -> tuple[list[Refusal], str | None]:
        """Newest first, those kept (none older than REFUSALS_KEEP_DAYS, even with no new
        refusal since to forget them). Raises ValueError for a cursor that is not one of ours."""
        kept = refusals.select().where(refusals.c.refused_at >= datetime.now(timezone.utc) - self.keep)
        with self.engine.connect() as conn:
            rows, next_cursor = cursors.page(conn, kept, [refusals.c.refused_at, refusals.c.id], limit,
                                             cursor, descending=True)
        return [Refusal(**row) for row in rows], next_cursor


def init_app(app, engine: sa.Engine) -> None:
    app.extensions["refusals"] = RefusalLog(engine, app.config.get("REFUSALS_KEEP_DAYS", 30.0))


def refusal_log() -> RefusalLog:
    return current_app.extensions["refusals"]


def record(original_name: str, code: str, rule: str, size: int | None, owner_id: str | None, via: str) -> None:
    """Record one refusal; never fails the answer it goes with (the database may be what failed)."""
    try:
        refusal_log().add(original_name, code, rule, size, owner_id, via)
    except Exception:
        log.exception("could not record the refusal of %r (%s)", original_name, code)

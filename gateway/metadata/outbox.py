"""The event outbox: events about files (stored, deleted, expired) waiting for
the plugins that take them (the ``event_outbox`` table; the hooks are in
gateway/hookspecs.py, their delivery in gateway/events/).

``add()`` writes an event inside the transaction of the change it reports,
one row per plugin that takes that type (``subscribe()``), so the change and
its event are committed together or not at all. The event thread of each
plugin then ``claim()``s its due rows, one at a time (a claim is a lease: a
second gateway on the same database skips a claimed row, and a gateway that
dies holding one leaves it to be tried again when the lease ends), and
reports ``done()`` (the row goes), ``failed()`` (tried again later) or
``bury()`` (given up: kept as "dead" for `flask events`).

Knows nothing of files: the repository of files (files.py) hands it the
file's row as text.
"""
from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from gateway.metadata.tables import event_outbox, utc

PENDING, DEAD = "pending", "dead"
# last_error is kept this short: a receiver's answer could be anything.
MAX_ERROR = 1000


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class OutboxRow:
    event_id: str
    consumer: str
    type: str
    created_at: datetime
    file_id: str
    file: str
    state: str
    pending_since: datetime
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


def _row(mapping) -> OutboxRow:
    data = dict(mapping)
    for key in ("created_at", "pending_since", "next_attempt_at"):
        data[key] = utc(data[key])
    return OutboxRow(**data)


@dataclass
class ConsumerStats:
    consumer: str
    state: str
    count: int
    oldest: datetime  # the oldest event's created_at
    last_error: str | None = None


class Outbox:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        # event type -> the plugins that take it; nothing is written for a type nobody takes.
        self._subscribers: dict[str, tuple[str, ...]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, subscribers: Mapping[str, Iterable[str]]) -> None:
        self._subscribers = {kind: tuple(names) for kind, names in subscribers.items() if names}

    def subscribers(self, kind: str | None = None) -> tuple[str, ...]:
        """Who takes ``kind`` (every plugin that takes any, without it)."""
        if kind is not None:
            return self._subscribers.get(kind, ())
        return tuple(dict.fromkeys(name for names in self._subscribers.values() for name in names))

    def takes(self, kind: str) -> bool:
        """Whether some plugin takes events of ``kind`` (else ``add`` writes nothing)."""
        return kind in self._subscribers

    def on_added(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(type)`` after a transaction that wrote an event commits."""
        with self._lock:
            self._listeners.append(listener)

    # --- writing, inside the caller's transaction ---

    def add(self, conn: sa.Connection, kind: str, file_id: str, file: str) -> str | None:
        """Write an event in ``conn``'s transaction; its id, or None when no plugin takes ``kind``.
        The caller calls ``added(kind)`` once its transaction has committed."""
        consumers = self._subscribers.get(kind, ())
        if not consumers:
            return None
        event_id, at = secrets.token_hex(16), now()
        conn.execute(event_outbox.insert(), [
            {"event_id": event_id, "consumer": consumer, "type": kind, "created_at": at, "file_id": file_id,
             "file": file, "state": PENDING, "pending_since": at, "attempts": 0, "next_attempt_at": at,
             "last_error": None}
            for consumer in consumers])
        return event_id

    def added(self, kind: str) -> None:
        for listener in list(self._listeners):
            listener(kind)

    def rewrite(self, conn: sa.Connection, kind: str, file_ids: list[str], change: Callable[[str], str]) -> None:
        """Change the file of the events of ``kind`` about ``file_ids`` that no plugin has taken yet."""
        c = event_outbox.c
        query = sa.select(c.event_id, c.file).where(c.type == kind, c.file_id.in_(file_ids), c.state == PENDING)
        found = {event_id: file for event_id, file in conn.execute(query)}
        for event_id, file in found.items():
            conn.execute(event_outbox.update().where(c.event_id == event_id).values(file=change(file)))

    # --- delivering: one plugin's event thread ---

    def due(self, consumer: str, at: datetime, limit: int) -> list[OutboxRow]:
        """``consumer``'s events whose time has come at ``at``, the longest due first."""
        c = event_outbox.c
        query = (event_outbox.select()
                 .where(c.consumer == consumer, c.state == PENDING, c.next_attempt_at <= at)
                 .order_by(c.next_attempt_at, c.created_at, c.event_id).limit(limit))
        with self.engine.connect() as conn:
            return [_row(m) for m in conn.execute(query).mappings()]

    def claim(self, row: OutboxRow, at: datetime, until: datetime) -> bool:
        """Take ``row`` for one attempt, until ``until``; False when another
        gateway took it first (or it is gone)."""
        c = event_outbox.c
        with self.engine.begin() as conn:
            result = conn.execute(
                event_outbox.update()
                .where(c.event_id == row.event_id, c.consumer == row.consumer, c.state == PENDING,
                       c.next_attempt_at <= at)
                .values(next_attempt_at=until, attempts=c.attempts + 1))
        if result.rowcount != 1:
            return False
        row.attempts += 1
        row.next_attempt_at = until
        return True

    def _update(self, row: OutboxRow, **values) -> None:
        c = event_outbox.c
        with self.engine.begin() as conn:
            conn.execute(event_outbox.update().where(c.event_id == row.event_id, c.consumer == row.consumer)
                         .values(**values))

    def done(self, row: OutboxRow) -> None:
        c = event_outbox.c
        with self.engine.begin() as conn:
            conn.execute(event_outbox.delete().where(c.event_id == row.event_id, c.consumer == row.consumer))

    def failed(self, row: OutboxRow, error: str, retry_at: datetime) -> None:
        self._update(row, next_attempt_at=retry_at, last_error=error[:MAX_ERROR])

    def bury(self, row: OutboxRow, error: str) -> None:
        self._update(row, state=DEAD, last_error=error[:MAX_ERROR])

    def give_up(self, before: datetime) -> dict[str, int]:
        """Every event pending since before ``before`` is dead (of plugins no longer
        loaded too, whose events nobody would take); how many, by plugin."""
        c = event_outbox.c
        old = sa.and_(c.state == PENDING, c.pending_since < before)
        with self.engine.begin() as conn:
            counts = dict(conn.execute(sa.select(c.consumer, sa.func.count()).where(old).group_by(c.consumer)).all())
            if counts:
                conn.execute(event_outbox.update().where(old).values(
                    state=DEAD, last_error=sa.func.coalesce(c.last_error, "never taken")))
        return {consumer: int(count) for consumer, count in counts.items()}

    # --- for people: metrics and `flask events` ---

    def stats(self) -> list[ConsumerStats]:
        c = event_outbox.c
        query = (sa.select(c.consumer, c.state, sa.func.count(), sa.func.min(c.created_at))
                 .group_by(c.consumer, c.state).order_by(c.consumer, c.state))
        with self.engine.connect() as conn:
            return [ConsumerStats(consumer, state, int(count), utc(oldest))
                    for consumer, state, count, oldest in conn.execute(query)]

    def last_error(self, consumer: str, state: str) -> str | None:
        c = event_outbox.c
        query = (sa.select(c.last_error).where(c.consumer == consumer, c.state == state, c.last_error.is_not(None))
                 .order_by(c.next_attempt_at.desc()).limit(1))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def retry_dead(self, consumer: str | None = None) -> int:
        """Dead events are pending again, due now, with EVENT_GIVE_UP_AFTER counted afresh."""
        c = event_outbox.c
        query = event_outbox.update().where(c.state == DEAD)
        if consumer is not None:
            query = query.where(c.consumer == consumer)
        at = now()
        with self.engine.begin() as conn:
            return conn.execute(query.values(state=PENDING, pending_since=at, next_attempt_at=at, attempts=0)).rowcount

    def drop_dead(self, consumer: str | None = None) -> int:
        c = event_outbox.c
        query = event_outbox.delete().where(c.state == DEAD)
        if consumer is not None:
            query = query.where(c.consumer == consumer)
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount


def outbox() -> Outbox:
    from flask import current_app

    return current_app.extensions["outbox"]

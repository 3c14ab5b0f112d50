"""Keyset paging: every listing's cursors, and the pages of tokens, users and
share links (files.py pages the files its own way, with these cursors).

A cursor is the sort key of the last row of a page, base64url JSON: opaque to
clients, and a page after it is one indexed range read however deep it goes
(an OFFSET would read and drop every row before it).
"""
from __future__ import annotations

import base64
import json
from datetime import datetime

import sqlalchemy as sa

from gateway.metadata.tables import UTCDateTime


def _plain(value):
    return value.isoformat() if isinstance(value, datetime) else value


def encode(values) -> str:
    raw = json.dumps([_plain(v) for v in values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, keys: list[sa.Column]) -> list:
    """The key values a cursor holds; ValueError for anything that is not one of ours."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or len(values) != len(keys) or not all(isinstance(v, str) for v in values):
            raise ValueError("not a cursor of this listing")
        for value in values:
            # Text PostgreSQL cannot hold (it would fail the query: a 500, not the client's 400).
            value.encode("utf-8")
            if "\x00" in value:
                raise ValueError("NUL in a cursor")
        return [datetime.fromisoformat(v) if isinstance(k.type, UTCDateTime) else v for k, v in zip(keys, values)]
    except Exception as exc:
        raise ValueError("not a valid cursor") from exc


def _after(keys: list[sa.Column], values: list, descending: bool):
    """Rows strictly past ``values`` in the listing's order: (a, b) > (x, y) written
    out, because SQLite and PostgreSQL compare row values differently with NULLs."""
    column, value = keys[0], values[0]
    past = column < value if descending else column > value
    if len(keys) == 1:
        return past
    return sa.or_(past, sa.and_(column == value, _after(keys[1:], values[1:], descending)))


def page(conn: sa.Connection, query: sa.Select, keys: list[sa.Column], limit: int, cursor: str | None,
         descending: bool = False) -> tuple[list, str | None]:
    """One page of ``query`` in the order of ``keys`` (which must identify a row):
    (mappings, the cursor of the next page or None on the last)."""
    if cursor:
        query = query.where(_after(keys, decode(cursor, keys), descending))
    query = query.order_by(*[k.desc() if descending else k for k in keys]).limit(limit + 1)
    rows = list(conn.execute(query).mappings())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode(rows[-1][k.name] for k in keys)

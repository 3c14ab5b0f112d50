"""Counting against a cap, then writing, without two writers both passing the count."""
from __future__ import annotations

import sqlalchemy as sa


def lock_row(conn: sa.Connection, key_column: sa.Column, key: str) -> bool:
    """Whether the row of ``key`` exists; holds, until ``conn``'s transaction ends,
    the lock another writer counting against the same row waits for. Call it first
    in the transaction.

    PostgreSQL: that row FOR UPDATE (at READ COMMITTED the count read after it
    sees what the previous holder committed). SQLite: the database's write lock
    (BEGIN IMMEDIATE), taken before the count is read instead of at the insert,
    where two readers would both have counted the same rows."""
    query = sa.select(key_column).where(key_column == key)
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        query = query.with_for_update()
    return conn.execute(query).first() is not None

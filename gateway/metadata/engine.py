"""The database engine: SQLite (WAL) by default, PostgreSQL with
DATABASE_URL=postgresql+psycopg://...; either way sessions work in UTC."""
from __future__ import annotations

import sqlalchemy as sa


def _sqlite_pragmas(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; NORMAL is durable across a process crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_engine(url: str) -> sa.Engine:
    engine_args: dict = {}
    if sa.make_url(url).get_backend_name() == "postgresql":
        # UTC sessions: a naive datetime means UTC as it does on SQLite, and what
        # comes back is UTC. pre_ping: a restarted server costs no failed request.
        engine_args = {"connect_args": {"options": "-c TimeZone=UTC"}, "pool_pre_ping": True}
    engine = sa.create_engine(url, **engine_args)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def database_url(config) -> str:
    return config["DATABASE_URL"] or f"sqlite:///{config['DATA_DIR']}/uploads.db"

"""Schema migrations (Alembic, gateway/metadata/migrations): run at every start-up and
by `flask --app gateway db upgrade`, on SQLite and PostgreSQL alike.

Several gunicorn workers or replicas start at once, so every upgrade runs
under a lock that only one holder passes at a time: a PostgreSQL advisory lock
held by the migration's own transaction (released by its commit), on SQLite
the database's write lock (BEGIN IMMEDIATE). The one that comes second finds
the schema at head and does nothing.

A database made before migrations existed (tables made by create_all, no
alembic_version) is adopted: what an older version lacked is added the way it
used to be, then it is stamped as the initial revision, never created again.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from gateway.metadata.tables import metadata

log = logging.getLogger("upload.gateway")

MIGRATIONS = Path(__file__).with_name("migrations")
# The revision that creates the schema as create_all made it (what legacy databases are stamped with).
INITIAL = "0001"
# Any constant 64-bit number: it names this service's lock among the database's advisory locks.
ADVISORY_LOCK_KEY = 0x75706C6F6164  # "upload"
# Long enough for a migration that copies a big table (SQLite's batch mode) while others wait.
SQLITE_LOCK_WAIT_MS = 10 * 60 * 1000


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """Alembic's configuration without an alembic.ini: the scripts ship in the package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(engine: sa.Engine) -> str | None:
    """The revision the database is at (None: not migrated yet)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (once, whoever else starts at the same time)."""
    with engine.connect() as conn:
        with _exclusive(conn):
            if _is_legacy(conn):
                log.info("database made before migrations: bringing it up to date and stamping it %s", INITIAL)
                _adopt_legacy(conn)
                command.stamp(alembic_config(conn), INITIAL)
            command.upgrade(alembic_config(conn), revision)
        conn.commit()


@contextmanager
def _exclusive(conn: sa.Connection) -> Iterator[None]:
    """Hold the migration lock in ``conn``'s transaction until it commits."""
    name = conn.dialect.name
    if name == "postgresql":
        # The transaction-scoped kind: released by the commit (or a rollback, or the
        # connection dropping), never left behind on a pooled connection.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        yield
    elif name == "sqlite":
        # BEGIN IMMEDIATE takes the write lock at once; a second starter waits for it
        # (busy_timeout), then finds the schema done. DDL in it is transactional too.
        conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_LOCK_WAIT_MS}")
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield
        finally:
            conn.exec_driver_sql("PRAGMA busy_timeout=5000")  # what gateway.metadata.engine sets: the pool's default
    else:
        log.warning("no migration lock for %s: start one process first when upgrading", name)
        yield


def _is_legacy(conn: sa.Connection) -> bool:
    tables = set(sa.inspect(conn).get_table_names())
    if "alembic_version" in tables and MigrationContext.configure(conn).get_current_revision():
        return False
    return bool(tables & set(metadata.tables))


def _adopt_legacy(conn: sa.Connection) -> None:
    """What the start-up of versions before migrations did to every database:
    create what is missing (tables, then nullable columns, then indexes)."""
    metadata.create_all(conn)
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
        for index in table.indexes:
            index.create(conn, checkfirst=True)

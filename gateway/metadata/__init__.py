"""Metadata: what is known about stored files, users and tus uploads, in a SQL
database (SQLite by default, PostgreSQL with DATABASE_URL) through SQLAlchemy Core.

Holds the schema (tables.py), its migrations, the engine and the repositories
(files.py, accounts.py, shares.py, refusals.py, and outbox.py: the events about
files waiting for plugins). The bottom layer: may use ``protos`` and, of the gateway, only the
modules below it (hookspecs for the event types; config, metrics, background).
"""
from __future__ import annotations

from flask import Flask

from gateway.metadata import migrate, refusals
from gateway.metadata.engine import create_engine, database_url
from gateway.metadata.files import FileRepository
from gateway.metadata.outbox import Outbox
from gateway.metadata.shares import ShareLinks


def init_app(app: Flask) -> None:
    engine = create_engine(database_url(app.config))
    migrate.upgrade(engine)  # every table, the accounts' and tus' too; a no-op when at head
    # Written to by the files' repository; told which plugins take which events by gateway/events.
    app.extensions["outbox"] = Outbox(engine)
    app.extensions["files"] = FileRepository(engine, app.extensions["outbox"])
    app.extensions["shares"] = ShareLinks(engine)
    refusals.init_app(app, engine)

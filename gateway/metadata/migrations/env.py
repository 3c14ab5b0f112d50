"""Alembic's environment: runs on the connection gateway.metadata.migrate hands over
(it already holds the migration lock), so there is no alembic.ini and no URL here."""
from __future__ import annotations

from alembic import context

from gateway.metadata.tables import metadata  # every table

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Run migrations through gateway.metadata.migrate (or `flask --app gateway db upgrade`), "
                       "which opens the database and takes the migration lock.")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

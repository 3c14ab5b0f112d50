"""The event outbox (event_outbox): events about files (stored, deleted,
expired) waiting for the plugins that take them, webhooks included, written in
the same transaction as the change they report.

Nothing to copy: no event was recorded before this revision. A database adopted
from before migrations already has the table (create_all made it with
everything else): it is only created where missing.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "event_outbox" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "event_outbox",
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("file_id", sa.String(32), nullable=False),
        sa.Column("file", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pending_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("event_id", "consumer"),
    )
    op.create_index("ix_event_outbox_due", "event_outbox", ["consumer", "state", "next_attempt_at"])
    op.create_index("ix_event_outbox_state_since", "event_outbox", ["state", "pending_since"])
    op.create_index("ix_event_outbox_file_id", "event_outbox", ["file_id"])


def downgrade() -> None:
    op.drop_table("event_outbox")  # its indexes go with it

"""Refusals are recorded (refusals), so that a person can look one up: who, when,
which file, which rule and why (GET /refusals, the dashboard).

Nothing to copy: no refusal was recorded before this revision. A database adopted
from before migrations already has the table (create_all made it with everything
else): it is only created where missing.

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "refusals" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "refusals",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=True),
        sa.Column("original_name", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=True),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("via", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_refusals_refused_at", "refusals", ["refused_at", "id"])


def downgrade() -> None:
    op.drop_table("refusals")

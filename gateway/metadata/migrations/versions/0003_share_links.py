"""Share links become records (share_links), so they can be listed and revoked.

Links made before this revision were never recorded (the URL carried the file
id and the expiry, nothing was stored): there is nothing to copy. They keep
working until they expire unless SHARE_LEGACY_LINKS is turned off (README,
"Accounts, sharing and quotas").

A database adopted from before migrations already has the table (create_all
made it with everything else): it is only created where missing.

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "share_links" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "share_links",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("file_id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=True),
        sa.Column("created_by", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["file_id"], ["files.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_share_links_file_id", "share_links", ["file_id"])
    op.create_index("ix_share_links_expires_at", "share_links", ["expires_at"])
    op.create_index("ix_share_links_owner_created", "share_links", ["owner_id", "created_at", "id"])


def downgrade() -> None:
    op.drop_table("share_links")  # its indexes go with it

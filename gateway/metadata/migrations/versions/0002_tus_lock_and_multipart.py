"""tus uploads on shared storage (STORAGE=s3): the write lock moves to the
database, and the S3 multipart upload collecting an upload's bytes is named
in its row.

- lock_owner / lock_expires_at: who writes the upload now (any replica), and
  until when the lock holds if its holder dies without releasing it;
- multipart_id: the S3 multipart upload that collects its parts.

A database adopted from before migrations already has these columns
(create_all made them): they are only added where missing.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = (
    ("lock_owner", lambda: sa.Column("lock_owner", sa.String(64), nullable=True)),
    ("lock_expires_at", lambda: sa.Column("lock_expires_at", sa.DateTime(timezone=True), nullable=True)),
    ("multipart_id", lambda: sa.Column("multipart_id", sa.Text(), nullable=True)),
)


def upgrade() -> None:
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("tus_uploads")}
    missing = [make() for name, make in COLUMNS if name not in present]
    if missing:
        with op.batch_alter_table("tus_uploads") as batch:
            for column in missing:
                batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("tus_uploads") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)

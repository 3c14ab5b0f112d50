"""The schema: every table of the metadata, in one place (SQLAlchemy Core).

The tables are made and changed only by migrations (gateway/metadata/migrate.py
and migrations/), never by create_all; a change here needs a migration there.
Times are stored as UTC on every backend (UTCDateTime).
"""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

metadata = sa.MetaData()


def utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes, PostgreSQL aware ones in the session's
    # zone: everything stored is UTC, and shown (and put in cursors) as UTC.
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class UTCDateTime(sa.TypeDecorator):
    """A point in time, stored as UTC and given back aware, in UTC, on every
    backend. SQLite's DateTime would drop an offset without converting
    (09:00+02:00 stored as 09:00); PostgreSQL converts, and answers in the
    session's zone. Naive values mean UTC."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        return utc(value)


files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("filename", sa.String(64), nullable=False, unique=True),
    sa.Column("original_name", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("type", sa.String(255), nullable=False),
    sa.Column("is_image", sa.Boolean, nullable=False),
    sa.Column("width", sa.Integer, nullable=True),
    sa.Column("height", sa.Integer, nullable=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    # Thumbnail file name; null while there is none.
    sa.Column("thumbnail", sa.String(64), nullable=True),
    # none | pending (retry later) | done | failed (the image cannot be rendered)
    sa.Column("thumbnail_status", sa.String(16), nullable=False),
    sa.Column("uploaded_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    # The validator's decisions, kept for the audit trail.
    sa.Column("verdict", sa.Text, nullable=False, default="{}"),
    # The user who uploaded it (see gateway/metadata/accounts.py); null with AUTH=off.
    sa.Column("owner_id", sa.String(32), nullable=True),
    sa.Index("ix_files_uploaded_at_id", "uploaded_at", "id"),
    sa.Index("ix_files_owner_uploaded_at", "owner_id", "uploaded_at"),
    sa.Index("ix_files_thumbnail_status", "thumbnail_status"),
)
# The reaper's query.
EXPIRES_INDEX = sa.Index("ix_files_expires_at", files.c.expires_at)


users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.Text, nullable=True),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Per-user overrides of USER_QUOTA_BYTES / USER_QUOTA_FILES; null: the default.
    sa.Column("quota_bytes", sa.BigInteger, nullable=True),
    sa.Column("quota_files", sa.Integer, nullable=True),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
)

# Server-made secrets (the signing key when SECRET_KEY is not set).
server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

tus_uploads = sa.Table(
    "tus_uploads",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    # The stored name the file will have (random id plus the validated extension).
    sa.Column("filename", sa.String(64), nullable=False),
    # Null while the client defers it (creation-defer-length).
    sa.Column("length", sa.BigInteger, nullable=True),
    # Only ever moved after the bytes up to it are fsynced.
    sa.Column("offset", sa.BigInteger, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("original_name", sa.String(255), nullable=False),
    sa.Column("declared_type", sa.String(255), nullable=False),
    sa.Column("expires_in", sa.Integer, nullable=True),
    # Null, "partial" or "final;<url> <url>..."
    sa.Column("concat", sa.Text, nullable=True),
    # uploading | complete | refused | terminated | expired; a partial upload also
    # joining (taken by a final upload that is being made) | joined
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("head_checked", sa.Boolean, nullable=False),
    sa.Column("file_id", sa.String(32), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # Unfinished: when it will be reaped. Finished: when it will be forgotten.
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    # Who created it; only they (or an admin) may see and write it. Null with AUTH=off.
    sa.Column("owner_id", sa.String(32), nullable=True),
    # STORAGE=s3 (gateway/tus/s3.py): the replica writing it now and until when its lock
    # holds should it die holding it; the S3 multipart upload collecting its parts.
    sa.Column("lock_owner", sa.String(64), nullable=True),
    sa.Column("lock_expires_at", UTCDateTime(), nullable=True),
    sa.Column("multipart_id", sa.Text, nullable=True),
    sa.Index("ix_tus_uploads_expires_at", "expires_at"),
)

# A share link's record (gateway/metadata/shares.py): the signed URL names it, so
# it can be listed and revoked. Kept until it expires, revoked or not, so that a
# revoked link says so (410) instead of looking like a deleted file (404).
share_links = sa.Table(
    "share_links",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("file_id", sa.String(32), sa.ForeignKey("files.id", ondelete="CASCADE"), nullable=False, index=True),
    # The file's owner, who may list and revoke the link; null with AUTH=off.
    sa.Column("owner_id", sa.String(32), nullable=True),
    # Who made it: the owner, or an admin; null with AUTH=off.
    sa.Column("created_by", sa.String(32), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    # GET /shares: one owner's links, newest first.
    sa.Index("ix_share_links_owner_created", "owner_id", "created_at", "id"),
)

# Events about files waiting for a plugin (a webhook URL is one): the outbox
# (gateway/metadata/outbox.py). A row is written in the same transaction as the
# change it reports, one per event and plugin, and deleted once that plugin has
# taken the event; one it never takes is kept as "dead" (EVENT_GIVE_UP_AFTER).
event_outbox = sa.Table(
    "event_outbox",
    metadata,
    # 32 hex digits; the same for every plugin, and on every attempt.
    sa.Column("event_id", sa.String(32), nullable=False),
    # The plugin's name (pluggy's): a module name, an entry point's, "webhook:<host>#<hash>".
    sa.Column("consumer", sa.String(200), nullable=False),
    # file.stored | file.deleted | file.expired
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("file_id", sa.String(32), nullable=False),
    # The file's row as it was at the change (JSON, without the verdict).
    sa.Column("file", sa.Text, nullable=False),
    # pending | dead
    sa.Column("state", sa.String(16), nullable=False),
    # Since when it has waited: its creation, or when `flask events retry` woke it (EVENT_GIVE_UP_AFTER counts from it).
    sa.Column("pending_since", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    # Not before then: the pause after a failure, or the lease of the attempt in progress.
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.PrimaryKeyConstraint("event_id", "consumer"),
    # A plugin's next events; the sweep of those past EVENT_GIVE_UP_AFTER; a file's (set_expires_at).
    sa.Index("ix_event_outbox_due", "consumer", "state", "next_attempt_at"),
    sa.Index("ix_event_outbox_state_since", "state", "pending_since"),
    sa.Index("ix_event_outbox_file_id", "file_id"),
)

# Files refused (gateway/metadata/refusals.py): who, when, which file, which rule and why, so
# that a person can look a refusal up (GET /refusals, the dashboard); kept REFUSALS_KEEP_DAYS.
refusals = sa.Table(
    "refusals",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("refused_at", UTCDateTime(), nullable=False),
    sa.Column("owner_id", sa.String(32), nullable=True),
    sa.Column("original_name", sa.String(255), nullable=False),
    # Bytes, when known (a file refused before its size was known has none).
    sa.Column("size", sa.BigInteger, nullable=True),
    # The validator's rule that refused it; "" for the gateway's own refusals (a size limit).
    sa.Column("rule", sa.String(200), nullable=False),
    sa.Column("code", sa.String(64), nullable=False),
    # upload (POST /upload) | tus
    sa.Column("via", sa.String(8), nullable=False),
    sa.Index("ix_refusals_refused_at", "refused_at", "id"),
)

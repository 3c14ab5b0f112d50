"""Per-user quotas: most bytes and most files a user may keep stored.

Checked before a body is read (from Content-Length or Upload-Length), while it
streams, and once more just before the file is accepted, so one request
cannot pass a quota; two racing requests can overshoot it by one file at most.
Unfinished tus uploads count with the length they announced, or with what
has arrived when the length is deferred (refused at the byte that passes the
quota); partial uploads count their bytes but no file, until a final upload
takes them and counts instead, with its real length. Expired files count
until their bytes are gone. Admins and AUTH=off have no quota.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from gateway.auth.identity import current_user
from gateway.metadata.accounts import User
from gateway.metadata.files import repository
from protos.errors import QuotaExceeded
from protos.text import human_size


def limits_for(user: User, config) -> tuple[int, int]:
    """(bytes, files) the user may keep; 0 means no limit."""
    quota_bytes = user.quota_bytes if user.quota_bytes is not None else config["USER_QUOTA_BYTES"]
    quota_files = user.quota_files if user.quota_files is not None else config["USER_QUOTA_FILES"]
    return quota_bytes, quota_files


@dataclass
class Quota:
    user_id: str
    max_bytes: int
    max_files: int

    def used(self, except_upload: str | None = None) -> tuple[int, int]:
        """(files, bytes): stored, plus announced by unfinished tus uploads
        (but ``except_upload``, the one being finished).

        An expired file is hidden at once but keeps its bytes until it is
        removed: this user's are removed first, so the room they free is
        real, and any that could not be removed still count."""
        current_app.extensions["file_reaper"].reap(owner=self.user_id)
        files, size = repository().usage(self.user_id, expired_too=True)
        open_uploads, announced = current_app.extensions["tus"].reserved(self.user_id, except_upload)
        return files + open_uploads, size + announced

    def check(self, new_files: int = 0, new_bytes: int = 0, except_upload: str | None = None) -> None:
        """Raise QuotaExceeded if storing this much more would pass the quota."""
        files, size = self.used(except_upload)
        if self.max_files and files + new_files > self.max_files:
            raise QuotaExceeded(f"You have reached your quota of {self.max_files} files; "
                                "delete some files (or ask an admin for a larger quota) to upload more.")
        if self.max_bytes and size + new_bytes > self.max_bytes:
            raise QuotaExceeded(
                f"This upload does not fit in your storage quota: you use {human_size(size)} of "
                f"{human_size(self.max_bytes)} and it needs {human_size(new_bytes)}. Delete some files "
                "or ask an admin for a larger quota.")


class Budget:
    """One request's share of the quota: taken from as the body streams, so a
    refusal comes at the byte that passes it, not after the whole body."""

    def __init__(self, quota: Quota | None):
        self.quota = quota
        self.files_left = self.bytes_left = None
        if quota is not None:
            files, size = quota.used()
            self.files_left = quota.max_files - files if quota.max_files else None
            self.bytes_left = quota.max_bytes - size if quota.max_bytes else None

    def take_file(self) -> None:
        if self.files_left is not None:
            if self.files_left < 1:
                self.quota.check(new_files=1)  # raises, with the current numbers
            self.files_left -= 1

    def take_bytes(self, count: int, wanted: int | None = None) -> None:
        if self.bytes_left is not None:
            self.bytes_left -= count
            if self.bytes_left < 0:
                self.quota.check(new_bytes=wanted if wanted is not None else self.quota.max_bytes)

    def confirm(self) -> None:
        """After storing: a request racing this one may have used the room meanwhile."""
        if self.quota is not None:
            self.quota.check()


def quota() -> Quota | None:
    """The quota of the request's user; None when there is nothing to enforce."""
    user = current_user()
    if user is None or user.admin:
        return None
    max_bytes, max_files = limits_for(user, current_app.config)
    if not max_bytes and not max_files:
        return None
    return Quota(user.id, max_bytes, max_files)

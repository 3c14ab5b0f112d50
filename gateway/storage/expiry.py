"""File expiry: how long a stored file lives, and the reaper that removes it
once its time is up.

A file's lifetime is what its upload asked for (`expires_in`: a form field of
POST /upload, an Upload-Metadata key of tus), else FILE_TTL (0: for ever);
FILE_MAX_TTL bounds what may be asked. An expired file is hidden at once (not
listed; 410 wherever it was served) without waiting for the reaper, which
removes its bytes, thumbnail and record within FILE_REAP_INTERVAL seconds
(404 from then on).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial

from flask import Flask, current_app

from gateway import metrics
from gateway.background import Periodic
from gateway.hookspecs import FILE_EXPIRED
from gateway.metadata.files import FileRepository, FileRow
from gateway.metadata.shares import ShareLinks
from protos.errors import Gone, InvalidInput

log = logging.getLogger("upload.gateway")

FIELD = "expires_in"


def now() -> datetime:
    return datetime.now(timezone.utc)


def duration(seconds: int) -> str:
    """A lifetime as people say it: 31536000 -> '365 days'."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def parse_expires_in(raw: str | None) -> int | None:
    """The seconds an upload asked its file to live; None when it did not ask.
    Raises InvalidInput unless it is a whole number from 1 to FILE_MAX_TTL."""
    if raw is None:
        return None
    maximum = current_app.config["FILE_MAX_TTL"]
    value = raw.strip()
    # The length check keeps int() away from absurdly long digit strings.
    if value.isascii() and value.isdigit() and len(value) <= 12 and 1 <= int(value) <= maximum:
        return int(value)
    shown = raw if len(raw) <= 24 else raw[:24] + "..."
    raise InvalidInput(f"{FIELD} must be a whole number of seconds from 1 to {maximum} "
                       f"({duration(maximum)}), not {shown!r}.")


def expires_at(expires_in: int | None, at: datetime | None = None) -> datetime | None:
    """When a file stored ``at`` (now) ends: ``expires_in`` seconds later when
    the upload asked, else FILE_TTL seconds later; None (never) when FILE_TTL is 0.

    Counted from when the file is stored, not from when its upload began: a
    slow or resumed upload does not arrive already half expired."""
    seconds = expires_in or current_app.config["FILE_TTL"]
    if not seconds:
        return None
    return (at or now()) + timedelta(seconds=seconds)


def is_expired(row: FileRow, at: datetime | None = None) -> bool:
    return row.expires_at is not None and row.expires_at <= (at or now())


def refuse_expired(row: FileRow) -> FileRow:
    """The row, or Gone (410) when its time is up but the reaper has not
    removed it yet: the file existed, and a client should stop asking."""
    if is_expired(row):
        raise Gone("This file has expired.")
    return row


class Reaper:
    """Removes expired files in batches, every ``interval`` seconds."""

    def __init__(self, repo: FileRepository, remove: Callable[[FileRow], bool], interval: float,
                 batch: int = 100, links: ShareLinks | None = None):
        self.repo = repo
        # Expired share links' records go on the same passes (their URLs answer 410 by themselves).
        self.links = links
        # Ingest.remove: the one way a stored file is deleted (DELETE /files/<id> uses it too),
        # which also decides the order of bytes and row; told to report file.expired.
        self.remove = remove
        self.batch = batch
        self._periodic = Periodic("file-reaper", interval, self.reap)

    def reap(self, at: datetime | None = None, owner: str | None = None) -> int:
        """One pass over the files expired at ``at`` (now), only ``owner``'s when
        given; returns how many it removed.

        The pass walks the expired rows in (expires_at, id) order and moves past
        each batch, so a file that cannot be removed (a permission problem, say)
        is logged and retried next pass without holding back the others, and a
        pass ends even while new files keep expiring."""
        at = at or now()
        removed, after = 0, None
        while True:
            rows = self.repo.expired(at, self.batch, after=after, owner=owner)
            for row in rows:
                try:
                    if self.remove(row):
                        removed += 1
                        metrics.FILES_REAPED.inc()
                except Exception:
                    log.warning("could not remove expired file %s; trying again next pass", row.id, exc_info=True)
            if len(rows) < self.batch:
                break
            after = (rows[-1].expires_at, rows[-1].id)
        if removed:
            log.info("removed %d expired file(s)", removed)
        if self.links is not None and owner is None:
            # The periodic pass only: a quota check reaps one user's files, and must
            # not write every expired link of the server each time.
            self.links.purge(at)
        return removed

    def start(self) -> "Reaper":
        self._periodic.start()
        return self

    def stop(self) -> None:
        self._periodic.stop()


def init_app(app: Flask) -> None:
    ex = app.extensions
    ex["file_reaper"] = Reaper(ex["files"], partial(ex["ingest"].remove, event=FILE_EXPIRED),
                               app.config["FILE_REAP_INTERVAL"], links=ex["shares"]).start()

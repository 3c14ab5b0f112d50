"""Thumbnails: made right after an upload when the service answers in time,
filled in later by a background retry when it does not.

A request waits THUMBNAIL_TIMEOUT for thumbnails in all, however many images it
carries: what does not fit is left to the retry pass. A file whose thumbnail
keeps failing for passing reasons is tried again after a growing pause, and
given up after MAX_ATTEMPTS, so a few such files cannot hold up the others."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app, g, has_request_context

from gateway import metrics
from gateway.background import Periodic
from gateway.ingest.services import Services
from gateway.metadata.files import FileRepository, FileRow
from gateway.storage.base import Storage
from gateway.storage.s3 import is_storage_error
from protos.errors import (InsufficientStorage, NotFound, TimedOut, Unavailable, UnsupportedType, UploadError,
                           out_of_space_as_error)
from protos.streaming import read_chunks

log = logging.getLogger("upload.gateway")


class StorageDown(Unavailable):
    """The bucket (STORAGE=s3) could not be reached: a thumbnail waits like one the service could not make."""

    def __init__(self):
        super().__init__("The file storage cannot be reached right now.")


# A thumbnail stream always carries the whole file: large messages cost less
# per byte (and stay well under the 4 MiB message cap).
RENDER_CHUNK = 1024 * 1024
# Faults that may pass: try again later. Anything else (a damaged image, a
# type no renderer handles) will not get better by retrying. A full disk only
# costs the thumbnail: the file itself is already in place.
TRANSIENT = (Unavailable, TimedOut, InsufficientStorage)
# Faults that hold for every pending thumbnail at once: a retry pass stops at them.
STILL_DOWN = (Unavailable, InsufficientStorage)
# Less than this left of a request's thumbnail time: the rest wait for the retry pass.
MIN_WAIT = 0.05
# Passes a file's thumbnail may fail for a passing reason (a timeout) before it is given up;
# between them the pause doubles from THUMBNAIL_RETRY_INTERVAL.
MAX_ATTEMPTS = 5


class Thumbnails:
    def __init__(self, storage: Storage, repo: FileRepository, services: Services, interval: float):
        self.storage = storage
        self.repo = repo
        self.services = services
        self.interval = interval
        self._retries = Periodic("thumbnail-retry", interval, self.retry_pending)
        # file id -> (failed attempts, when to try next, time.monotonic()); this process's own.
        self._waiting: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def wanted(self, mime_type: str, is_image: bool) -> bool:
        if is_image:
            return True
        try:
            return mime_type in self.services.renderable(mime_type)
        except UploadError:
            return False

    def make(self, row: FileRow) -> UploadError | None:
        """Try now (the call itself is repeated at once if the service is
        briefly unavailable); set ``row.thumbnail`` and ``row.thumbnail_status``
        (the caller saves them). Returns the error when there is no thumbnail."""
        error = self._make(row)
        metrics.count_thumbnail(row.thumbnail_status)
        return error

    def _make(self, row: FileRow) -> UploadError | None:
        try:
            there = self.storage.exists("files", row.filename)
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            log.info("thumbnail for %s postponed: the file storage cannot be reached: %s", row.id, exc)
            row.thumbnail, row.thumbnail_status = None, "pending"
            return StorageDown()
        if not there:
            row.thumbnail, row.thumbnail_status = None, "failed"
            return NotFound("The file's bytes are gone.")

        def from_the_start():
            # A file of its own per attempt: gRPC may still be reading a failed
            # attempt's iterator on its own thread when the next one starts.
            source = self.storage.open("files", row.filename)
            if source is not None:
                with source:
                    yield from read_chunks(source, RENDER_CHUNK)

        timeout = None
        deadline = _request_deadline()
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout < MIN_WAIT:
                log.info("thumbnail for %s postponed: its request has waited its thumbnail time", row.id)
                row.thumbnail, row.thumbnail_status = None, "pending"
                return TimedOut("The thumbnail will be made shortly.")
        try:
            reply = self.services.render(from_the_start, row.original_name, row.type, row.size, timeout)
            name = f"{row.id}.{'png' if reply.mime_type == 'image/png' else 'jpg'}"
            self._store(name, reply.data)
        except TRANSIENT as exc:
            log.info("thumbnail for %s postponed: %s", row.id, exc.message)
            row.thumbnail, row.thumbnail_status = None, "pending"
            return exc
        except UnsupportedType as exc:
            # No renderer for it (now): nothing failed, and a later renderer may make one
            # (`flask --app gateway thumbnails backfill`). The list of renderers is read again.
            log.info("no thumbnail for %s: %s", row.id, exc.message)
            self.services.forget_renderers()
            row.thumbnail, row.thumbnail_status = None, "none"
            return exc
        except UploadError as exc:
            log.info("no thumbnail for %s: %s", row.id, exc.message)
            row.thumbnail, row.thumbnail_status = None, "failed"
            return exc
        row.thumbnail, row.thumbnail_status = name, "done"
        return None

    def _store(self, name: str, data: bytes) -> None:
        """Write the thumbnail atomically, every byte of it (a short write on a
        filling disk must not leave a truncated image in place)."""
        with out_of_space_as_error():
            try:
                self.storage.write("thumbnails", name, data)
            except Exception as exc:
                if is_storage_error(exc):
                    raise StorageDown() from exc
                raise

    def retry_pending(self) -> int:
        """One pass over the postponed thumbnails; returns how many were made."""
        made = 0
        for row in self.repo.pending_thumbnails(skip=self._not_due()):
            error = self.make(row)
            if isinstance(error, STILL_DOWN):
                break  # the service is still down or busy, or the disk still full: wait for the next pass
            if row.thumbnail_status == "pending":
                self._try_later(row)  # this one was slow; the others may not be
                continue
            with self._lock:
                self._waiting.pop(row.id, None)
            if not self.repo.set_thumbnail(row.id, row.thumbnail, row.thumbnail_status) and row.thumbnail:
                self.storage.delete("thumbnails", row.thumbnail)  # the file was deleted while rendering
            made += row.thumbnail_status == "done"
        return made

    def backfill(self, include_failed: bool = False, dry_run: bool = False,
                 progress: Callable[[FileRow, str], None] | None = None) -> "Backfill":
        """Thumbnails for stored files that have none although their type now has a renderer
        (stored before it existed, or while the thumbnail service lacked it): status "none",
        and with ``include_failed`` also "failed" (a renderer that got better). Safe while
        gateways serve: each row changes only if its status is still the one read (a file
        deleted or given a thumbnail meanwhile is left as it is), so running it twice does
        nothing the second time. Stops when the service is down or busy, or the disk full:
        what is left keeps its status, for the next run."""
        report = Backfill()
        statuses = ("none", "failed") if include_failed else ("none",)
        renderable = self.services.renderable(fresh=True)  # the list as it is now; UploadError if unreachable
        after = ""
        while True:
            rows = self.repo.without_thumbnails(renderable, statuses, after=after)
            if not rows:
                return report
            after = rows[-1].id
            for row in rows:
                if dry_run:
                    report.count(row, "would render")
                    continue
                was = row.thumbnail_status
                error = self._make(row)  # not counted as an upload's thumbnail (metrics)
                if isinstance(error, STILL_DOWN):
                    report.stopped = error.message
                    return report
                if self.repo.set_thumbnail_if(row.id, was, row.thumbnail, row.thumbnail_status):
                    report.count(row, row.thumbnail_status)
                else:
                    # Deleted, or given a thumbnail elsewhere meanwhile: leave it as it is, and
                    # remove ours unless the row now names the same (deterministic) name.
                    now = self.repo.get(row.id)
                    if row.thumbnail and (now is None or now.thumbnail != row.thumbnail):
                        self.storage.delete("thumbnails", row.thumbnail)
                    report.count(row, "changed meanwhile")
                if progress is not None:
                    progress(row, report.last)

    def _not_due(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            # Forget files not seen for long (deleted meanwhile): they would never be picked again.
            stale = now - 2 * self.interval * 2 ** MAX_ATTEMPTS
            self._waiting = {k: v for k, v in self._waiting.items() if v[1] > stale}
            return [file_id for file_id, (_, due) in self._waiting.items() if due > now]

    def _try_later(self, row: FileRow) -> None:
        with self._lock:
            attempts = self._waiting.get(row.id, (0, 0.0))[0] + 1
            if attempts < MAX_ATTEMPTS:
                self._waiting[row.id] = (attempts, time.monotonic() + self.interval * 2 ** (attempts - 1))
                return
            self._waiting.pop(row.id, None)
        log.warning("no thumbnail for %s: it failed %d times in a row; giving up", row.id, attempts)
        metrics.count_thumbnail("failed")
        self.repo.set_thumbnail(row.id, None, "failed")

    def start(self) -> None:
        self._retries.start()

    def stop(self) -> None:
        self._retries.stop()


class Backfill:
    """What a backfill did: files per outcome ("done", "failed", "pending", "none",
    "changed meanwhile", "would render"), and why it stopped early, if it did."""

    def __init__(self):
        self.outcomes: dict[str, int] = {}
        self.stopped: str | None = None
        self.last = ""

    def count(self, row: FileRow, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self.last = outcome

    def summary(self) -> str:
        if not self.outcomes:
            return "No stored file lacks a thumbnail that can be made now."
        words = {"done": "made", "failed": "failed (damaged, or over the render budget)",
                 "pending": "postponed (to the gateways' retries)", "none": "left without one (no renderer after all)",
                 "changed meanwhile": "changed meanwhile (deleted, or given one elsewhere)",
                 "would render": "would be rendered"}
        return "Thumbnails: " + "; ".join(f"{n} {words.get(k, k)}" for k, n in self.outcomes.items()) + "."


def _request_deadline() -> float | None:
    """When the current request stops waiting for thumbnails (None outside one)."""
    if not has_request_context():
        return None
    if "thumbnail_deadline" not in g:
        g.thumbnail_deadline = time.monotonic() + current_app.config["THUMBNAIL_TIMEOUT"]
    return g.thumbnail_deadline


def init_app(app: Flask) -> None:
    thumbnails = Thumbnails(app.extensions["storage"], app.extensions["files"], app.extensions["services"],
                            app.config["THUMBNAIL_RETRY_INTERVAL"])
    app.extensions["thumbnails"] = thumbnails
    thumbnails.start()


def thumbnails() -> Thumbnails:
    return current_app.extensions["thumbnails"]

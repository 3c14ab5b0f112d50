"""Thumbnails: made right after an upload when the service answers in time,
filled in later by a background retry when it does not."""
from __future__ import annotations

import logging

from flask import Flask, current_app

from gateway import metrics
from gateway.background import Periodic
from gateway.ingest.services import Services
from gateway.metadata.files import FileRepository, FileRow
from gateway.storage.base import Storage
from gateway.storage.s3 import is_storage_error
from protos.errors import InsufficientStorage, NotFound, TimedOut, Unavailable, UploadError, out_of_space_as_error
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


class Thumbnails:
    def __init__(self, storage: Storage, repo: FileRepository, services: Services, interval: float):
        self.storage = storage
        self.repo = repo
        self.services = services
        self._retries = Periodic("thumbnail-retry", interval, self.retry_pending)

    def wanted(self, mime_type: str, is_image: bool) -> bool:
        if is_image:
            return True
        try:
            return mime_type in self.services.renderable()
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

        try:
            reply = self.services.render(from_the_start, row.original_name, row.type, row.size)
            name = f"{row.id}.{'png' if reply.mime_type == 'image/png' else 'jpg'}"
            self._store(name, reply.data)
        except TRANSIENT as exc:
            log.info("thumbnail for %s postponed: %s", row.id, exc.message)
            row.thumbnail, row.thumbnail_status = None, "pending"
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
        for row in self.repo.pending_thumbnails():
            error = self.make(row)
            if isinstance(error, STILL_DOWN):
                break  # the service is still down, or the disk still full: wait for the next pass
            if row.thumbnail_status == "pending":
                continue  # this one was slow; the others may not be
            if not self.repo.set_thumbnail(row.id, row.thumbnail, row.thumbnail_status) and row.thumbnail:
                self.storage.delete("thumbnails", row.thumbnail)  # the file was deleted while rendering
            made += row.thumbnail_status == "done"
        return made

    def start(self) -> None:
        self._retries.start()

    def stop(self) -> None:
        self._retries.stop()


def init_app(app: Flask) -> None:
    thumbnails = Thumbnails(app.extensions["storage"], app.extensions["files"], app.extensions["services"],
                            app.config["THUMBNAIL_RETRY_INTERVAL"])
    app.extensions["thumbnails"] = thumbnails
    thumbnails.start()


def thumbnails() -> Thumbnails:
    return current_app.extensions["thumbnails"]

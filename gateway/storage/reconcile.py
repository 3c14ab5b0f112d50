"""Reconcile: make the disk and the metadata agree again after a crash.

Writes are ordered so that a crash never lists a file without its bytes
(bytes are placed before the row is written, the row is deleted before the
bytes), but a crash can still leave things behind: temp files of uploads that
were cut off, partial tus bytes whose upload was forgotten, bytes placed just
before the row would have been written, thumbnails of rows that never came.
A power cut without UPLOAD_FSYNC can also leave a row whose bytes were lost or
cut short. Reconcile removes each of these and says what it did. It runs at
start-up, every RECONCILE_INTERVAL seconds, and from `flask reconcile`.

Only things older than ORPHAN_AGE are touched on disk: an upload in flight in
another process (several gateways, one DATA_DIR) has fresh files, since every
write moves a file's mtime and the rename into place keeps it.

With STORAGE=s3 the same pass runs over the bucket: objects under files/ and
thumbnails/ stand for the stored files, and an incomplete multipart upload is
the temp file of an upload cut off by a crash, aborted once its newest part
is older than ORPHAN_AGE. A tus upload still collecting (its multipart
upload, its tail objects) is kept like its local partial file would be.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from gateway import metrics
from gateway.background import Periodic, my_turn
from gateway.metadata.files import FileRepository, FileRow
from gateway.storage.base import Storage

log = logging.getLogger("upload.gateway")


class UploadsInProgress(Protocol):
    """What reconcile asks of the tus store (gateway/tus/store.py), which sits
    above storage: the stored names that unfinished uploads still write to."""

    def unfinished_filenames(self) -> set[str]: ...


@dataclass
class Report:
    temp_removed: list[str] = field(default_factory=list)        # cut-off uploads and thumbnails
    partial_removed: list[str] = field(default_factory=list)     # tus bytes with no upload left
    orphan_bytes_removed: list[str] = field(default_factory=list)  # stored files without a row
    orphan_thumbnails_removed: list[str] = field(default_factory=list)
    rows_without_bytes: list[str] = field(default_factory=list)  # file ids whose bytes are gone
    rows_damaged: list[str] = field(default_factory=list)        # file ids whose bytes are not theirs

    def counts(self) -> dict[str, int]:
        return {name: len(value) for name, value in vars(self).items()}

    def changed(self) -> bool:
        return any(self.counts().values())

    def summary(self) -> str:
        parts = [f"{count} {name.replace('_', ' ')}" for name, count in self.counts().items() if count]
        return "reconcile: " + (", ".join(parts) if parts else "nothing to repair")


class Reconciler:
    def __init__(self, storage: Storage, repo: FileRepository, tus: UploadsInProgress, orphan_age: float):
        self.storage, self.repo, self.tus = storage, repo, tus
        self.orphan_age = orphan_age

    def run(self, verify: bool = False, dry_run: bool = False) -> Report:
        """One pass. ``verify`` also re-hashes every stored file (slow: reads
        everything); ``dry_run`` reports without changing anything."""
        report = Report()
        cutoff = time.time() - self.orphan_age
        # The disk is listed before the rows are read: a file placed after the
        # listing is not looked at, and a row written before the read is seen.
        files = list(self.storage.entries("files"))
        thumbnails = list(self.storage.entries("thumbnails"))
        unfinished = self.tus.unfinished_filenames()
        rows = {row.filename: row for row in self.repo.each()}
        referenced = {row.thumbnail for row in rows.values() if row.thumbnail}

        for entry in files:
            if entry.mtime > cutoff:
                continue
            if entry.filename in unfinished:
                # STORAGE=s3: a tus upload's multipart upload, or its bytes completed at
                # their final key while the pipeline could not take them yet: still wanted.
                continue
            if entry.kind == "temp":
                self._remove(entry, report.temp_removed, entry.filename, dry_run)
            elif entry.kind == "partial" and entry.filename[1:-len(".part")] not in unfinished:
                self._remove(entry, report.partial_removed, entry.filename, dry_run)
            elif entry.kind == "stored" and entry.filename not in rows \
                    and self.repo.by_filename(entry.filename) is None:  # not written meanwhile
                self._remove(entry, report.orphan_bytes_removed, entry.filename, dry_run)
        for entry in thumbnails:
            if entry.mtime > cutoff:
                continue
            if entry.kind == "temp":
                self._remove(entry, report.temp_removed, entry.filename, dry_run)
            elif entry.kind == "stored" and entry.filename not in referenced:
                self._remove(entry, report.orphan_thumbnails_removed, entry.filename, dry_run)

        sizes = {entry.filename: entry.size for entry in files if entry.kind == "stored"}
        for name, row in rows.items():
            size = sizes.get(name)
            if size is None and self.storage.exists("files", name):
                continue  # placed after the listing: a row and bytes that agree
            if size is None:
                self._drop_row(row, report.rows_without_bytes, dry_run)
            elif size != row.size or (verify and self._sha256(name) != row.sha256):
                self._drop_row(row, report.rows_damaged, dry_run)

        if report.changed():
            log.warning("%s%s", report.summary(), " (dry run: nothing changed)" if dry_run else "")
            if not dry_run:
                metrics.count_reconciled(report.counts())
        return report

    def _remove(self, entry, into: list[str], name: str, dry_run: bool) -> None:
        into.append(name)
        if not dry_run:
            self.storage.remove_entry(entry)

    def _drop_row(self, row: FileRow, into: list[str], dry_run: bool) -> None:
        """A listed file whose bytes are missing or wrong: served, it would be
        a lie, so its record goes (and whatever bytes and thumbnail it has)."""
        log.error("file %s (%s): its bytes are missing or damaged; its record is removed",
                  row.id, row.original_name)
        into.append(row.id)
        if not dry_run:
            self.repo.delete(row.id)
            self.storage.delete("files", row.filename)
            if row.thumbnail:
                self.storage.delete("thumbnails", row.thumbnail)

    def _sha256(self, name: str) -> str:
        source = self.storage.open("files", name)
        if source is None:
            return ""
        digest = hashlib.sha256()
        with source:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
        return digest.hexdigest()


def init_app(app) -> None:
    ex = app.extensions
    ex["reconciler"] = Reconciler(ex["storage"], ex["files"], ex["tus"], app.config["ORPHAN_AGE"])


def start(app) -> None:
    """When the gateway starts serving (not for every `flask` command, whose
    --dry-run must find things as they are): a pass now, then every
    RECONCILE_INTERVAL seconds."""
    reconciler = app.extensions["reconciler"]
    if app.config["RECONCILE_ON_START"] and my_turn():
        reconciler.run()
    app.extensions["reconcile_timer"] = Periodic(
        "reconcile", app.config["RECONCILE_INTERVAL"], reconciler.run).start()

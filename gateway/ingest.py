"""The one path every upload takes: stream to a temp file (hashing on the
way) while the validator sees the head, then rename into place, thumbnail,
and only then the metadata row.

A refused or failed upload leaves nothing: its temp file is removed and no
row is written. The bytes are written once and never held whole in memory.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from google.protobuf.json_format import MessageToDict

from gateway.db import FileRepository, FileRow
from gateway.names import extension, sanitize
from protos.text import human_size
from gateway.services import Services
from gateway.storage import LocalStorage, new_id
from gateway.thumbnails import Thumbnails
from protos.errors import Refused


class Upload:
    """One file on its way in: ``write()`` the bytes, then ``finish()`` or ``abort()``."""

    def __init__(self, pipeline: "Ingest", original_name: str, declared_type: str = ""):
        self.pipeline = pipeline
        self.original_name = sanitize(original_name)
        self.id = new_id()
        ext = extension(self.original_name)
        self.filename = f"{self.id}.{ext}" if ext else self.id
        self.size = 0
        self._sha256 = hashlib.sha256()
        # One policy for the page, the validator and this check: the validator's.
        policy = pipeline.services.policy()
        self.max_size = policy.max_file_size
        self._temp = pipeline.storage.create_temp("files", self.filename)
        try:
            self._validation = pipeline.services.start_validation(
                self.original_name, declared_type, policy.head_bytes)
        except BaseException:
            pipeline.storage.discard(self._temp)
            raise

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_size:
            raise Refused("file_too_large", f"The file is larger than the {human_size(self.max_size)} limit.",
                          self.original_name)
        self._temp.handle.write(chunk)
        self._sha256.update(chunk)
        self._validation.feed(chunk)
        verdict = self._validation.early_verdict()
        if verdict is not None and not verdict.accepted:
            self._refuse(verdict)

    def _refuse(self, verdict) -> None:
        reason = verdict.reasons[0]
        raise Refused(reason.code, reason.message, self.original_name)

    def finish(self, expires_at: datetime | None = None) -> FileRow:
        try:
            verdict = self._validation.finish(self.size, self.pipeline.validator_timeout)
            if not verdict.accepted:
                self._refuse(verdict)
            self.pipeline.storage.commit(self._temp)
        except BaseException:
            self.abort()
            raise
        row = FileRow(
            id=self.id,
            filename=self.filename,
            original_name=self.original_name,
            size=self.size,
            type=verdict.detected_type,
            is_image=verdict.is_image,
            width=verdict.width or None,
            height=verdict.height or None,
            sha256=self._sha256.hexdigest(),
            thumbnail=None,
            thumbnail_status="none",
            uploaded_at=datetime.now(timezone.utc),
            expires_at=expires_at,
            verdict=json.dumps(MessageToDict(verdict, preserving_proto_field_name=True)),
        )
        try:
            if self.pipeline.thumbnails.wanted(row.type, row.is_image):
                self.pipeline.thumbnails.make(row)
            self.pipeline.repo.add(row)
        except BaseException:
            self.pipeline.storage.delete("files", self.filename)
            if row.thumbnail:
                self.pipeline.storage.delete("thumbnails", row.thumbnail)
            raise
        return row

    def abort(self) -> None:
        self._validation.cancel()
        self.pipeline.storage.discard(self._temp)


class Ingest:
    def __init__(self, storage: LocalStorage, repo: FileRepository, services: Services,
                 thumbnails: Thumbnails, config: dict):
        self.storage = storage
        self.repo = repo
        self.services = services
        self.thumbnails = thumbnails
        self.validator_timeout = config["VALIDATOR_TIMEOUT"]

    def start(self, original_name: str, declared_type: str = "") -> Upload:
        return Upload(self, original_name, declared_type)

    def remove(self, row: FileRow) -> None:
        """Delete a stored file: the row first, so it is never listed without bytes."""
        self.repo.delete(row.id)
        self.storage.delete("files", row.filename)
        if row.thumbnail:
            self.storage.delete("thumbnails", row.thumbnail)


def init_app(app) -> None:
    ex = app.extensions
    ex["ingest"] = Ingest(ex["storage"], ex["files"], ex["services"], ex["thumbnails"], app.config)


def ingest() -> Ingest:
    from flask import current_app

    return current_app.extensions["ingest"]

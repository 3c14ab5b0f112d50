"""The one path every upload takes: bytes stored beside their final place (a
temp file on disk, or a multipart upload to S3), the validator's verdict on
their head and size, transforms (IMAGE_METADATA: gateway.ingest.transform),
commit into place, thumbnail, and only then the metadata row.

Two ways in, one way through: ``start()`` streams a multipart part to a temp
file while the validator sees its head (every byte, when the policy says
``whole_file``: a rule such as the ClamAV one reads them all); ``adopt()``
takes a file that is already complete on disk (a finished tus upload),
``adopt_stored()`` one already complete in the bucket (the same on
STORAGE=s3), with the verdict its upload's own stream gave, else judged here.
All end in ``_accept()``. A refused or failed upload leaves nothing: no bytes
in place, no row.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from google.protobuf.json_format import MessageToDict

from gateway import metrics
from gateway.hookspecs import FILE_DELETED
from gateway.ingest.hashing import StreamHasher
from gateway.ingest.names import extension, sanitize
from gateway.ingest.services import Services
from gateway.ingest.thumbnails import Thumbnails
from gateway.ingest.transform import Transformed, Transformer
from gateway.ingest.verdicts import refusal, too_large
from gateway.metadata.files import FileRepository, FileRow
from gateway.storage.base import Storage, new_id
from gateway.storage.expiry import is_expired
from protos.errors import InsufficientStorage, Refused, out_of_space_as_error
from protos.streaming import write_all
from protos.text import human_size

log = logging.getLogger("upload.gateway")


def stored_name(file_id: str, original_name: str) -> str:
    ext = extension(original_name)
    return f"{file_id}.{ext}" if ext else file_id


class DataDisk:
    """Where upload bytes are written (POST /upload and tus): every byte of each
    piece (a short write on a filling disk is finished or fails, never lost),
    a full disk becomes InsufficientStorage, and DISK_RESERVE bytes are left
    free for what must still work when uploads cannot: the database (SQLite
    lives in DATA_DIR by default), thumbnails, deletions."""

    # The disk is asked how much is free (statvfs) only this often, or sooner
    # near the reserve: asked on every 256 KiB piece it cost as much as the write.
    RECHECK_EVERY = 32 * 1024 * 1024

    def __init__(self, root: str | os.PathLike, reserve: int):
        self.root = root
        self.reserve = reserve
        # Room left above the reserve as last measured, less what was written since (an
        # estimate shared by all uploads: a race only makes the next measurement sooner).
        self._room = 0
        self._since_check = 0

    def free(self) -> int:
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def write(self, handle, data: bytes) -> None:
        if self.reserve > 0:
            self._room -= len(data)
            self._since_check += len(data)
            if self._room < self.RECHECK_EVERY or self._since_check >= self.RECHECK_EVERY:
                self._room, self._since_check = self.free() - self.reserve - len(data), 0
                if self._room < 0:
                    raise InsufficientStorage()
        with out_of_space_as_error():
            write_all(handle, data)


class Upload:
    """One streamed file on its way in: ``write()`` the bytes, then ``finish()`` or ``abort()``."""

    def __init__(self, pipeline: "Ingest", original_name: str, declared_type: str = "",
                 owner_id: str | None = None):
        self.pipeline = pipeline
        self.owner_id = owner_id
        self.original_name = sanitize(original_name)
        self.id = new_id()
        self.filename = stored_name(self.id, self.original_name)
        self.size = 0
        self._sha256 = StreamHasher()
        # One policy for the page, the validator and this check: the validator's.
        policy = pipeline.services.policy()
        self.max_size = policy.max_file_size
        self._head_bytes = policy.head_bytes
        # A rule reads every byte: the stream carries all of them, and the verdict comes after the last.
        self._whole_file = policy.whole_file
        self._declared_type = declared_type
        # The validator is called once the first bytes are here: a stream fed as
        # they arrive, or, for a file that came in one piece, one Check call at
        # finish() with all of it (a quarter of a stream's cost per file; with
        # whole_file, only when that piece fits in the head Check carries).
        self._validation = None
        self._whole: bytes | None = None
        self._temp = pipeline.storage.create_temp("files", self.filename)
        self._started = time.perf_counter()

    def write(self, chunk: bytes, last: bool = False) -> None:
        """Store the next bytes; ``last``: nothing follows them."""
        self.size += len(chunk)
        if self.size > self.max_size:
            raise too_large(self.max_size, self.original_name)
        # Hashed on a helper thread while it is written and the next piece received:
        # ``chunk`` may be a view of a buffer its reader reuses after ``release()``.
        self._sha256.submit(chunk)
        self.pipeline.write_temp(self._temp, chunk)
        if self._validation is None and self._whole is None and last and (
                not self._whole_file or len(chunk) <= self._head_bytes):
            self._whole = bytes(chunk[:self._head_bytes])
            return
        if self._validation is None:
            self._validation = self.pipeline.services.start_validation(
                self.original_name, self._declared_type, self._head_bytes, whole=self._whole_file)
        self._validation.feed(chunk)
        verdict = self._validation.early_verdict()
        if verdict is not None and not verdict.accepted:
            raise refusal(verdict, self.original_name)  # its size is not known yet

    def release(self, buffer) -> None:
        """``buffer`` is about to be reused: wait if its bytes are still being hashed."""
        self._sha256.release(buffer)

    def finish(self, expires_at: datetime | None = None) -> FileRow:
        received = time.perf_counter()
        metrics.RECEIVE.observe(received - self._started)
        try:
            if self._validation is not None:
                verdict = self._validation.finish(self.size, self.pipeline.validator_timeout)
            else:
                verdict = self.pipeline.services.check(self.original_name, self._declared_type,
                                                       self._whole or b"", self.size)
            judged = time.perf_counter()
            metrics.VALIDATE.observe(judged - received)
            if not verdict.accepted:
                raise refusal(verdict, self.original_name, self.size)
            transformed = self.pipeline.transform_temp(self, verdict)
            self.pipeline.storage.commit(self._temp)
            metrics.STORE.observe(time.perf_counter() - judged)
        except BaseException:
            self.abort()
            raise
        size, sha256 = self.size, self._sha256.hexdigest()
        if transformed is not None:
            size, sha256 = transformed.size, transformed.sha256
        return self.pipeline._accept(self.id, self.filename, self.original_name, size, sha256, verdict,
                                     expires_at, self.owner_id, transformed=transformed)

    def abort(self) -> None:
        if self._validation is not None:
            self._validation.cancel()
        self._sha256.close()
        self.pipeline.storage.discard(self._temp)


class Ingest:
    def __init__(self, storage: Storage, repo: FileRepository, services: Services,
                 thumbnails: Thumbnails, config: dict):
        self.storage = storage
        self.repo = repo
        self.services = services
        self.thumbnails = thumbnails
        self.validator_timeout = config["VALIDATOR_TIMEOUT"]
        # DATA_DIR's disk, where STORAGE=local keeps the files and tus uploads in progress.
        self.disk = DataDisk(config["DATA_DIR"], config["DISK_RESERVE"])
        if storage.local:
            self.write_temp = lambda temp, data: self.disk.write(temp.handle, data)
        else:
            self.write_temp = storage.write_temp
        self.transformer = Transformer(services, storage, self.write_temp, config)
        self.s3_part_size = config.get("S3_PART_SIZE", 0)

    def transform_temp(self, upload: Upload, verdict) -> Transformed | None:
        """IMAGE_METADATA before commit (gateway.ingest.transform). When the upload
        changes, its temp is discarded and ``upload._temp`` becomes the new bytes'."""
        source = self.storage.read_temp(upload._temp)
        if source is None:
            self._cannot_transform(upload, verdict)
        if source is None or not self.transformer.wanted(verdict.detected_type, verdict.is_image, source):
            return None
        transformed = self.transformer.apply(source, upload.filename, upload.original_name, verdict.detected_type,
                                             upload.size, upload._sha256.hexdigest())
        if transformed is not None:
            self.storage.discard(upload._temp)
            upload._temp = transformed.temp
        return transformed

    def _cannot_transform(self, upload: Upload, verdict) -> None:
        """STORAGE=s3, and the file outgrew one part: its bytes are parts of an unfinished
        multipart upload, which cannot be read back. A file a transform would act on is never
        stored without it: refused."""
        covered = self.transformer.covers(verdict.detected_type)
        if covered is False or (covered is None and not verdict.is_image):
            return
        limit = human_size(self.s3_part_size)
        if self.transformer.acts_for_a_plugin(verdict.detected_type):
            raise Refused("transform_too_large",
                          f"On this server's S3 storage a file of this type larger than {limit} (S3_PART_SIZE) "
                          "cannot be processed before it is stored, so it was not stored. Upload it with tus.",
                          upload.original_name)
        raise Refused("image_metadata_too_large",
                      f"On this server's S3 storage an image larger than {limit} (S3_PART_SIZE) cannot have its "
                      "metadata removed before it is stored, so it was not stored. Upload it with tus, or remove "
                      "its metadata first.", upload.original_name)

    def _transform_file(self, open_chunks, filename: str, original_name: str, verdict, size: int,
                        sha256: str) -> Transformed | None:
        if not self.transformer.wanted(verdict.detected_type, verdict.is_image, open_chunks):
            return None
        return self.transformer.apply(open_chunks, filename, original_name, verdict.detected_type, size, sha256)

    def start(self, original_name: str, declared_type: str = "", owner_id: str | None = None) -> Upload:
        return Upload(self, original_name, declared_type, owner_id)

    def check_head(self, original_name: str, declared_type: str, head: bytes, size: int) -> bool:
        """Judge a file from its head and its announced size before the rest
        has arrived. Raises Refused if the rules refuse it; returns whether
        they could decide (False: a rule wanted more of the head than this)."""
        original_name = sanitize(original_name)
        verdict = self.services.check(original_name, declared_type, head, size, declared_size=size)
        if not verdict.accepted and not verdict.head_incomplete:
            raise refusal(verdict, original_name, size)
        return not verdict.head_incomplete

    def _judge_stored(self, policy, original_name: str, declared_type: str, head: bytes, size: int,
                      open_chunks) -> object:
        """The verdict on a complete stored file that no stream judged as it arrived: its
        head and size in one Check; or, when a rule reads every byte (the policy's
        ``whole_file``) and the head is not all of it, the whole file sent again from
        storage (``open_chunks()`` gives its bytes)."""
        with metrics.timed(metrics.VALIDATE):
            if policy.whole_file and size > len(head):
                return self.services.validate_stored(original_name, declared_type, open_chunks, size)
            return self.services.check(original_name, declared_type, head, size)

    def adopt(self, file_id: str, path: Path, original_name: str, declared_type: str,
              expires_at: datetime | None = None, owner_id: str | None = None,
              sha256: str | None = None, verdict=None) -> FileRow:
        """Store a complete file that is already on disk at ``path`` (beside
        its final place: a finished tus upload on STORAGE=local; on s3 see
        ``adopt_stored``). With its ``sha256`` known (hashed as it arrived),
        only the head the validator needs is read; else the whole file is.
        ``verdict``: the one its upload's Validate stream gave on every byte (a
        whole-file rule in force); without it the file is judged here. Raises
        Refused (the file at ``path`` is left for the caller to remove)."""
        original_name = sanitize(original_name)
        filename = stored_name(file_id, original_name)
        policy = self.services.policy()
        digest = None
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            head = source.read(policy.head_bytes)
            if sha256 is None:
                source.seek(0)
                digest = hashlib.file_digest(source, "sha256")
        if size > policy.max_file_size:
            raise too_large(policy.max_file_size, original_name)
        if verdict is None:
            verdict = self._judge_stored(policy, original_name, declared_type, head, size, lambda: _file_chunks(path))
        sha256 = sha256 or digest.hexdigest()
        if not verdict.accepted:
            raise refusal(verdict, original_name, size)
        transformed = self._transform_file(lambda: _file_chunks(path), filename, original_name, verdict, size,
                                           sha256)
        if transformed is not None:
            # The new bytes go into place; the upload's stay at ``path`` until the row is
            # written (if that fails, the upload can be finished again from them).
            try:
                with metrics.timed(metrics.STORE):
                    self.storage.commit(transformed.temp)
            except BaseException:
                self.storage.discard(transformed.temp)
                raise
            row = self._accept(file_id, filename, original_name, transformed.size, transformed.sha256, verdict,
                               expires_at, owner_id, transformed=transformed)
            path.unlink(missing_ok=True)
            return row
        # Placed bytes keep their mtime, and a resumed upload's last write may be old:
        # made fresh, reconcile cannot take them for an orphan before their row is written.
        # (Bytes placed in S3 are a new object, as fresh as can be.)
        os.utime(path)
        with metrics.timed(metrics.STORE):
            self.storage.place(path, "files", filename)
        return self._accept(file_id, filename, original_name, size, sha256, verdict, expires_at,
                            owner_id, restore_to=path)

    def adopt_stored(self, file_id: str, filename: str, original_name: str, declared_type: str,
                     expires_at: datetime | None = None, owner_id: str | None = None,
                     sha256: str | None = None, verdict=None) -> FileRow:
        """Accept a complete file already at its final place in the storage (a
        finished tus upload on STORAGE=s3). Without its ``sha256`` the whole
        object is read back to hash it; without a ``verdict`` (see ``adopt``)
        it is judged here. Raises Refused (the object is left for the caller to
        remove); if the thumbnail or the row fails, the object stays too, so
        that the upload can be finished again. A transform's bytes are stored as
        a file of their own id (the row's, not ``file_id``)."""
        original_name = sanitize(original_name)
        if filename != stored_name(file_id, original_name):
            raise ValueError(f"{filename!r} is not the stored name of {file_id} ({original_name!r})")
        # A transform's bytes are stored under an id derived from the upload's, not drawn, so
        # that finishing it again (a HEAD after a crash that came between the record and the
        # upload's own state) finds the file stored then instead of storing it a second time.
        transformed_id = hashlib.sha256(f"transformed:{file_id}".encode()).hexdigest()[:32]
        if (done := self.repo.get(transformed_id)) is not None:
            self._forget_upload_object(filename)
            return done
        policy = self.services.policy()
        stat = self.storage.stat("files", filename)
        if stat is None:
            raise FileNotFoundError(filename)
        size = stat.size
        if size > policy.max_file_size:
            raise too_large(policy.max_file_size, original_name)
        head = b""
        source = self.storage.open("files", filename)
        with source:
            while len(head) < min(size, policy.head_bytes):
                chunk = source.read(min(size, policy.head_bytes) - len(head))
                if not chunk:
                    break
                head += chunk
            if sha256 is None:
                digest = hashlib.sha256(head)
                while chunk := source.read(1024 * 1024):
                    digest.update(chunk)
                sha256 = digest.hexdigest()

        def from_the_start():
            with self.storage.open("files", filename) as stored:
                while chunk := stored.read(1024 * 1024):
                    yield chunk

        if verdict is None:
            verdict = self._judge_stored(policy, original_name, declared_type, head, size, from_the_start)
        if not verdict.accepted:
            raise refusal(verdict, original_name, size)

        # The upload's bytes are already the object, under the file's name. New bytes from a
        # transform go under a name of their own (a file id of their own): written over the upload's,
        # a failure before the row would leave an upload whose bytes are gone, never to be
        # finished. The upload's object goes once the row is written (a crash before that
        # leaves it to reconcile, as an orphan of an ended upload).
        transformed_name = stored_name(transformed_id, original_name)
        transformed = self._transform_file(from_the_start, transformed_name, original_name, verdict, size, sha256)
        if transformed is not None:
            try:
                self.storage.commit(transformed.temp)
            except BaseException:
                self.storage.discard(transformed.temp)
                raise
            row = self._accept(transformed_id, transformed_name, original_name, transformed.size,
                               transformed.sha256, verdict, expires_at, owner_id, transformed=transformed)
            self._forget_upload_object(filename)
            return row
        return self._accept(file_id, filename, original_name, size, sha256, verdict, expires_at,
                            owner_id, keep_on_failure=True)

    def _forget_upload_object(self, filename: str) -> None:
        """The upload's own object, once its transformed bytes are a stored file."""
        try:
            self.storage.delete("files", filename)
        except Exception as exc:  # the file is stored: the upload's copy is reconcile's to remove
            log.warning("could not delete %s after storing its transformed bytes: %s", filename, exc)

    def _accept(self, file_id: str, filename: str, original_name: str, size: int, sha256: str,
                verdict, expires_at: datetime | None, owner_id: str | None,
                restore_to: Path | None = None, keep_on_failure: bool = False,
                transformed: Transformed | None = None) -> FileRow:
        """The bytes are in place and accepted: thumbnail, then the row. If that
        fails, the bytes go: deleted, or moved back to ``restore_to`` (a
        finished tus upload's bytes, so its next HEAD can finish it again).
        ``transformed``: the stored bytes are a transform's (``size`` and ``sha256``
        are theirs); the audit (the row's verdict JSON) says what was removed."""
        audit = MessageToDict(verdict, preserving_proto_field_name=True)
        if transformed is not None:
            audit["transform"] = transformed.audit
        row = FileRow(
            id=file_id,
            filename=filename,
            original_name=original_name,
            size=size,
            type=verdict.detected_type,
            is_image=verdict.is_image,
            width=verdict.width or None,
            height=verdict.height or None,
            sha256=sha256,
            thumbnail=None,
            thumbnail_status="none",
            uploaded_at=datetime.now(timezone.utc),
            expires_at=expires_at,
            verdict=json.dumps(audit),
            owner_id=owner_id,
        )
        try:
            if self.thumbnails.wanted(row.type, row.is_image):
                with metrics.timed(metrics.THUMBNAIL):
                    self.thumbnails.make(row)
            with metrics.timed(metrics.DB):
                self.repo.add(row)
        except BaseException:
            if restore_to is not None:
                os.replace(self.storage.path("files", filename), restore_to)
            elif not keep_on_failure:
                self.storage.delete("files", filename)
            if row.thumbnail:
                self.storage.delete("thumbnails", row.thumbnail)
            raise
        return row

    def remove(self, row: FileRow, event: str = FILE_DELETED) -> bool:
        """Delete a stored file (DELETE /files/<id> and the expiry reaper); False
        when its row was already gone. Deleting what is already gone is fine.
        ``event``: what the row's deletion reports to plugins (file.deleted, or
        file.expired from the reaper), in the same transaction.

        A live file loses its row first: a crash in between leaves unlisted
        bytes, never a listed file without bytes. An expired file is already
        unlisted and answers 410 everywhere, so its bytes go first: a crash in
        between leaves its row for the reaper's next pass, instead of bytes
        that nothing would ever delete (an expired file must really go)."""
        if is_expired(row):
            self._delete_bytes(row)
        removed = self.repo.delete(row.id, event)
        # The row as it was deleted: a thumbnail made meanwhile is named there.
        self._delete_bytes(removed or row)
        return removed is not None

    def _delete_bytes(self, row: FileRow) -> None:
        self.storage.delete("files", row.filename)
        if row.thumbnail:
            self.storage.delete("thumbnails", row.thumbnail)


def _file_chunks(path: Path):
    with open(path, "rb") as source:
        while chunk := source.read(1024 * 1024):
            yield chunk


def init_app(app) -> None:
    ex = app.extensions
    ex["ingest"] = Ingest(ex["storage"], ex["files"], ex["services"], ex["thumbnails"], app.config)


def ingest() -> Ingest:
    from flask import current_app

    return current_app.extensions["ingest"]

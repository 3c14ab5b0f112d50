"""POST /upload: multipart bodies parsed as a stream, each file part written
once to its temp file as it arrives."""
from __future__ import annotations

import logging
import time

from flask import Blueprint, current_app, jsonify, request, url_for
from werkzeug.sansio.multipart import Data, Epilogue, Field, File

from gateway import metrics
from gateway.auth.identity import owner_id
from gateway.auth.quotas import Budget, quota
from gateway.errors import error_response
from gateway.http.records import record
from gateway.ingest.body import BodyReader, drain_then_close
from gateway.ingest.multipart import BUFFER_SIZE, MultipartReader
from gateway.ingest.pipeline import Upload, ingest
from gateway.ingest.verdicts import too_large
from gateway.ingest.services import services
from gateway.metadata.files import repository
from gateway.storage.expiry import FIELD as EXPIRES_IN
from gateway.storage.expiry import expires_at, parse_expires_in
from protos.errors import InvalidInput, Refused, UploadError, out_of_space_as_error

log = logging.getLogger("upload.gateway")
bp = Blueprint("uploads", __name__)

# Small form fields (expires_in...) are kept in memory; anything bigger is abuse.
MAX_FIELD_BYTES = 4096
MAX_PARTS = 100
# Multipart headers and boundaries around the files: a Content-Length over the
# remaining quota by more than this cannot fit, whatever the parts hold.
FRAMING_ALLOWANCE = 64 * 1024


def _boundary() -> bytes:
    if request.mimetype != "multipart/form-data":
        raise InvalidInput("Send the file as multipart/form-data, in a field named 'file'.")
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise InvalidInput("The multipart body has no valid boundary.")
    return boundary.encode("latin-1", errors="replace")


class _Form:
    """Reads the multipart stream; stores each `file` part through the ingest pipeline."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self.stored = []
        self.fields: dict[str, str] = {}
        self.upload: Upload | None = None
        self._field: tuple[str, bytearray] | None = None
        # What the form's expires_in asked; None: FILE_TTL.
        self.expires_in: int | None = None

    def handle(self, event) -> None:
        if isinstance(event, File):
            if event.name != "file":
                return  # other file fields: their data is dropped
            if not event.filename.strip():
                raise InvalidInput("A file part has an empty file name.")
            self.budget.take_file()
            self.upload = ingest().start(event.filename, event.headers.get("content-type", ""), owner_id())
        elif isinstance(event, Field):
            self._field = (event.name, bytearray())
        elif isinstance(event, Data):
            self._data(event)

    def _data(self, event: Data) -> None:
        if self.upload is not None:
            self.budget.take_bytes(len(event.data), self.upload.size + len(event.data))
            self.upload.write(event.data, last=not event.more_data)
            if not event.more_data:
                upload, self.upload = self.upload, None
                self.stored.append(upload.finish(expires_at(self.expires_in)))
                self.budget.confirm()
        elif self._field is not None:
            name, value = self._field
            value += event.data
            if len(value) > MAX_FIELD_BYTES:
                raise InvalidInput(f"The form field {name!r} is too long.")
            if not event.more_data:
                text = value.decode("utf-8", errors="replace")
                if name == EXPIRES_IN:
                    self._expire(text)
                self.fields[name] = text
                self._field = None

    def _expire(self, raw: str) -> None:
        """expires_in applies to every file of the request, wherever it stands:
        files stored before it arrived get it now (all are removed if it is bad).
        Before the files, a bad one is refused before any file is started."""
        if EXPIRES_IN in self.fields:
            raise InvalidInput(f"The form field {EXPIRES_IN!r} is given more than once.")
        self.expires_in = parse_expires_in(raw)
        if self.stored:
            at = expires_at(self.expires_in)
            repository().set_expires_at([row.id for row in self.stored], at)
            for row in self.stored:
                row.expires_at = at

    def release(self, buffer) -> None:
        if self.upload is not None:
            self.upload.release(buffer)

    def rollback(self) -> None:
        if self.upload is not None:
            self.upload.abort()
        for row in self.stored:
            ingest().remove(row)


def _too_large(request_limit: int) -> Refused:
    """A body over MAX_REQUEST_SIZE, told in terms of the file limit people know."""
    try:
        return too_large(services().policy().max_file_size)
    except UploadError:
        return too_large(request_limit)


@bp.post("/upload")
def upload():
    config = current_app.config
    limit = config["MAX_REQUEST_SIZE"]
    # Generous: a client may still be sending a body we refused; reading it lets it see our answer.
    drain_limit = 2 * limit
    if request.content_length is not None and request.content_length > limit:
        refusal = _too_large(limit)
        metrics.count_failure(refusal)  # refused before its body, a refusal all the same
        return drain_then_close(error_response(refusal), drain_limit)

    started = time.perf_counter()
    form = None
    try:
        boundary = _boundary()
        budget = Budget(quota())
        if budget.bytes_left is not None and (request.content_length or 0) > budget.bytes_left + FRAMING_ALLOWANCE:
            budget.take_bytes(request.content_length - FRAMING_ALLOWANCE, request.content_length - FRAMING_ALLOWANCE)
        form = _Form(budget)
        body = BodyReader(limit, lambda: _too_large(limit))
        finished = False
        # A full disk anywhere on the way (temp file, its bytes, the rename, the
        # row) is a 507, and the rollback below leaves nothing. (A thumbnail that
        # does not fit is only postponed: gateway/ingest/thumbnails.py.)
        with out_of_space_as_error():
            # A small body needs no 1 MiB buffer (the reader keeps a floor for headers).
            size = min(BUFFER_SIZE, (request.content_length or BUFFER_SIZE) + 1)
            for event in MultipartReader(body, boundary, max_parts=MAX_PARTS, buffer_size=size,
                                         before_reuse=form.release):
                if isinstance(event, Epilogue):
                    finished = True
                    break
                form.handle(event)
        if form.upload is not None or not finished:
            raise InvalidInput("The multipart body ended before its closing boundary.")
        if not form.stored:
            raise InvalidInput("No file was sent: put it in a multipart field named 'file'.")
    except UploadError as error:
        if form is not None:
            form.rollback()
        metrics.count_failure(error)
        return drain_then_close(error_response(error), drain_limit)
    except BaseException:
        if form is not None:
            form.rollback()
        raise

    metrics.count_stored(form.stored, time.perf_counter() - started)
    records = [record(row) for row in form.stored]
    if len(records) == 1:
        response = jsonify(records[0])
        response.headers["Location"] = url_for("files.get_file", file_id=records[0]["id"])
    else:
        response = jsonify(files=records)
    response.status_code = 201
    return response

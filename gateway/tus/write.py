"""The tus write path: bytes in under the upload's lock, the offset moved
only once they are durable (fsynced, or in the bucket), the head judged as
soon as it has arrived (or, when a rule reads every byte, every byte fed to
the upload's Validate stream as it arrives: gateway/tus/streams.py), and a
finished upload handed to the ingest pipeline."""
from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timezone

from flask import current_app, request

from gateway import metrics
from gateway.auth.identity import owner_scope
from gateway.auth.quotas import Budget, quota
from gateway.ingest.body import BodyReader
from gateway.ingest.pipeline import ingest
from gateway.ingest.verdicts import refusal, too_large
from gateway.ingest.services import services
from gateway.ingest.validation_stream import ValidationStream
from gateway.storage.expiry import expires_at
from gateway.tus.hashes import RunningHashes
from gateway.tus.protocol import ChecksumMismatch, parse_checksum, parse_size
from gateway.tus.store import BytesGone, LockLost, TusStore, TusUpload, WriteLocked
from gateway.tus.streams import WholeFileStreams
from protos.errors import (Conflict, Gone, InvalidInput, Locked, NotFound, QuotaExceeded, Refused, RequestTimeout,
                           TooLong, UploadError)

log = logging.getLogger("upload.tus")

# What an upload's id is (secrets.token_hex(16)): anything else is not looked up
# (a NUL, say, would fail PostgreSQL's query, a 500 for bad input).
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def store() -> TusStore:
    return current_app.extensions["tus"]


def hashes() -> RunningHashes:
    return current_app.extensions["tus_hashes"]


def streams() -> WholeFileStreams:
    return current_app.extensions["tus_streams"]


def max_size() -> int:
    return services().policy().max_file_size


def live(upload_id: str) -> TusUpload:
    """The upload, or 404 (never existed / forgotten) or 410 (ended)."""
    upload = store().get(upload_id) if UPLOAD_ID.fullmatch(upload_id) else None
    scope = owner_scope()
    if upload is None or (scope is not None and upload.owner_id != scope):
        raise NotFound("There is no upload at this address.")
    if upload.state == "uploading" and upload.expires_at < datetime.now(timezone.utc):
        raise Gone("This upload expired before it was finished.")
    if upload.state in ("refused", "terminated", "expired", "joined"):
        if upload.state == "refused" and upload.error:
            body = json.loads(upload.error)
            raise Gone(f"This upload was refused: {body['error']}")
        if upload.state == "joined":
            raise Gone("This partial upload was joined into a final upload; its bytes are that upload's now.")
        raise Gone()
    return upload


def not_joining(upload: TusUpload) -> TusUpload:
    """The upload, unless a final upload is taking it (gateway/tus/concat.py): 409."""
    if upload.state == "joining":
        raise Conflict("This partial upload is being joined into a final upload; it takes no more requests.")
    return upload


def append(upload: TusUpload, offset: int) -> None:
    """Write the request body at ``offset`` under the upload's lock; move the
    stored offset only after the bytes are on disk."""
    if upload.state == "complete":
        return _already_complete(upload, offset)
    not_joining(upload)
    try:
        with store().writing(upload, wait=current_app.config["TUS_LOCK_WAIT"]) as writer:
            upload = not_joining(live(upload.id))  # fresh: another request may have moved it meanwhile
            if upload.state == "complete":
                return _already_complete(upload, offset)
            if offset != upload.offset:
                raise Conflict(f"Upload-Offset is {offset} but the upload is at {upload.offset}; "
                               "ask with HEAD and resume from there.")
            _take_length(upload)
            _write_body(upload, writer)
    except WriteLocked:
        raise Locked() from None
    except LockLost:
        raise Locked("This upload was taken over by another request while this one stalled; "
                     "ask with HEAD and resume from there.") from None
    except BytesGone:
        # It ended, finished or was taken by a final upload while this request waited for the lock.
        upload = not_joining(live(upload.id))
        if upload.state != "complete":
            raise Gone() from None
        _already_complete(upload, offset)


def finish_stalled(upload: TusUpload) -> TusUpload:
    """An upload whose bytes all arrived but whose completion failed (the
    validator was down): try the pipeline again. Raises what it raises."""
    if upload.state != "uploading" or upload.is_partial or not upload.finished_bytes:
        return upload
    try:
        with store().writing(upload, wait=current_app.config["TUS_LOCK_WAIT"]):
            upload = live(upload.id)
            if upload.state == "uploading" and upload.finished_bytes:
                complete(upload)
    except WriteLocked:
        raise Locked() from None
    except BytesGone:
        pass
    return live(upload.id)


def _already_complete(upload: TusUpload, offset: int) -> None:
    """A finished upload takes no more bytes; a retried last PATCH is fine."""
    if offset != upload.offset:
        raise Conflict(f"The upload is complete at offset {upload.offset}.")


def _take_length(upload: TusUpload) -> None:
    length = parse_size(request.headers.get("Upload-Length"), "Upload-Length")
    if length is None:
        return
    if upload.length is not None:
        if length != upload.length:
            raise InvalidInput("Upload-Length cannot change once it is set.")
        return
    limit = max_size()
    if length > limit:
        raise too_large(limit, upload.original_name or None)
    if length < upload.offset:
        raise InvalidInput("Upload-Length is smaller than what has already been sent.")
    if (budget := quota()) is not None:
        # What has arrived is counted already; the rest becomes room the upload holds.
        budget.check(new_bytes=length - upload.offset)
    upload.length = length
    store().save(upload, "length")


def _write_body(upload: TusUpload, writer) -> None:
    start = upload.offset
    limit = upload.length if upload.length is not None else max_size()
    declared = request.content_length
    if declared is not None and start + declared > limit:
        raise _over(upload, limit)
    # A deferred length holds no room ahead: its bytes are counted as they come,
    # and refused at the one that passes the quota, as POST /upload does.
    budget = Budget(quota() if upload.length is None else None)
    if declared and budget.bytes_left is not None and declared > budget.bytes_left:
        budget.quota.check(new_bytes=declared)  # refused before the body is read
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    writer.begin(start)
    feed = WholeFileFeed(upload, _whole_file_stream(upload, start))
    # Judged on its own too with a stream: a refusal of the head then answers this very PATCH,
    # whenever the stream's own answer comes (but a head that is the whole file is the stream's
    # to judge, in this PATCH: scanned once, not twice).
    checkpoints = [p for p in _head_checkpoints(upload, start) if feed.stream is None or p < upload.length]
    body = BodyReader()
    hasher = hashes().resume(upload.id, start) if not upload.is_partial else None
    try:
        started = time.perf_counter()
        written = _receive(body, writer, start, limit, upload, checksum, checkpoints, hasher, budget, feed)
        metrics.RECEIVE.observe(time.perf_counter() - started)
        feed.check()  # a refusal that came meanwhile ends the upload now
        if checksum and checksum[0].digest() != checksum[1]:
            writer.rollback()
            raise ChecksumMismatch()
        # Durable (fsynced, or in the bucket) before the offset says so.
        writer.sync(last=upload.length is not None and start + written == upload.length)
        upload.offset = start + written
        upload.expires_at = store().expiry()
        store().save(upload, "offset", "expires_at", fence=writer.lock_owner)
        writer.saved()
    except BaseException:
        if hasher is not None:
            hasher.close()  # it hashed bytes that are not kept
        feed.give_up()  # it was fed bytes that are not kept
        raise
    metrics.TUS_PATCHES.inc()
    metrics.TUS_BYTES.inc(written)
    if hasher is not None:
        hashes().keep(upload.id, upload.offset, hasher)
    if upload.length is not None and upload.offset == upload.length and not upload.is_partial:
        complete(upload, feed.stream)  # the full validation; no separate look at the head needed
    elif feed.stream is not None:
        streams().keep(upload.id, upload.offset, feed.stream)


class WholeFileFeed:
    """A PATCH's bytes on their way to the upload's Validate stream (None: there is
    none). A refusal that comes back ends the upload at once, as a head check's
    does; a stream that fails (the validator or its scanner gone) is dropped and
    the PATCH goes on storing, and the finished file is sent whole (``complete``)."""

    def __init__(self, upload: TusUpload, stream: ValidationStream | None):
        self.upload = upload
        self.stream = stream

    def feed(self, chunk) -> None:
        if self.stream is None:
            return
        self.stream.feed(chunk)
        self.check()

    def check(self) -> None:
        """Raise the refusal the validator has already sent, if it has."""
        if self.stream is None:
            return
        try:
            verdict = self.stream.early_verdict()
        except UploadError as exc:
            log.warning("tus upload %s: its validation stream failed (%s); judged from storage later",
                        self.upload.id, exc.message)
            self.give_up()
            return
        if verdict is not None and not verdict.accepted and not verdict.head_incomplete:
            self.give_up()
            refused = refusal(verdict, self.upload.original_name)
            _refuse(self.upload, refused)
            raise refused

    def give_up(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
            self.stream = None


def _whole_file_stream(upload: TusUpload, start: int) -> ValidationStream | None:
    """The Validate stream this PATCH feeds when a rule reads every byte (the policy's
    ``whole_file``): the one kept since the previous PATCH, or a new one for a PATCH at
    the start. None: no such rule; a partial upload (judged as part of its final
    upload); or a stream lost on the way (the previous PATCH failed, or went to another
    worker, or the stream was given up): the finished file is then sent whole from
    storage, once (``Ingest.adopt``). Feeding a new stream the bytes already stored
    instead would read and scan them again at every such PATCH, and a client can make
    those as small and as many as it likes (a 1-byte PATCH with a wrong checksum)."""
    if upload.is_partial:
        return None
    policy = services().policy()
    if not policy.whole_file:
        return None
    stream = streams().resume(upload.id, start)
    if stream is not None or start > 0:
        return stream
    return services().start_validation(upload.original_name, upload.declared_type, policy.head_bytes,
                                       declared_size=upload.length, whole=True)


def _receive(body: BodyReader, writer, start: int, limit: int, upload: TusUpload, checksum, checkpoints,
             hasher, budget: Budget, feed: WholeFileFeed) -> int:
    """Write the body at ``start``; return how many bytes were written. Two
    buffers take turns, so the hash of one overlaps receiving the other."""
    buffers, written = (memoryview(bytearray(PIECE)), memoryview(bytearray(PIECE))), 0
    while True:
        buffer, buffers = buffers[0], buffers[::-1]
        if hasher is not None:
            hasher.release(buffer.obj)
        try:
            count = body.readinto(buffer)  # 0 also when the client went away: keep what arrived
        except RequestTimeout:
            break  # a client that stalled: keep what arrived too, it can resume from there
        if not count:
            break
        chunk = buffer[:count]
        if start + written + count > limit:
            writer.rollback()
            raise _over(upload, limit)
        try:
            budget.take_bytes(count, written + count)
        except QuotaExceeded:
            writer.rollback()
            raise
        if hasher is not None:
            hasher.submit(chunk)
        writer.write(chunk)  # a full disk: rolled back to ``start``, then InsufficientStorage
        feed.feed(chunk)
        written += count
        if checksum:
            checksum[0].update(chunk)
        while checkpoints and start + written >= checkpoints[0]:
            _judge_head(upload, writer, checkpoints.pop(0))
            if upload.head_checked:
                checkpoints = []
    return written


def _over(upload: TusUpload, limit: int) -> UploadError:
    if upload.length is not None and limit == upload.length:
        return TooLong(f"The upload is {upload.length} bytes long; this PATCH would pass its end.")
    return too_large(limit, upload.original_name or None)


# Bytes received and written per step (the buffer is reused).
PIECE = 1024 * 1024

# The head is judged first from this much (enough for every built-in rule on
# ordinary files), and again from the policy's full head if a rule wanted more.
EARLY_HEAD = 64 * 1024


def _head_checkpoints(upload: TusUpload, start: int) -> list[int]:
    """Offsets past ``start`` at which the validator gets to see the head
    (none for partial uploads, unknown lengths, or once it has decided)."""
    if upload.head_checked or upload.length is None:
        return []
    full = min(upload.length, services().policy().head_bytes)
    return sorted(p for p in {min(upload.length, EARLY_HEAD), full} if p > start)


def _judge_head(upload: TusUpload, writer, size: int) -> None:
    head = writer.head(size)
    if head is None:
        return  # not readable here (sent to S3 in an earlier part): judged whole at the end
    try:
        decided = ingest().check_head(upload.original_name, upload.declared_type, head, upload.length)
    except Refused as refused:
        _refuse(upload, refused)
        raise
    if decided or size >= min(upload.length, services().policy().head_bytes):
        upload.head_checked = True  # otherwise: again at the next checkpoint
        store().save(upload, "head_checked")


def complete(upload: TusUpload, stream: ValidationStream | None = None) -> None:
    """Store a finished upload. ``stream``: the Validate stream that was fed every one of
    its bytes (a whole-file rule in force), whose verdict comes now, before anything is
    committed (on S3, before the multipart upload is completed into an object)."""
    verdict = None
    try:
        if (budget := quota()) is not None:
            # Raised, not a refusal: the bytes stay, and a HEAD finishes the upload once there is room.
            # A final upload counts as what it is: the partials it took count no more.
            budget.check(new_files=1, new_bytes=upload.length or 0, except_upload=upload.id)
        if stream is not None:
            # Failing (the validator or its scanner gone: 503), the bytes stay, and a HEAD
            # finishes the upload later, sending the file whole from storage.
            verdict = stream.finish(upload.length, current_app.config["VALIDATOR_TIMEOUT"])
            if not verdict.accepted:
                if verdict.head_incomplete:
                    verdict = None  # not every byte was judged after all: judged from storage
                else:
                    raise refusal(verdict, upload.original_name)
        # expires_in was judged at creation; FILE_TTL applies now when it was not given.
        row = store().adopt(ingest(), upload, expires_at(upload.expires_in),
                            sha256=hashes().digest(upload.id, upload.length), verdict=verdict)
    except Refused as refused:
        _refuse(upload, refused)
        raise
    finally:
        if stream is not None:
            stream.cancel()
    metrics.count_stored([row])
    metrics.TUS_FINISHED.inc()
    upload.state, upload.file_id = "complete", row.id
    upload.expires_at = store().expiry()
    store().save(upload, "state", "file_id", "expires_at")


def _refuse(upload: TusUpload, refused: Refused) -> None:
    if refused.size is None:
        refused.size = upload.length  # for the record of the refusal
    streams().drop(upload.id)
    store().drop_bytes(upload)
    upload.state = "refused"
    upload.error = json.dumps({"error": refused.message, "code": refused.code,
                               **({"rule": refused.rule} if refused.rule else {})})
    upload.expires_at = store().expiry()
    store().save(upload, "state", "error", "expires_at")
    metrics.count_failure(refused)
    log.info("tus upload %s refused: %s", upload.id, refused.code)

"""tus 1.0.0 resumable uploads at /tus/: core, creation (with upload, with
deferred length), termination, checksum, expiration and concatenation.

A finished upload goes through the same ingest pipeline as POST /upload and
its record id comes back in an `Upload-File-Id` header. The head of the file
is judged as soon as it has arrived: a refusal ends the upload at once with
the same status and JSON body as POST /upload, and the upload answers 410
from then on.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timezone

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from gateway import metrics
from gateway.auth.identity import owner_id
from gateway.auth.quotas import quota
from gateway.background import Periodic
from gateway.errors import error_response
from gateway.ingest.body import drain_then_close
from gateway.ingest.names import extension
from gateway.ingest.pipeline import stored_name
from gateway.ingest.verdicts import too_large
from gateway.ingest.services import services
from gateway.metadata.refusals import record
from gateway.storage.expiry import parse_expires_in
from gateway.tus.concat import join
from gateway.tus.hashes import RunningHashes
from gateway.tus.protocol import (CHECKSUMS, EXTENSIONS, PATCH_TYPE, VERSION, ChecksumMismatch, http_date,
                                  parse_concat, parse_metadata, parse_size, read_metadata)
from gateway.tus.s3 import S3TusStore
from gateway.tus.store import BytesGone, TusStore, TusUpload, WriteLocked
from gateway.tus.streams import WholeFileStreams
from gateway.tus.write import append, complete, finish_stalled, live, max_size, not_joining, store, streams
from protos.errors import Forbidden, Gone, InvalidInput, Locked, Refused, UploadError

bp = Blueprint("tus", __name__, url_prefix="/tus")


# --- every response ---

@bp.before_request
def _require_version():
    if request.method == "OPTIONS":
        return None
    if request.headers.get("Tus-Resumable") != VERSION:
        response = jsonify(error=f"This server speaks tus {VERSION}: send 'Tus-Resumable: {VERSION}'.")
        response.status_code = 412
        response.headers["Tus-Version"] = VERSION
        return response
    return None


@bp.after_request
def _tus_headers(response: Response) -> Response:
    response.headers["Tus-Resumable"] = VERSION
    return response


@bp.errorhandler(UploadError)
def _upload_error(error: UploadError):
    # The client may still be sending the body we stopped reading.
    if request.method in ("POST", "PATCH"):
        return drain_then_close(error_response(error), current_app.config["MAX_REQUEST_SIZE"])
    return error_response(error)


@bp.errorhandler(ChecksumMismatch)
def _checksum_mismatch(_exc):
    response = jsonify(error="The chunk does not match its Upload-Checksum; it was discarded. Send it again.")
    response.status_code = 460
    return response


def _upload_headers(upload: TusUpload, response: Response) -> Response:
    h = response.headers
    h["Upload-Offset"] = str(upload.offset)
    if upload.length is None:
        h["Upload-Defer-Length"] = "1"
    else:
        h["Upload-Length"] = str(upload.length)
    if upload.metadata:
        h["Upload-Metadata"] = upload.metadata
    if upload.concat:
        h["Upload-Concat"] = upload.concat
    if upload.state == "uploading":
        h["Upload-Expires"] = http_date(upload.expires_at)
    if upload.file_id:
        h["Upload-File-Id"] = upload.file_id
    h["Cache-Control"] = "no-store"
    return response


def _empty(status: int) -> Response:
    response = Response(status=status)
    del response.headers["Content-Type"]  # no body, so no type
    return response


# --- discovery ---

@bp.route("/", methods=["OPTIONS"], strict_slashes=False)
@bp.route("/<upload_id>", methods=["OPTIONS"])
def options(upload_id: str | None = None):
    response = _empty(204)
    response.headers["Tus-Version"] = VERSION
    response.headers["Tus-Extension"] = ",".join(EXTENSIONS)
    response.headers["Tus-Checksum-Algorithm"] = ",".join(CHECKSUMS)
    try:
        response.headers["Tus-Max-Size"] = str(max_size())
    except UploadError:
        pass  # the validator is down: no limit to announce, uploads will get 503
    return response


# --- creation ---

@bp.route("/", methods=["POST"], strict_slashes=False)
def create():
    length = parse_size(request.headers.get("Upload-Length"), "Upload-Length")
    deferred = request.headers.get("Upload-Defer-Length")
    if deferred is not None and deferred != "1":
        raise InvalidInput("Upload-Defer-Length must be 1.")
    raw_metadata = request.headers.get("Upload-Metadata", "")
    meta = read_metadata(parse_metadata(raw_metadata))
    concat = parse_concat(request.headers.get("Upload-Concat"))
    is_final = concat is not None and concat[0] == "final"
    if is_final:
        if length is not None or deferred:
            raise InvalidInput("A final concatenation takes its length from its partial uploads.")
    elif (length is None) == (deferred is None):
        raise InvalidInput("Send exactly one of Upload-Length and Upload-Defer-Length: 1.")
    limit = max_size()
    if length is not None and length > limit:
        raise _refused(too_large(limit, meta.original_name or None))
    is_partial = concat is not None and concat[0] == "partial"
    if not is_partial:
        _check_extension(meta.original_name)

    upload_id = secrets.token_hex(16)
    now = datetime.now(timezone.utc)
    upload = TusUpload(
        id=upload_id, filename=stored_name(upload_id, meta.original_name), length=length, offset=0,
        metadata=raw_metadata.strip(), original_name=meta.original_name, declared_type=meta.declared_type,
        expires_in=parse_expires_in(meta.expires_in), concat="partial" if is_partial else None, state="uploading",
        head_checked=is_partial, file_id=None, error=None, created_at=now, expires_at=store().expiry(),
        owner_id=owner_id())
    if (budget := quota()) is not None and not is_final:  # a final is checked once its length is known
        # A partial upload is bytes, not yet a file: its final upload is the file.
        budget.check(new_files=0 if is_partial else 1, new_bytes=length or 0)
    if is_final:
        join(upload, concat[1], limit)
        response = _empty(201)
        response.headers["Location"] = url_for("tus.resource", upload_id=upload.id)
        return _upload_headers(upload, response)
    store().add(upload)
    metrics.TUS_CREATED.inc()
    response = _empty(201)
    response.headers["Location"] = url_for("tus.resource", upload_id=upload_id)
    if request.headers.get("Content-Type") == PATCH_TYPE:  # creation-with-upload
        append(upload, 0)
        upload = store().get(upload_id)
        response.headers["Upload-Offset"] = str(upload.offset)
    elif upload.length == 0 and not is_partial:
        complete(upload)  # complete on creation: the pipeline decides now (it refuses empty files)
    if upload.file_id:
        response.headers["Upload-File-Id"] = upload.file_id
    if upload.state == "uploading":
        response.headers["Upload-Expires"] = http_date(upload.expires_at)
    return response


def _check_extension(original_name: str) -> None:
    """``original_name`` comes sanitized from read_metadata ("" when none was given)."""
    ext = extension(original_name)
    allowed = {t.extension for t in services().policy().allowed}
    if ext not in allowed:
        what = f"Files of type .{ext} are not" if ext else "A file without an extension is not"
        raise _refused(Refused("extension_not_allowed",
                               f"{what} allowed; allowed types are: {', '.join(sorted(allowed))}.",
                               original_name or None))


def _refused(refusal: Refused) -> Refused:
    """A file refused at creation, before any of its bytes: counted like the
    refusals of POST /upload and of finished uploads (upload_refusals_total)."""
    metrics.count_failure(refusal)
    return refusal


# --- core ---

@bp.route("/<upload_id>", methods=["HEAD"])
def resource(upload_id: str):
    # A client that HEADs after a failed last PATCH must not see a finished
    # upload that was never stored: finishing it is retried here.
    upload = live(upload_id)
    try:
        upload = finish_stalled(upload)
    except Refused as refused:
        # Answered 410 (a HEAD has no body to carry the refusal), and recorded as any refusal is.
        record(refused.original_name or upload.original_name, refused.code, refused.rule or "", refused.size,
               upload.owner_id, "tus")
        raise Gone("This upload was refused.") from None
    return _upload_headers(upload, _empty(200))


@bp.route("/<upload_id>", methods=["PATCH"])
def patch(upload_id: str):
    upload = live(upload_id)
    if upload.is_final:
        raise Forbidden("A final concatenated upload cannot be written to.")
    if request.mimetype != PATCH_TYPE:
        response = jsonify(error=f"A PATCH must have Content-Type: {PATCH_TYPE}.")
        response.status_code = 415
        return response
    offset = parse_size(request.headers.get("Upload-Offset"), "Upload-Offset")
    if offset is None:
        raise InvalidInput("A PATCH must say its Upload-Offset.")
    append(upload, offset)
    return _upload_headers(store().get(upload_id), _empty(204))


@bp.route("/<upload_id>", methods=["DELETE"])
def terminate(upload_id: str):
    """Ends the upload. A finished one's stored file stays (DELETE /files/<id> removes it)."""
    upload = not_joining(live(upload_id))
    if upload.state == "uploading":
        try:
            with store().writing(upload, wait=current_app.config["TUS_LOCK_WAIT"]):
                # Ended first, in one step, then its bytes: a final upload taking this
                # partial meanwhile and this DELETE cannot both have it.
                if store().move([upload.id], "uploading", "terminated"):
                    streams().drop(upload.id)
                    store().drop_bytes(upload)
                    return _empty(204)
        except WriteLocked:
            raise Locked() from None
        except BytesGone:
            pass
        upload = not_joining(live(upload_id))  # finished, taken or ended meanwhile
        if upload.state != "complete":
            raise Gone()
    upload.state = "terminated"
    upload.expires_at = store().expiry()
    store().save(upload, "state", "expires_at")
    return _empty(204)


@bp.route("/<upload_id>", methods=["POST"])
def method_override(upload_id: str):
    """For clients behind proxies that only pass GET and POST."""
    override = request.headers.get("X-HTTP-Method-Override", "").upper()
    if override == "PATCH":
        return patch(upload_id)
    if override == "DELETE":
        return terminate(upload_id)
    raise InvalidInput("POST to an upload needs X-HTTP-Method-Override: PATCH or DELETE.")


# --- set-up ---

def init_app(app) -> None:
    storage, engine = app.extensions["storage"], app.extensions["files"].engine
    if storage.local:
        tus = TusStore(engine, storage, app.config["TUS_EXPIRY"], disk=app.extensions["ingest"].disk)
    else:
        # Bytes in S3 multipart uploads and the lock in the database: any replica continues any upload.
        tus = S3TusStore(engine, storage, app.config["TUS_EXPIRY"], lock_ttl=app.config["TUS_LOCK_EXPIRY"])
    app.extensions["tus"] = tus
    app.extensions["tus_hashes"] = RunningHashes()
    app.extensions["tus_streams"] = WholeFileStreams()
    tus.reap()
    app.extensions["tus_reaper"] = Periodic("tus-reaper", app.config["TUS_REAP_INTERVAL"], tus.reap).start()

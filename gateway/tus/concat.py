"""tus concatenation: a final upload joins finished partial uploads of the
same user into one file.

Each partial upload is bytes of its own that can be joined once (tusd would
copy a partial named twice twice; here that would make a file many times
larger than what was sent and counted). A final takes its partials in one
step in the database (state "joining", all or none), so two finals sent at
once cannot both take one, and a PATCH or DELETE of a partial being joined
answers 409. Once the final is stored its partials are "joined" (410 from
then on, until forgotten like any ended upload); if it fails they are given
back, to be joined again.

Taken partials no longer count against the quota: the final counts instead,
with its real length, checked before any byte is copied.
"""
from __future__ import annotations

from datetime import datetime, timezone

from flask import url_for

from gateway import metrics
from gateway.auth.quotas import quota
from gateway.ingest.verdicts import too_large
from gateway.tus.store import BytesGone, TusUpload
from gateway.tus.write import complete, store
from protos.errors import Conflict, Gone, Internal, InvalidInput, NotFound

JOINING = "joining"


def join(upload: TusUpload, part_ids: list[str], limit: int) -> None:
    """Make ``upload`` (a final upload, not yet stored) from the partial uploads
    ``part_ids``, then hand it to the pipeline. Raises what refuses it; nothing
    of the final stays then, and its partials are as they were."""
    parts = [_joinable(part_id, upload.owner_id) for part_id in part_ids]
    upload.length = sum(p.length for p in parts)
    if upload.length > limit:
        refusal = too_large(limit, upload.original_name or None)
        metrics.count_failure(refusal)
        raise refusal
    upload.concat = "final;" + " ".join(url_for("tus.resource", upload_id=p.id) for p in parts)
    if not store().move(part_ids, "uploading", JOINING):
        # Taken (or ended) by another request between the look above and now: say which.
        for part_id in part_ids:
            _joinable(part_id, upload.owner_id)
        raise Conflict("One of the partial uploads changed meanwhile; ask with HEAD and try again.")
    try:
        if (budget := quota()) is not None:
            budget.check(new_files=1, new_bytes=upload.length)
        _copy(upload, parts)
    except BaseException:
        for part_id in part_ids:
            store().move([part_id], JOINING, "uploading")
        raise
    store().move(part_ids, JOINING, "joined")
    for part in parts:
        store().drop_bytes(part)


def _joinable(part_id: str, owner: str | None) -> TusUpload:
    """The partial upload, finished and free to be joined; else the reason, in a sentence."""
    part = store().get(part_id)
    if part is None or part.owner_id != owner:
        # Someone else's upload answers exactly like one that never existed.
        raise NotFound(f"There is no upload {part_id} on this server.")
    if not part.is_partial:
        raise InvalidInput(f"Upload {part_id} is not a partial upload (Upload-Concat: partial); "
                           "only partial uploads can be joined.")
    if part.state == JOINING:
        raise Conflict(f"Partial upload {part_id} is being joined into another final upload; "
                       "a partial upload can be joined only once.")
    if part.state == "joined":
        raise Gone(f"Partial upload {part_id} was already joined into a final upload; "
                   "a partial upload can be joined only once.")
    if part.state != "uploading" or part.expires_at < datetime.now(timezone.utc):
        raise Gone(f"Partial upload {part_id} has ended (terminated or expired); upload it again.")
    if not part.finished_bytes:
        raise InvalidInput(f"Partial upload {part_id} is not finished yet.")
    return part


def _copy(upload: TusUpload, parts: list[TusUpload]) -> None:
    store().add(upload)
    metrics.TUS_CREATED.inc()
    try:
        with store().writing(upload, wait=0) as writer:
            writer.begin(0)
            for part in parts:
                try:
                    for chunk in store().read(part):
                        writer.write(chunk)  # every byte or an error: a filling disk must not cut the join short
                except BytesGone:
                    # Its bytes were removed behind our back (a bucket's lifecycle rule
                    # aborting incomplete multipart uploads): the client's to know, not a 500.
                    raise Gone(f"The bytes of partial upload {part.id} are gone; upload it again.") from None
            writer.sync(last=True)
            if writer.size() != upload.length:
                raise Internal("The joined upload came out the wrong size; nothing was stored.")
            upload.offset = upload.length
            store().save(upload, "offset", fence=writer.lock_owner)
            writer.saved()
            complete(upload)
    except BaseException:
        # The answer carries no Location, so nobody could ever finish or end this
        # join: nothing of it may stay.
        store().drop_bytes(upload)
        store().forget(upload.id)
        raise


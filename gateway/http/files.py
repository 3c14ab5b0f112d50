"""The file records: list (newest first, paged), read one, delete one."""
from __future__ import annotations

import json
import re

from flask import Blueprint, jsonify

from gateway.auth.identity import owner_scope
from gateway.http.paging import DEFAULT_PAGE, paged
from gateway.http.records import iso, record
from gateway.ingest.pipeline import ingest
from gateway.metadata.files import repository
from gateway.storage.expiry import refuse_expired
from protos.errors import NotFound

bp = Blueprint("files", __name__)

FILE_ID = re.compile(r"[0-9a-f]{32}")


@bp.get("/files")
def list_files():
    rows, next_cursor = paged(lambda limit, cursor: repository().page(limit, cursor, owner=owner_scope()),
                              default=DEFAULT_PAGE)
    return jsonify(files=[record(row) for row in rows], next_cursor=next_cursor)


def row_or_404(file_id: str):
    # Another user's file answers exactly like one that does not exist. Ids are 128 random
    # bits in hex: anything else is not looked up (NUL, say, would fail PostgreSQL's query).
    row = repository().get(file_id, owner=owner_scope()) if FILE_ID.fullmatch(file_id) else None
    if row is None:
        raise NotFound("No file with that id.")
    return row


@bp.get("/files/<file_id>")
def get_file(file_id: str):
    return jsonify(record(refuse_expired(row_or_404(file_id))))


@bp.get("/files/<file_id>/audit")
def audit(file_id: str):
    """Why the file was let in: every rule the validator ran and what it
    decided, as recorded when the file was stored."""
    row = refuse_expired(row_or_404(file_id))
    verdict = json.loads(row.verdict or "{}")
    return jsonify(
        id=row.id, filename=row.filename, original_name=row.original_name, size=row.size, sha256=row.sha256,
        uploaded_at=iso(row.uploaded_at), detected_type=verdict.get("detected_type", row.type),
        accepted=bool(verdict.get("accepted", False)),
        # The validator's count of head bytes it read before deciding (protobuf JSON writes int64 as text).
        bytes_read=int(verdict.get("bytes_read", 0)),
        decisions=[{"rule": d.get("rule", ""), "outcome": d.get("outcome", ""), "code": d.get("code", "")}
                   for d in verdict.get("decisions", [])],
        reasons=[{"code": r.get("code", ""), "message": r.get("message", ""), "rule": r.get("rule", "")}
                 for r in verdict.get("reasons", [])],
        # What a transform changed before the bytes were stored (IMAGE_METADATA): the upload's
        # own size and sha256, and what was removed; null when the upload is stored as it came.
        transform=verdict.get("transform"),
    )


@bp.delete("/files/<file_id>")
def delete_file(file_id: str):
    ingest().remove(row_or_404(file_id))
    return "", 204

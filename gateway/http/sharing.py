"""Share links: a signed, expiring URL that downloads one file without a token.

The link carries the file id and its expiry, signed with itsdangerous under
the app's secret key: changing a character makes it fail the signature (403),
time makes it expire (410), and deleting the file kills it (404), because the
id it names is gone for good (ids are random and never reused).
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from flask import Blueprint, current_app, jsonify, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer

from gateway.http.downloads import send_stored
from gateway.http.files import row_or_404
from gateway.http.jsonbody import json_object
from gateway.http.records import iso
from gateway.metadata.accounts import accounts
from gateway.metadata.files import repository
from gateway.storage.expiry import refuse_expired
from protos.errors import Forbidden, Gone, InvalidInput, NotFound

bp = Blueprint("sharing", __name__)

SALT = "share-link-v1"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt=SALT)


def _expires_in() -> int:
    config = current_app.config
    value = json_object('{"expires_in": 3600} (seconds), or no body for the default').get(
        "expires_in", config["SHARE_TTL"])
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= config["SHARE_MAX_TTL"]:
        raise InvalidInput(f"expires_in must be a whole number of seconds from 1 to {config['SHARE_MAX_TTL']}.")
    return value


def _public_url(path: str) -> str:
    """Links go out under PUBLIC_URL when it is set, not whatever Host a request claimed."""
    base = current_app.config["PUBLIC_URL"].rstrip("/") or request.host_url.rstrip("/")
    return base + path


@bp.post("/files/<file_id>/share")
def share(file_id: str):
    row = refuse_expired(row_or_404(file_id))  # a link to a file already gone would only mislead
    # Not cut to whole seconds: a link lives exactly as long as asked (links made
    # before carry whole seconds, which open_share still reads).
    expires_at = datetime.now(timezone.utc) + timedelta(seconds=_expires_in())
    token = _serializer().dumps([row.id, expires_at.timestamp()])
    response = jsonify(url=_public_url(url_for("sharing.open_share", token=token)), expires_at=iso(expires_at))
    response.status_code = 201
    return response


@bp.get("/s/<token>")
def open_share(token: str):
    try:
        file_id, expires = _serializer().loads(token)
        # Only what share() signs: anything else signed with this key (and salt) is not a link.
        if not isinstance(file_id, str) or type(expires) not in (int, float) or not math.isfinite(expires):
            raise ValueError("not a share link")
    except (BadSignature, ValueError, TypeError):
        raise Forbidden("This share link is not valid: it was changed or cut short. Ask for a new one.") from None
    if datetime.now(timezone.utc).timestamp() >= expires:
        raise Gone("This share link has expired. Ask the person who shared it for a new one.")
    row = repository().get(file_id)
    if row is None or (row.owner_id and accounts().user(row.owner_id) is None):
        # Deleting a user ends what they shared, as deleting the file does.
        raise NotFound("The file this link shared has been deleted.")
    response = send_stored(row)
    # The link is the credential: keep it out of Referer headers and shared caches.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "private, no-store"
    return response

"""Share links: a signed, expiring URL that downloads one file without a token.

The URL carries a link's id and its expiry, signed with itsdangerous under the
app's secret key: changing a character makes it fail the signature (403), time
makes it expire (410). The link's record (gateway/metadata/shares.py) lets the
file's owner (or an admin) list and revoke it: a revoked link answers 410 like
an expired one (it existed, and asking again will not bring it back), and
deleting the file, or its owner, deletes its links (404).

Links made before links were recorded (migration 0003) carry the file id
instead (salt share-link-v1). Whoever holds one was told it works until it
expires, so it does, unless SHARE_LEGACY_LINKS is off; nothing recorded them,
so they cannot be listed or revoked one by one.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

from flask import Blueprint, current_app, jsonify, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer

from gateway.auth.identity import owner_id, owner_scope
from gateway.http.downloads import send_stored
from gateway.http.files import row_or_404
from gateway.http.jsonbody import json_object
from gateway.http.paging import paged
from gateway.http.records import iso
from gateway.metadata.accounts import accounts
from gateway.metadata.files import repository
from gateway.metadata.shares import ShareLink, shares
from gateway.storage.expiry import refuse_expired
from protos.errors import Forbidden, Gone, InvalidInput, NotFound

bp = Blueprint("sharing", __name__)

# [link id, expiry]. A new salt, not a new payload under the old one: a token of
# one kind can never be read as the other.
SALT = "share-link-v2"
# [file id, expiry]: links made before share_links existed.
LEGACY_SALT = "share-link-v1"
LINK_ID = re.compile(r"[0-9a-f]{32}")


def _serializer(salt: str = SALT) -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt=salt)


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


def link_json(link: ShareLink) -> dict:
    # The same URL every time (the signature is deterministic), so a listing can hand it out again.
    token = _serializer().dumps([link.id, link.expires_at.timestamp()])
    return {"id": link.id, "file_id": link.file_id, "url": _public_url(url_for("sharing.open_share", token=token)),
            "created_at": iso(link.created_at), "expires_at": iso(link.expires_at), "created_by": link.created_by}


def _listing(links_and_cursor: tuple[list[ShareLink], str | None]):
    links, next_cursor = links_and_cursor
    return jsonify(shares=[link_json(link) for link in links], next_cursor=next_cursor)


@bp.post("/files/<file_id>/share")
def share(file_id: str):
    row = refuse_expired(row_or_404(file_id))  # a link to a file already gone would only mislead
    # Not cut to whole seconds: a link lives exactly as long as asked.
    expires_at = datetime.now(timezone.utc) + timedelta(seconds=_expires_in())
    link = shares().create(row.id, row.owner_id, owner_id(), expires_at,
                           per_file=current_app.config["MAX_SHARES_PER_FILE"])
    if link is None:  # deleted between the read above and the insert
        raise NotFound("No file with that id.")
    response = jsonify(link_json(link))
    response.status_code = 201
    return response


@bp.get("/files/<file_id>/shares")
def file_shares(file_id: str):
    """The file's live links: whoever may see the file (its owner, an admin)."""
    row = refuse_expired(row_or_404(file_id))
    return _listing(paged(lambda limit, cursor: shares().page(limit, cursor, file_id=row.id)))


@bp.get("/shares")
def list_shares():
    """The live links to the caller's files (an admin's: everyone's), newest first."""
    scope = owner_scope()
    return _listing(paged(lambda limit, cursor: shares().page(limit, cursor, owner=scope)))


@bp.delete("/shares/<share_id>")
def revoke_share(share_id: str):
    # Another user's link id is as unknown as a made-up one; revoking twice is 404 the second time.
    if not (LINK_ID.fullmatch(share_id) and shares().revoke(share_id, owner=owner_scope())):
        raise NotFound("You have no live share link with that id.")
    return "", 204


def _verified(token: str) -> tuple[str, str, float]:
    """(salt, the id the link names, its expiry) of a genuine link; Forbidden otherwise."""
    for salt in (SALT, LEGACY_SALT):
        try:
            named, expires = _serializer(salt).loads(token)
        except BadSignature:
            continue
        except (ValueError, TypeError):  # signed by us, but not the pair a link carries
            break
        # Only what share() signs: anything else signed with this key (and salt) is not a link.
        if isinstance(named, str) and type(expires) in (int, float) and math.isfinite(expires):
            return salt, named, expires
        break
    raise Forbidden("This share link is not valid: it was changed or cut short. Ask for a new one.")


@bp.get("/s/<token>")
def open_share(token: str):
    salt, named, expires = _verified(token)
    if datetime.now(timezone.utc).timestamp() >= expires:
        raise Gone("This share link has expired. Ask the person who shared it for a new one.")
    if salt == LEGACY_SALT:
        if not current_app.config["SHARE_LEGACY_LINKS"]:
            raise Gone("This share link is from before links could be revoked, and this server no longer "
                       "accepts those. Ask the person who shared it for a new one.")
        file_id = named
    else:
        link = shares().get(named)
        if link is None:  # the file (or its owner) was deleted, and its links with it
            raise NotFound("The file this link shared has been deleted.")
        if link.revoked_at is not None:
            raise Gone("This share link has been revoked. Ask the person who shared it for a new one.")
        file_id = link.file_id
    row = repository().get(file_id)
    if row is None or (row.owner_id and accounts().user(row.owner_id) is None):
        # Deleting a user ends what they shared, as deleting the file does.
        raise NotFound("The file this link shared has been deleted.")
    response = send_stored(row)
    # The link is the credential: keep it out of Referer headers and shared caches.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "private, no-store"
    return response

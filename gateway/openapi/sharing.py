"""The OpenAPI description of share links: making, listing and revoking them,
and the link itself."""
from __future__ import annotations

# The same response and schema builders as the accounts paths, not copies of them.
from gateway.openapi.accounts import (BAD_PAGE, STAMP, STRING, _error, _json, _object, page_of,
                                      page_parameters)


HEX_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
FILE_ID = {"name": "file_id", "in": "path", "required": True, "schema": HEX_ID}
SHARE = _object(["id", "file_id", "url", "created_at", "expires_at", "created_by"],
                id=HEX_ID, file_id=HEX_ID, url={"type": "string", "format": "uri"}, created_at=STAMP,
                expires_at=STAMP, created_by={"type": ["string", "null"],
                                              "description": "The user who made it (null with AUTH=off)."})
NO_FILE = _error("No file with that id (another user's file answers the same).")


def _gone(description: str) -> dict:
    """410: JSON like every error, or a short page for a browser (Accept prefers text/html)."""
    response = _error(description + " A browser gets a short HTML page instead.")
    response["content"]["text/html"] = {"schema": STRING}
    response["headers"] = {"Vary": {"description": "`Accept`: the body depends on it.", "schema": STRING}}
    return response


def sharing_paths() -> dict:
    return {
        "/files/{file_id}/share": {
            "post": {
                "operationId": "shareFile", "summary": "A signed link that downloads the file without a token "
                                                       "(RATE_LIMIT_SHARES, MAX_SHARES_PER_FILE).",
                "tags": ["sharing"], "parameters": [FILE_ID],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"expires_in": {"type": "integer", "minimum": 1,
                                                                    "description": "Seconds (default SHARE_TTL)."}}}}}},
                "responses": {"201": _json("The link; its id revokes it.", SHARE),
                              "400": _error("A bad expires_in."), "404": NO_FILE,
                              "409": _error("The file already has MAX_SHARES_PER_FILE live links: revoke some "
                                            "first."),
                              "410": _error("The file has expired.")},
            },
        },
        "/files/{file_id}/shares": {
            "get": {
                "operationId": "listFileShares", "summary": "The file's live links, newest first, in pages (its "
                                                            "owner, or an admin).",
                "tags": ["sharing"], "parameters": [FILE_ID, *page_parameters()],
                "responses": {"200": _json("One page of links.", page_of("shares", SHARE)), "400": BAD_PAGE,
                              "404": NO_FILE, "410": _error("The file has expired.")},
            },
        },
        "/shares": {
            "get": {
                "operationId": "listShares", "summary": "The live links to the caller's files (an admin's and "
                                                        "AUTH=off: every link), newest first, in pages.",
                "tags": ["sharing"], "parameters": page_parameters(),
                "responses": {"200": _json("One page of links.", page_of("shares", SHARE)), "400": BAD_PAGE},
            },
        },
        "/shares/{share_id}": {
            "delete": {
                "operationId": "revokeShare", "summary": "Revoke a link: it answers 410 from now on.",
                "tags": ["sharing"],
                "parameters": [{"name": "share_id", "in": "path", "required": True, "schema": HEX_ID}],
                "responses": {"204": {"description": "Revoked."},
                              "404": _error("No live link with that id among the caller's (revoked, expired, "
                                            "another user's, or never made).")},
            },
        },
        "/s/{token}": {
            "get": {
                "operationId": "openShare", "summary": "A share link: the file's bytes.", "tags": ["sharing"],
                "parameters": [{"name": "token", "in": "path", "required": True, "schema": STRING}],
                "responses": {"200": {"description": "The file.", "content": {"*/*": {"schema": {
                                  "type": "string", "format": "binary"}}}},
                              "304": {"description": "Not modified."},
                              "403": _error("The link was changed (its signature does not match)."),
                              "404": _error("The file (or its owner) was deleted, and its links with it."),
                              "410": _gone("The link has expired or was revoked, or the file has expired."),
                              "206": {"description": "A range of the file."},
                              "302": {"description": "With STORAGE=s3 and S3_PRESIGNED_DOWNLOADS on: a "
                                                     "presigned URL of the bucket that serves the bytes."},
                              "416": _error("The range cannot be satisfied.")},
            },
        },
    }

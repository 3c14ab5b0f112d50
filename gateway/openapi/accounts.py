"""The OpenAPI description of accounts (AUTH=token) and the authentication
every other operation takes; share links are in sharing.py."""
from __future__ import annotations

import re

from flask import current_app

from gateway.auth.identity import OPEN
from gateway.http.paging import LISTING_PAGE, MAX_PAGE

ERROR = {"$ref": "#/components/schemas/Error"}
OFF = "Accounts are off on this server (AUTH=off)."


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


STRING = {"type": "string"}
STAMP = {"type": "string", "format": "date-time"}
USER = _object(["id", "username", "admin", "created_at"], id=STRING, username=STRING,
               admin={"type": "boolean"}, created_at=STAMP)
TOKEN = _object(["id", "name", "created_at", "last_used_at"], id=STRING, name=STRING, created_at=STAMP,
                last_used_at={"type": ["string", "null"], "format": "date-time"})
SEE_OTHER = {"description": "Redirect (browser forms).", "headers": {"Location": {"schema": STRING}}}
HTML = {"description": "An HTML page.", "content": {"text/html": {"schema": STRING}}}
UNAUTHENTICATED = _error("No valid credentials (AUTH=token): send 'Authorization: Bearer <token>' "
                         "or sign in. Carries WWW-Authenticate: Bearer.")
TOO_MANY = {**_error("Rate limit reached (AUTH=token); wait as long as Retry-After says."),
            "headers": {"Retry-After": {"schema": STRING, "description": "Seconds to wait."}}}
JSON_BODY = {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}}
NEXT_CURSOR = {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null on the last."}
BAD_PAGE = _error("A bad `limit`, or a `cursor` this service did not give out.")


def page_parameters(default: int = LISTING_PAGE) -> list[dict]:
    return [
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": default}},
        {"name": "cursor", "in": "query", "required": False,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
         "description": "Opaque: the `next_cursor` of the previous page."},
    ]


def page_of(key: str, item: dict) -> dict:
    return _object([key, "next_cursor"], **{key: {"type": "array", "maxItems": MAX_PAGE, "items": item}},
                   next_cursor=NEXT_CURSOR)


def accounts_paths() -> dict:
    credentials = _object(["username", "password"], username=STRING, password=STRING,
                          csrf_token={**STRING, "description": "Form posts only: the page's CSRF token."})
    return {
        "/login": {
            "get": {"operationId": "loginPage", "summary": "The sign-in form (HTML).", "tags": ["accounts"],
                    "responses": {"200": HTML, "303": SEE_OTHER}},
            "post": {
                "operationId": "login", "summary": "Sign in: sets the session cookie.", "tags": ["accounts"],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": credentials},
                    "application/x-www-form-urlencoded": {"schema": credentials}}},
                "responses": {
                    "200": _json("Signed in (JSON requests).", _object(["username", "admin"], username=STRING,
                                                                        admin={"type": "boolean"})),
                    "303": SEE_OTHER, "400": _error("Missing username or password."),
                    "401": _error("Wrong username or password."),
                    "403": _error("A form post without this site's CSRF token."),
                    "404": _error(OFF), "429": TOO_MANY,
                },
            },
        },
        "/logout": {
            "post": {"operationId": "logout", "summary": "Sign out: ends the session.", "tags": ["accounts"],
                     "responses": {"204": {"description": "Signed out."}, "303": SEE_OTHER,
                                   "403": _error("Without this site's CSRF token.")}},
        },
        "/me": {
            "get": {"operationId": "me", "summary": "Who the caller is, their usage and quota.", "tags": ["accounts"],
                    "responses": {"200": _json("The caller.", {"type": "object"}), "404": _error(OFF)}},
        },
        "/users": {
            "get": {"operationId": "listUsers", "summary": "Every user (admin), by username, in pages.",
                    "tags": ["accounts"], "parameters": page_parameters(),
                    "responses": {"200": _json("One page of users.", page_of("users", USER)), "400": BAD_PAGE,
                                  "403": _error("Not an admin."), "404": _error(OFF)}},
            "post": {
                "operationId": "createUser", "summary": "Create a user (admin); answers their first token, once.",
                "tags": ["accounts"],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _object(
                    ["username"], username=STRING, password=STRING, admin={"type": "boolean"})}}},
                "responses": {
                    "201": _json("Created.", {**USER, "required": USER["required"] + ["token", "token_id"],
                                              "properties": {**USER["properties"], "token": STRING,
                                                             "token_id": STRING}}),
                    "400": _error("A bad username, password or admin flag."), "403": _error("Not an admin."),
                    "404": _error(OFF), "409": _error("The username is taken."),
                },
            },
        },
        "/users/{user_id}": {
            "delete": {"operationId": "deleteUser",
                       "summary": "Delete a user, their tokens, sessions and share links (admin).",
                       "tags": ["accounts"],
                       "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": STRING}],
                       "responses": {"204": {"description": "Deleted."}, "400": _error("Deleting yourself."),
                                     "403": _error("Not an admin."), "404": _error("No such user, or " + OFF)}},
        },
        "/tokens": {
            "get": {"operationId": "listTokens", "summary": "The caller's API tokens (never their secrets), oldest "
                                                            "first, in pages.",
                    "tags": ["accounts"], "parameters": page_parameters(),
                    "responses": {"200": _json("One page of tokens.", page_of("tokens", TOKEN)), "400": BAD_PAGE,
                                  "404": _error(OFF)}},
            "post": {"operationId": "createToken", "summary": "A new API token for the caller, shown once "
                                                             "(RATE_LIMIT_TOKENS, MAX_TOKENS_PER_USER).",
                     "tags": ["accounts"], "requestBody": JSON_BODY,
                     "responses": {"201": _json("Created.", {**TOKEN, "required": ["id", "token"],
                                                             "properties": {**TOKEN["properties"], "token": STRING}}),
                                   "400": _error("A bad name."), "404": _error(OFF),
                                   "409": _error("The caller already holds MAX_TOKENS_PER_USER tokens: revoke some "
                                                 "first.")}},
        },
        "/tokens/{token_id}": {
            "delete": {"operationId": "revokeToken", "summary": "Revoke one of the caller's tokens.",
                       "tags": ["accounts"],
                       "parameters": [{"name": "token_id", "in": "path", "required": True, "schema": STRING}],
                       "responses": {"204": {"description": "Revoked."},
                                     "404": _error("Not one of the caller's tokens, or " + OFF)}},
        },
    }


RATE_LIMITED = {("/upload", "post"), ("/tus/", "post"), ("/login", "post"), ("/tokens", "post"),
                ("/files/{file_id}/share", "post")}


def open_paths() -> set[str]:
    """The document's paths of the endpoints auth.OPEN names, read from the
    app's routes: one list of open endpoints, not a second copy here."""
    return {re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            for rule in current_app.url_map.iter_rules() if rule.endpoint in OPEN}


def add_authentication(spec: dict) -> None:
    """Security schemes, and the 401/429 answers every protected operation can give."""
    spec["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API token (AUTH=token)."},
        "session": {"type": "apiKey", "in": "cookie", "name": "upload_session",
                    "description": "The signed-in browser's session (with X-CSRF-Token on writes)."},
    }
    # Optional: with AUTH=off no credentials are needed.
    spec["security"] = [{}, {"bearer": []}, {"session": []}]
    public = open_paths()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method not in ("get", "head", "post", "patch", "delete", "put"):
                continue
            if path not in public:
                operation["responses"].setdefault("401", UNAUTHENTICATED)
            if (path, method) in RATE_LIMITED:
                operation["responses"].setdefault("429", TOO_MANY)




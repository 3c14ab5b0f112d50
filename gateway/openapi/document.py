"""GET /openapi.json: an OpenAPI 3.1 description of the gateway's HTTP API.

Built as a plain dict from the same constants the routes use (page size,
stored-name pattern), so the document and the code cannot drift apart on
limits. Every status a route can answer is listed with its body's schema,
errors included, so generated clients and API fuzzers can rely on it.
"""
from __future__ import annotations

import importlib.metadata

from flask import Blueprint, current_app, jsonify

from gateway.http.paging import MAX_PAGE
from gateway.openapi import schemas as openapi_schemas
from gateway.openapi.accounts import BAD_PAGE, accounts_paths, add_authentication, page_of, page_parameters
from gateway.openapi.schemas import ID_PATTERN
from gateway.openapi.sharing import sharing_paths
from gateway.openapi.tus import tus_paths
from gateway.storage.base import NAME_RE

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.1.0"


def package_version() -> str:
    try:
        return importlib.metadata.version("upload-service")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


_ref = openapi_schemas.ref


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _gone(what: str) -> dict:
    """410: JSON like every error, or a short page for a browser (Accept prefers text/html)."""
    response = _error(f"{what} has expired; the reaper has not removed it yet (404 once it has). "
                      "A browser gets a short HTML page instead.")
    response["content"]["text/html"] = {"schema": {"type": "string"}}
    response["headers"] = {"Vary": _header("`Accept`: the body depends on it.")}
    return response


def _json(description: str, schema: dict, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _header(description: str, required: bool = False, **schema) -> dict:
    return {"description": description, "required": required, "schema": {"type": "string", **schema}}


def _stored_bytes(area: str, name_pattern: str, media: list[str], operation_id: str, summary: str) -> dict:
    """GET of stored bytes (a download or a thumbnail): conditional and range requests."""
    binary = {"type": "string", "format": "binary"}
    content = {m: {"schema": binary} for m in media}
    common = {
        "ETag": _header("Strong validator of the bytes.", required=True),
        "Last-Modified": _header("When the bytes were stored."),
        "Cache-Control": _header("Caching rules."),
        "Accept-Ranges": _header("Always `bytes`."),
        "X-Content-Type-Options": _header("Always `nosniff`.", required=True),
        "Content-Disposition": _header("Inline, or attachment for types a browser could run."),
    }
    ok = {"description": f"The {area}.", "headers": common, "content": content}
    redirect = {}
    if area == "file":
        common["Content-Security-Policy"] = _header("`sandbox`, for types a browser could run (SVG, HTML, XML).")
        redirect = {"302": {
            "description": "With STORAGE=s3 and S3_PRESIGNED_DOWNLOADS on: the bytes are at a presigned URL "
                           "of the bucket (it serves Range itself), valid for S3_PRESIGNED_TTL seconds. "
                           "Types a browser could run are always served by the gateway.",
            "headers": {"Location": _header("The presigned URL.", required=True)}}}
    partial = {
        "description": "The requested range.",
        "headers": {**common, "Content-Range": _header("The range sent, e.g. `bytes 0-99/1234`.",
                                                       required=True)},
        "content": content,
    }
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["files"],
            "parameters": [
                {"name": "name", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": name_pattern}},
                {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "A byte range, e.g. `bytes=0-99`."},
                {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"}},
                {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
                {"name": "If-Modified-Since", "in": "header", "required": False, "schema": {"type": "string"}},
                {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": ok,
                "206": partial,
                **redirect,
                "304": {"description": "Not modified (If-None-Match or If-Modified-Since matched)."},
                "404": _error(f"No {area} under that name (never stored, or deleted)."),
                "410": _gone("The file"),
                "412": {"description": "If-Match given and it does not match the ETag "
                                       "(the body is still the bytes).",
                        "content": content},
                "416": {**_error("The range cannot be satisfied."),
                        "headers": {"Content-Range": _header("`bytes */<length>`.")}},
            },
        }
    }


def build_spec() -> dict:
    schemas = openapi_schemas.schemas()
    record_or_batch = {"oneOf": [_ref("Record"), _ref("UploadBatch")]}
    file_id = {"name": "file_id", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": ID_PATTERN}}
    paths = {
        "/": {
            "get": {
                "operationId": "uploadPage",
                "summary": "The upload page (HTML).",
                "tags": ["page"],
                "responses": {"200": {"description": "The page.",
                                      "content": {"text/html": {"schema": {"type": "string"}}}}},
            }
        },
        "/upload": {
            "post": {
                "operationId": "uploadFiles",
                "summary": "Upload one or more files.",
                "description": "Each `file` part is validated (extension, size, content) and stored; "
                               "if any part is refused, nothing from the request is stored. "
                               "One file answers with its record, several with `{\"files\": [...]}`.",
                "tags": ["files"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": 100,
                                        "items": {"type": "string", "format": "binary"},
                                        "description": "One part per file, each with a file name.",
                                    },
                                    "expires_in": {
                                        "type": "integer",
                                        "minimum": 1,
                                        "maximum": current_app.config["FILE_MAX_TTL"],
                                        "description": "Seconds every file of the request lives, from when it "
                                                       "is stored; before or after the files. Without it: the "
                                                       "server's default (`expires_at` null when that is never).",
                                    },
                                },
                            },
                            "encoding": {"file": {"contentType": "application/octet-stream"}},
                        }
                    },
                },
                "responses": {
                    "201": _json("Stored: one record, or `{\"files\": [...]}` for several files.",
                                 record_or_batch,
                                 headers={"Location": _header("The record's URL (one file only).",
                                                              format="uri-reference")}),
                    "400": _error("Malformed request: not multipart/form-data, no `file` part, "
                                  "an empty file name, an empty file, a truncated body, a bad `expires_in`."),
                    "413": _error("Over the size limit (`code`: file_too_large), or over the user's "
                                  "storage quota (AUTH=token)."),
                    "415": _error("Type not allowed, or the content does not match the extension."),
                    "422": _error("Refused by a rule (a plugin's) for another reason; see `code`."),
                    "503": _error("The validator cannot be reached; nothing was stored."),
                },
            }
        },
        "/files": {
            "get": {
                "operationId": "listFiles",
                "summary": "List stored files, newest first, in pages.",
                "tags": ["files"],
                "parameters": [
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}},
                    {"name": "cursor", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
                     "description": "Opaque: the `next_cursor` of the previous page."},
                ],
                "responses": {
                    "200": _json("One page.", _ref("RecordList")),
                    "400": _error("A bad `limit`, or a `cursor` this service did not give out."),
                },
            }
        },
        "/files/{file_id}": {
            "get": {
                "operationId": "getFile",
                "summary": "One file's record.",
                "tags": ["files"],
                "parameters": [file_id],
                "responses": {"200": _json("The record.", _ref("Record")), "404": _error("No file with that id."),
                              "410": _gone("The file")},
            },
            "delete": {
                "operationId": "deleteFile",
                "summary": "Delete a file: its record, bytes and thumbnail.",
                "tags": ["files"],
                "parameters": [file_id],
                "responses": {"204": {"description": "Deleted."}, "404": _error("No file with that id.")},
            },
        },
        "/files/{file_id}/audit": {
            "get": {
                "operationId": "auditFile",
                "summary": "Which validator rules ran on the file and what each decided.",
                "tags": ["files"],
                "parameters": [file_id],
                "responses": {
                    "200": _json("The audit record.", _ref("Audit")),
                    "404": _error("No file with that id."),
                    "410": _error("The file has expired."),
                },
            },
        },
        "/uploads/{name}": _stored_bytes("file", NAME_RE.pattern, ["*/*"], "downloadFile",
                                         "A stored file's bytes, served with the detected Content-Type."),
        "/thumbnails/{name}": _stored_bytes("thumbnail", ID_PATTERN[:-1] + r"\.(jpg|png)$",
                                            ["image/jpeg", "image/png"], "getThumbnail", "A thumbnail image."),
        "/policy": {
            "get": {
                "operationId": "getPolicy",
                "summary": "The validation rules in force.",
                "tags": ["meta"],
                "responses": {
                    "200": _json("The policy.", _ref("Policy")),
                    "503": _error("The validator cannot be reached and no policy is cached."),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: 200 while the gateway is up.",
                "tags": ["meta"],
                "responses": {"200": _json("Up.", _ref("Health"))},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: 200 only when both gRPC services answer their health check.",
                "tags": ["meta"],
                "responses": {
                    "200": _json("Ready.", _ref("Readiness")),
                    "503": _json("Not ready; `services` says which one is not serving, `reasons` why.", _ref("Readiness")),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics.",
                "tags": ["meta"],
                "responses": {"200": {"description": "Prometheus text exposition format.",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
        "/dashboard": {
            "get": {
                "operationId": "dashboardPage",
                "summary": "The operators' live dashboard (HTML): uploads per minute, bytes, refusals by reason, "
                           "the services' health. AUTH=token: admins only.",
                "tags": ["page"],
                "responses": {"200": {"description": "The page.",
                                      "content": {"text/html": {"schema": {"type": "string"}}}},
                              "403": _error("The caller is not an admin (AUTH=token).")},
            }
        },
        "/dashboard/data": {
            "get": {
                "operationId": "dashboardData",
                "summary": "What the dashboard shows, as JSON. AUTH=token: admins only.",
                "tags": ["meta"],
                "responses": {"200": _json("The numbers.", _ref("Dashboard")),
                              "403": _error("The caller is not an admin (AUTH=token).")},
            }
        },
        "/refusals": {
            "get": {
                "operationId": "listRefusals",
                "summary": "The files refused lately, newest first, in pages (kept REFUSALS_KEEP_DAYS): who, "
                           "when, which file, which rule and why. AUTH=token: admins only.",
                "tags": ["meta"], "parameters": page_parameters(),
                "responses": {"200": _json("One page of refusals.", page_of("refusals", _ref("Refusal"))),
                              "400": BAD_PAGE, "403": _error("The caller is not an admin (AUTH=token).")},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "tags": ["meta"],
                "responses": {"200": _json("The OpenAPI 3.1 description of this API.", {"type": "object"})},
            }
        },
    }
    paths.update(tus_paths())
    paths.update(accounts_paths())
    paths.update(sharing_paths())
    spec = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Upload service gateway",
            "version": package_version(),
            "description": "Upload, list, download and delete files; errors are JSON `{\"error\": ...}`.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "files", "description": "Uploads, records, downloads and thumbnails."},
            {"name": "meta", "description": "Health, readiness, policy, metrics and this document."},
            {"name": "page", "description": "The browser pages: uploads, and the operators' dashboard."},
            {"name": "tus", "description": "Resumable uploads, tus 1.0.0."},
            {"name": "accounts", "description": "Users, API tokens and sign-in (AUTH=token)."},
            {"name": "sharing", "description": "Share links: made, listed, revoked, and opened without a token."},
        ],
        "paths": paths,
        "components": {"schemas": schemas},
    }
    add_authentication(spec)
    _add_transport_failures(spec)
    return spec


def _add_transport_failures(spec: dict) -> None:
    """What any request with a body can meet on the way in: a client too slow
    (408) and a full data disk (507)."""
    for path, method in (("/upload", "post"), ("/tus/", "post"), ("/tus/{upload_id}", "patch"),
                         ("/tus/{upload_id}", "post")):
        operation = spec["paths"].get(path, {}).get(method)
        if operation is None:
            continue
        responses = operation["responses"]
        responses.setdefault("408", _error("The body stopped arriving (CLIENT_IDLE_TIMEOUT, CLIENT_MIN_RATE); "
                                           "nothing was stored."))
        responses.setdefault("507", _error("The data disk is full; nothing was stored."))


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_spec())

"""The schemas (components) of the gateway's OpenAPI document."""
from __future__ import annotations

from gateway.http.paging import MAX_PAGE
from gateway.storage.base import NAME_RE

ID_PATTERN = "^[0-9a-f]{32}$"
# The grpc.health.v1 status names, plus what the gateway reports when a service does not answer.
SERVICE_STATES = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN", "UNREACHABLE"]


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def schemas() -> dict:
    nullable_side = {"type": ["integer", "null"], "minimum": 1}
    count = {"type": "integer", "minimum": 0}
    return {
        "Error": {
            "type": "object",
            "description": "Every error: a sentence a person understands; refusals of a file add "
                           "a stable reason `code` and the file's name.",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "minLength": 1},
                "code": {
                    "type": "string",
                    "description": "Why the rules refused the file, e.g. extension_not_allowed, "
                                   "content_mismatch, executable_content, file_too_large, empty_file; "
                                   "plugins may add their own codes.",
                },
                "filename": {"type": "string", "description": "The refused file's (sanitized) name."},
                "rule": {"type": "string",
                         "description": "The validator's rule that refused the file (a plugin's name, or a "
                                        "built-in rule's), when a rule did.",
                         "examples": ["validator_service.rules.content"]},
            },
        },
        "Record": {
            "type": "object",
            "description": "One stored file.",
            "required": ["id", "filename", "original_name", "size", "size_formatted", "type", "is_image",
                         "width", "height", "thumbnail_url", "download_url", "sha256", "uploaded_at",
                         "expires_at"],
            "properties": {
                "id": {"type": "string", "pattern": ID_PATTERN},
                "filename": {"type": "string", "pattern": NAME_RE.pattern,
                             "description": "The stored (random) name, as used in download_url."},
                "original_name": {"type": "string", "minLength": 1, "maxLength": 255,
                                  "description": "The client's name, sanitized; metadata only."},
                "size": {"type": "integer", "minimum": 0, "description": "Bytes."},
                "size_formatted": {"type": "string", "examples": ["1.5 KiB"]},
                "type": {"type": "string", "description": "The detected MIME type."},
                "is_image": {"type": "boolean"},
                "width": {**nullable_side, "description": "Pixels, for images; null otherwise."},
                "height": {**nullable_side, "description": "Pixels, for images; null otherwise."},
                "thumbnail_url": {"type": ["string", "null"], "format": "uri-reference",
                                  "description": "Null while there is no thumbnail."},
                "download_url": {"type": "string", "format": "uri-reference"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "uploaded_at": {"type": "string", "format": "date-time", "description": "UTC."},
                "expires_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "RecordList": {
            "type": "object",
            "description": "One page of records, newest first.",
            "required": ["files", "next_cursor"],
            "properties": {
                "files": {"type": "array", "maxItems": MAX_PAGE, "items": ref("Record")},
                "next_cursor": {"type": ["string", "null"],
                                "description": "Pass as `cursor` for the next page; null on the last page."},
            },
        },
        "UploadBatch": {
            "type": "object",
            "description": "The records of a request that sent several files.",
            "required": ["files"],
            "properties": {"files": {"type": "array", "minItems": 2, "items": ref("Record")}},
        },
        "Policy": {
            "type": "object",
            "description": "The rules in force; the upload page configures its own checks from it.",
            "required": ["allowed", "extensions", "accept", "max_file_size", "max_file_size_formatted",
                         "max_image_dimension", "whole_file", "tus"],
            "properties": {
                "allowed": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["extension", "mime_types"],
                        "properties": {
                            "extension": {"type": "string", "examples": ["png"]},
                            "mime_types": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
                "extensions": {"type": "array", "items": {"type": "string"}},
                "accept": {"type": "string", "description": "For an <input type=file accept=...>.",
                           "examples": [".jpg,.png"]},
                "max_file_size": {"type": "integer", "minimum": 0, "description": "Bytes."},
                "max_file_size_formatted": {"type": "string"},
                "max_image_dimension": {"type": "integer", "minimum": 0, "description": "Pixels, per side."},
                "plugins": {
                    "type": "object",
                    "description": "The plugins loaded, built-in rules included: each service's. "
                                   "With AUTH=token, for admins only.",
                    "properties": {
                        service: {"type": "array", "items": {
                            "type": "object", "required": ["name", "from", "hooks"],
                            "properties": {"name": {"type": "string"},
                                           "from": {"type": "string",
                                                    "description": "built-in, the distribution and version, "
                                                                   "or UPLOAD_PLUGINS or in-process"},
                                           "hooks": {"type": "array", "items": {"type": "string"}}}}}
                        for service in ("validator", "thumbnail", "gateway")},
                },
                "whole_file": {"type": "boolean",
                               "description": "A rule reads every byte of each file (e.g. the ClamAV rule): "
                                              "the verdict comes after the last one."},
                "tus": {
                    "type": "object",
                    "required": ["endpoint", "chunk_size"],
                    "properties": {
                        "endpoint": {"type": "string"},
                        "chunk_size": {"type": "integer", "minimum": 1},
                    },
                },
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["ready", "services", "reasons"],
            "properties": {
                "ready": {"type": "boolean"},
                "services": {
                    "type": "object",
                    "required": ["validator", "thumbnail"],
                    "properties": {
                        "validator": {"type": "string", "enum": SERVICE_STATES},
                        "thumbnail": {"type": "string", "enum": SERVICE_STATES},
                    },
                },
                "reasons": {
                    "type": "object",
                    "description": "For each service that is not SERVING, a sentence saying why (e.g. the "
                                   "validator is up but cannot judge files while clamd does not answer).",
                    "additionalProperties": {"type": "string"},
                },
            },
        },
        "Audit": {
            "type": "object",
            "description": "The validator's verdict on a stored file, as recorded when it was stored.",
            "required": ["id", "filename", "original_name", "size", "sha256", "uploaded_at", "detected_type",
                         "accepted", "bytes_read", "decisions", "reasons"],
            "properties": {
                "id": {"type": "string", "pattern": ID_PATTERN},
                "filename": {"type": "string"},
                "original_name": {"type": "string"},
                "size": {"type": "integer", "minimum": 0},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "uploaded_at": {"type": "string", "format": "date-time"},
                "detected_type": {"type": "string"},
                "accepted": {"type": "boolean"},
                "bytes_read": {"type": "integer", "minimum": 0,
                               "description": "Bytes of the file's head the rules read before deciding."},
                "decisions": {"type": "array", "items": {
                    "type": "object", "required": ["rule", "outcome", "code"],
                    "properties": {"rule": {"type": "string"}, "outcome": {"type": "string", "enum": ["pass", "reject"]},
                                   "code": {"type": "string"}}}},
                "reasons": {"type": "array", "items": {
                    "type": "object", "required": ["code", "message", "rule"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                   "rule": {"type": "string"}}}},
                "transform": {
                    "type": ["object", "null"],
                    "description": "What was changed before the bytes were stored (IMAGE_METADATA), null when "
                                   "they are stored as uploaded: `size` and `sha256` above are the stored "
                                   "bytes', these the upload's.",
                    "required": ["names", "removed", "mode", "uploaded_size", "uploaded_sha256"],
                    "properties": {
                        "names": {"type": "array", "items": {"type": "string"}},
                        "removed": {"type": "array", "items": {"type": "string"},
                                    "description": "e.g. exif.gps, exif, xmp, iptc, comment, text."},
                        "mode": {"type": "string", "enum": ["strip-location", "strip-all"]},
                        "uploaded_size": {"type": "integer", "minimum": 0},
                        "uploaded_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    },
                },
            },
        },
        "Dashboard": {
            "type": "object",
            "description": "GET /dashboard/data. `per_minute`, `window` and `stored` come from the database "
                           "(files that still exist); `outcomes` and `refusals` from this gateway's metrics, "
                           "counted since `since`.",
            "required": ["generated_at", "since", "window_minutes", "per_minute", "window", "stored", "outcomes",
                         "refusals", "services", "thumbnails_pending", "recent_refusals"],
            "properties": {
                "generated_at": {"type": "string", "format": "date-time"},
                "since": {"type": "string", "format": "date-time", "description": "When this gateway started."},
                "window_minutes": {"type": "integer", "minimum": 1},
                "per_minute": {"type": "array", "description": "Oldest first; the last one is the current minute.",
                               "items": {"type": "object", "required": ["minute", "uploads", "bytes"],
                                         "properties": {"minute": {"type": "string", "format": "date-time"},
                                                        "uploads": count, "bytes": count}}},
                "window": {"type": "object", "required": ["uploads", "bytes"],
                           "properties": {"uploads": count, "bytes": count}},
                "stored": {"type": "object", "required": ["files", "bytes"],
                           "properties": {"files": count, "bytes": count}},
                "outcomes": {"type": "object", "required": ["stored", "refused", "error"],
                             "properties": {"stored": count, "refused": count, "error": count}},
                "refusals": {"type": "array", "description": "Most frequent first.",
                             "items": {"type": "object", "required": ["reason", "count"],
                                       "properties": {"reason": {"type": "string"}, "count": count}}},
                "services": {"type": "object", "required": ["validator", "thumbnail"],
                             "properties": {"validator": {"type": "string", "enum": SERVICE_STATES},
                                            "thumbnail": {"type": "string", "enum": SERVICE_STATES}}},
                "thumbnails_pending": count,
                "recent_refusals": {"type": "array", "description": "The latest refusals, newest first "
                                                                    "(GET /refusals has them all).",
                                    "items": {"$ref": "#/components/schemas/Refusal"}},
            },
        },
        "Refusal": {
            "type": "object",
            "description": "One refused file, as recorded when the gateway answered the refusal.",
            "required": ["id", "refused_at", "user_id", "original_name", "size", "rule", "code", "via"],
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                "refused_at": {"type": "string", "format": "date-time"},
                "user_id": {"type": ["string", "null"], "description": "Who sent it (null with AUTH=off)."},
                "original_name": {"type": "string"},
                "size": {"type": ["integer", "null"], "minimum": 0, "description": "Bytes, when known."},
                "rule": {"type": "string", "description": "The validator's rule that refused it; empty for the "
                                                          "gateway's own refusals (a size limit)."},
                "code": {"type": "string"},
                "via": {"type": "string", "enum": ["upload", "tus"]},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "const": "ok"}},
        },
    }

"""The OpenAPI description of /tus/ (tus 1.0.0: https://tus.io/protocols/resumable-upload)."""
from __future__ import annotations

ID_PATTERN = "^[0-9a-f]{32}$"


def _header(name: str, description: str, required: bool = False, **schema) -> dict:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": {"type": "string", **schema}}


def _error(description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _bare(description: str, headers: tuple[str, ...] = ()) -> dict:
    response = {"description": description}
    if headers:
        response["headers"] = {h: {"schema": {"type": "string"}} for h in headers}
    return response


# Required by the protocol, but its absence is answered 412 (not 400), so it is
# described as optional for generic clients and fuzzers.
TUS_RESUMABLE = _header("Tus-Resumable", "Protocol version, 1.0.0; without it: 412.", enum=["1.0.0"])
UPLOAD_ID = {"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
STATE = ("Upload-Offset", "Upload-Length", "Upload-Defer-Length", "Upload-Metadata", "Upload-Concat",
         "Upload-Expires", "Upload-File-Id", "Tus-Resumable", "Cache-Control")
COMMON_ERRORS = {
    "400": _error("A malformed tus header."),
    "404": _error("No upload at this address (never existed, or forgotten)."),
    "410": _error("The upload ended: terminated, refused, expired, or finished and forgotten."),
    "412": _error("Tus-Resumable is missing or not 1.0.0 (the response carries Tus-Version)."),
    "503": _error("The validator cannot be reached."),
}
REFUSALS = {
    "413": _error("Over Upload-Length or the policy's max file size."),
    "415": _error("A refused type (the same body as POST /upload), or a PATCH without "
                  "Content-Type: application/offset+octet-stream."),
    "422": _error("Another refusal of the file (reason code in the body)."),
    "423": _error("Another request is writing this upload."),
    "460": _error("The body does not match Upload-Checksum; the offset did not move."),
}
CAPABILITIES = ("Tus-Version", "Tus-Extension", "Tus-Max-Size", "Tus-Checksum-Algorithm")
CHUNK = {"application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _options(operation_id: str, params: tuple = ()) -> dict:
    return {"operationId": operation_id, "summary": "The server's tus capabilities.", "tags": ["tus"],
            "parameters": list(params), "responses": {"204": _bare("Capabilities.", CAPABILITIES)}}


def _patch(operation_id: str, summary: str, extra_params: tuple = ()) -> dict:
    return {
        "operationId": operation_id, "summary": summary, "tags": ["tus"],
        "parameters": [UPLOAD_ID, TUS_RESUMABLE,
                       _header("Upload-Offset", "Where this chunk starts; must equal the upload's offset.",
                               pattern="^[0-9]+$"),
                       _header("Upload-Checksum", "`<algorithm> <base64 digest>` of this chunk."),
                       _header("Upload-Length", "Sets a deferred length.", pattern="^[0-9]+$"),
                       *extra_params],
        "requestBody": {"required": False, "content": CHUNK},
        "responses": {"204": _bare("Stored; the new offset (and Upload-File-Id once finished).", STATE),
                      "403": _error("A final concatenation cannot be written to."),
                      "409": _error("Upload-Offset is not the upload's offset."),
                      **COMMON_ERRORS, **REFUSALS},
    }


def _delete(operation_id: str, extra_params: tuple = ()) -> dict:
    return {"operationId": operation_id, "summary": "Terminate an upload (its bytes are removed).",
            "tags": ["tus"], "parameters": [UPLOAD_ID, TUS_RESUMABLE, *extra_params],
            "responses": {"204": _bare("Terminated."), "423": REFUSALS["423"], **COMMON_ERRORS}}


def tus_paths() -> dict:
    override = _header("X-HTTP-Method-Override", "PATCH or DELETE, for clients limited to POST.", True,
                       enum=["PATCH", "DELETE"])
    override_op = _patch("tusOverride", "PATCH or DELETE through POST (X-HTTP-Method-Override).", (override,))
    override_op["responses"].update(_delete("_", ())["responses"])
    return {
        "/tus/": {
            "options": _options("tusCapabilities"),
            "post": {
                "operationId": "tusCreate",
                "summary": "Create an upload (optionally with its first chunk, or as a concatenation).",
                "tags": ["tus"],
                "parameters": [
                    TUS_RESUMABLE,
                    _header("Upload-Length", "The file's size in bytes.", pattern="^[0-9]+$"),
                    _header("Upload-Defer-Length", "1: the size comes in a later PATCH.", enum=["1"]),
                    _header("Upload-Metadata", "`key base64value` pairs: filename (or name), filetype (or "
                                               "type), expires_in (seconds the stored file lives, as for POST /upload)."),
                    _header("Upload-Concat", "`partial`, or `final;<url> <url>...`."),
                    _header("Upload-Checksum", "Checksum of a body sent with the creation."),
                ],
                "requestBody": {"required": False, "content": CHUNK},
                "responses": {"201": _bare("Created; Location is the upload's URL.", ("Location", *STATE)),
                              **COMMON_ERRORS, **REFUSALS},
            },
        },
        "/tus/{upload_id}": {
            # Capabilities do not depend on the upload: any id is answered.
            "options": _options("tusUploadCapabilities", ({**UPLOAD_ID, "schema": {"type": "string"}},)),
            "head": {"operationId": "tusStatus", "summary": "Where an upload stands.", "tags": ["tus"],
                     "parameters": [UPLOAD_ID, TUS_RESUMABLE],
                     "responses": {"200": _bare("The upload's offset, length and metadata.", STATE),
                                   **COMMON_ERRORS}},
            "patch": _patch("tusWrite", "Append a chunk at Upload-Offset."),
            "delete": _delete("tusTerminate"),
            "post": override_op,
        },
    }

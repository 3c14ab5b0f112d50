"""Small JSON request bodies (sign-in, accounts, share links), read once and
checked the same way everywhere: an object, with text fields that are text."""
from __future__ import annotations

from flask import request

from protos.errors import InvalidInput

# Every request body but an upload's is small; a bigger one is refused (413)
# before it is read, so an open endpoint such as /login cannot be used to fill memory.
SMALL_BODY = 64 * 1024
UPLOAD_ENDPOINTS = {"uploads.upload", "tus.create", "tus.patch", "tus.method_override"}


def json_object(example: str = "{}") -> dict:
    """The body as a JSON object; an empty body is an empty object."""
    if not request.content_length and "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise InvalidInput(f"Send a JSON object as the request body, like {example}.")
    return data


def text(value, name: str, *, max_length: int = 1024) -> str:
    """A JSON (or form) value that must be text a database and a log can hold."""
    if not isinstance(value, str):
        raise InvalidInput(f"'{name}' must be a string.")
    if len(value) > max_length:
        raise InvalidInput(f"'{name}' must be at most {max_length} characters long.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"'{name}' is not valid text (it holds a lone surrogate).") from None
    if "\x00" in value:
        # PostgreSQL's text cannot hold NUL (SQLite's can): refused alike on both.
        raise InvalidInput(f"'{name}' is not valid text (it holds a NUL character).")
    return value


def limit_small_bodies() -> None:
    """before_request: cap every body but an upload's at SMALL_BODY (werkzeug
    then answers 413 as soon as more arrives, chunked or not)."""
    if request.endpoint not in UPLOAD_ENDPOINTS:
        request.max_content_length = SMALL_BODY

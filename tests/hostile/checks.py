"""What every hostile upload is checked against, through the real gateway.

A refusal: the status, the JSON error with its reason code, and nothing left
behind (no record, no byte under DATA_DIR/files). An acceptance: a random
stored name, a sanitized original name, and a download with the detected
type, nosniff, and for types a browser would run an attachment in a
Content-Security-Policy sandbox.
"""
from __future__ import annotations

import os
import re
import unicodedata
from urllib.parse import quote, unquote

from gateway.http.downloads import ACTIVE_TYPES

STORED_NAME = re.compile(r"^[0-9a-f]{32}\.[a-z0-9]{1,16}$")
# Characters that are, or become under compatibility normalization (what
# download clients and Windows "best fit" code pages do), a path separator.
SEPARATORS = {"/", "\\"} | {chr(c) for c in range(0x80, 0x10000)
                            if any(s in unicodedata.normalize("NFKC", chr(c)) for s in "/\\")}


BOUNDARY = "hostile-boundary-7e3f"


def filename_param(name: str) -> bytes:
    """How a name travels in the part's Content-Disposition, byte for byte: a
    quoted string for printable ASCII (backslash-escaped, as curl does), else
    RFC 5987/7578 ``filename*=UTF-8''...``, which carries any character
    (NUL, CR/LF, bidi controls) exactly as given."""
    if name.isascii() and name.isprintable():
        return b'filename="' + name.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'
    return b"filename*=UTF-8''" + quote(name, safe="").encode()


def multipart(param: bytes, data: bytes, content_type: bytes = b"application/octet-stream") -> bytes:
    return (f"--{BOUNDARY}\r\n".encode()
            + b'Content-Disposition: form-data; name="file"; ' + param + b"\r\n"
            + b"Content-Type: " + content_type + b"\r\n\r\n" + data + f"\r\n--{BOUNDARY}--\r\n".encode())


def post_raw(client, param: bytes, data: bytes):
    """POST /upload with the part header exactly as given (a hostile client controls every byte)."""
    return client.post("/upload", data=multipart(param, data),
                       content_type=f"multipart/form-data; boundary={BOUNDARY}")


def post(client, name: str, data: bytes):
    return post_raw(client, filename_param(name), data)


def stored_files(app) -> list[str]:
    root = os.path.join(app.config["DATA_DIR"], "files")
    return sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names)


def assert_nothing_stored(client, app) -> None:
    assert client.get("/files").get_json()["files"] == []
    assert stored_files(app) == []


def assert_refused(client, app, name: str, data: bytes, status: int, code: str) -> dict:
    response = post(client, name, data)
    body = response.get_json()
    assert response.status_code == status, body
    assert body["code"] == code, body
    assert body["error"].endswith(".") and len(body["error"].split()) >= 4
    assert_nothing_stored(client, app)
    return body


def assert_safe_original_name(name: str) -> None:
    assert name and len(name.encode()) <= 255
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in name), ascii(name)
    assert not SEPARATORS & set(name), ascii(name)
    assert name == unicodedata.normalize("NFC", name)
    assert name.strip(" .") == name


def assert_stored(client, app, name: str, data: bytes, mime: str) -> dict:
    """Upload, expect 201, and check the record and what is on disk; returns the record."""
    response = post(client, name, data)
    rec = response.get_json()
    assert response.status_code == 201, rec
    # The stored name is ours: 128 random bits and the validated extension, nothing of the client's.
    assert STORED_NAME.fullmatch(rec["filename"]), rec["filename"]
    assert rec["type"] == mime
    assert rec["size"] == len(data)
    assert_safe_original_name(rec["original_name"])
    [path] = [p for p in stored_files(app) if os.path.basename(p) == rec["filename"]]
    relative = os.path.relpath(path, os.path.join(app.config["DATA_DIR"], "files"))
    assert relative == os.path.join(rec["filename"][:2], rec["filename"][2:4], rec["filename"])
    with open(path, "rb") as stored:
        assert stored.read() == data  # kept as sent: never unpacked, rewritten or "cleaned"
    return rec


def assert_safe_download(client, rec: dict, data: bytes) -> object:
    """The download of a stored record: the bytes as sent, the detected type,
    nosniff, and active types only as sandboxed attachments."""
    response = client.get(rec["download_url"])
    assert response.status_code == 200
    assert response.data == data
    mime = rec["type"]
    assert response.headers["Content-Type"].split(";")[0] == mime
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    disposition = response.headers["Content-Disposition"]
    active = mime in ACTIVE_TYPES or mime.endswith("+xml")
    if active:
        assert disposition.startswith("attachment;")
        assert response.headers["Content-Security-Policy"] == "sandbox"
    else:
        assert disposition.startswith("inline;")
    assert_unsplittable(response, rec["original_name"])
    return response


def assert_unsplittable(response, expected_name: str) -> None:
    """No header value carries a line break, and no header was smuggled in."""
    for key, value in response.headers.items():
        assert not re.search(r"[\r\n\x00]", key + value), (key, value)
    assert "Set-Cookie" not in response.headers
    assert len(response.headers.getlist("Content-Disposition")) == 1
    disposition = response.headers["Content-Disposition"]
    # Every filename the header offers (the ASCII fallback and RFC 5987's) is one path component.
    offered = {}
    for match in re.finditer(r'filename(\*?)=("(?:[^"\\]|\\.)*"|[^;]+)', disposition):
        star, value = match.groups()
        if star:
            offered["filename*"] = unquote(value.split("''", 1)[1])
        elif value.startswith('"'):
            offered["filename"] = re.sub(r"\\(.)", r"\1", value[1:-1])
        else:
            offered["filename"] = value
    assert offered, disposition
    for name in offered.values():
        assert not SEPARATORS & set(name), disposition
    # The name a browser uses (RFC 6266: filename* first) is the record's sanitized one.
    assert offered.get("filename*", offered["filename"]) == expected_name, disposition

"""tus 1.0.0 wire details: headers in, headers out. No state here."""
from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from gateway.ingest.names import sanitize
from protos.errors import InvalidInput

VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "creation-defer-length", "termination", "checksum",
              "expiration", "concatenation")
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512, "md5": hashlib.md5}
PATCH_TYPE = "application/offset+octet-stream"
_KEY = re.compile(r"^[\x21-\x7e]+$")
_UPLOAD_URL = re.compile(r"(?:^|/)tus/([0-9a-f]{32})/?$")


class ChecksumMismatch(Exception):
    """The body does not match Upload-Checksum (status 460, which no library knows)."""


def parse_size(value: str | None, header: str) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise InvalidInput(f"{header} must be a non-negative whole number.")
    return int(value)


def parse_metadata(header: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64(value)` pairs; values may be absent."""
    result: dict[str, str] = {}
    if not header or not header.strip():
        return result
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if not key or not _KEY.match(key) or len(parts) > 2:
            raise InvalidInput("Upload-Metadata must be comma-separated 'key base64value' pairs with ASCII keys.")
        if key in result:
            raise InvalidInput(f"Upload-Metadata has the key {key!r} twice.")
        try:
            raw = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
            result[key] = raw.decode("utf-8")
        except ValueError:  # not base64 (non-ASCII letters too: WSGI gives header bytes as latin-1), not UTF-8
            raise InvalidInput(f"Upload-Metadata's value for {key!r} is not base64 of UTF-8 text.") from None
    return result


@dataclass(frozen=True)
class UploadMetadata:
    original_name: str
    declared_type: str
    # As sent; gateway.storage.expiry judges it against the settings.
    expires_in: str | None


def read_metadata(values: dict[str, str]) -> UploadMetadata:
    """The keys the service understands (Uppy sends `name` and `type`)."""
    name = values.get("filename") or values.get("name") or ""
    return UploadMetadata(
        original_name=sanitize(name) if name else "",
        # The client's claim, for the validator and the record; control characters dropped
        # (PostgreSQL's text cannot hold NUL, and no MIME type has any).
        declared_type="".join(c for c in (values.get("filetype") or values.get("type") or "")
                              if c.isprintable())[:255],
        expires_in=values.get("expires_in"),
    )


def parse_checksum(header: str | None):
    """Upload-Checksum: `<algorithm> <base64 digest>` -> (hasher, expected digest) or None."""
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2 or parts[0] not in CHECKSUMS:
        raise InvalidInput(f"Upload-Checksum must be '<algorithm> <base64>' with one of: {', '.join(CHECKSUMS)}.")
    try:
        expected = base64.b64decode(parts[1], validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise InvalidInput("Upload-Checksum's digest is not base64.") from None
    return CHECKSUMS[parts[0]](), expected


def parse_concat(header: str | None) -> tuple[str, list[str]] | None:
    """Upload-Concat: `partial`, or `final;<url> <url>...` -> ("partial"|"final", upload ids)."""
    if header is None:
        return None
    header = header.strip()
    if header == "partial":
        return "partial", []
    if header.startswith("final;"):
        ids = []
        for url in header[len("final;"):].split():
            match = _UPLOAD_URL.search(url.split("?", 1)[0])
            if not match:
                raise InvalidInput(f"Upload-Concat names {url!r}, which is not an upload of this server.")
            if match.group(1) in ids:
                # tusd would copy it twice; here each partial upload is bytes of its own, joined once.
                raise InvalidInput(f"Upload-Concat names the partial upload {match.group(1)} more than once; "
                                   "each partial upload can be joined only once.")
            ids.append(match.group(1))
        if not ids:
            raise InvalidInput("Upload-Concat: final needs at least one partial upload.")
        return "final", ids
    raise InvalidInput("Upload-Concat must be 'partial' or 'final;<url> <url>...'.")


def http_date(value: datetime) -> str:
    return format_datetime(value, usegmt=True)

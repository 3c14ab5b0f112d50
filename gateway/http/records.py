"""The public JSON record of a stored file (the contract's field list)."""
from __future__ import annotations

from flask import url_for

from gateway.metadata.files import FileRow
from protos.text import human_size


def iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def record(row: FileRow, url=url_for) -> dict:
    """``url(endpoint, **values)`` builds the URLs: Flask's ``url_for`` in a request,
    another builder outside one (gateway/events: the records events carry)."""
    return {
        "id": row.id,
        "filename": row.filename,
        "original_name": row.original_name,
        "size": row.size,
        "size_formatted": human_size(row.size),
        "type": row.type,
        "is_image": row.is_image,
        "width": row.width,
        "height": row.height,
        "thumbnail_url": url("downloads.thumbnail", name=row.thumbnail) if row.thumbnail else None,
        "download_url": url("downloads.download", name=row.filename),
        "sha256": row.sha256,
        "uploaded_at": iso(row.uploaded_at),
        "expires_at": iso(row.expires_at),
    }

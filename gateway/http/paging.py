"""`?limit=&cursor=` on every listing: read and checked in one place, so every
listing refuses a bad one with the same 400 sentence."""
from __future__ import annotations

from collections.abc import Callable

from flask import request

from protos.errors import InvalidInput

# GET /files keeps the page it always had; the newer listings (tokens, users, share
# links) answer 100 by default, as many tokens as MAX_TOKENS_PER_USER allows by
# default, so a client written before they were paged still sees them all.
DEFAULT_PAGE = 50
LISTING_PAGE = 100
MAX_PAGE = 200


def page_limit(default: int = DEFAULT_PAGE) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and 1 <= int(raw) <= MAX_PAGE):
        raise InvalidInput(f"limit must be a whole number from 1 to {MAX_PAGE}.")
    return int(raw)


def paged(read: Callable[[int, str | None], tuple[list, str | None]], default: int = LISTING_PAGE):
    """``read(limit, cursor)`` with the request's paging; a cursor the repository
    does not recognise (ValueError) is the client's mistake: 400."""
    limit = page_limit(default)
    try:
        return read(limit, request.args.get("cursor") or None)
    except ValueError:
        raise InvalidInput("The cursor is not one this service gave out.") from None

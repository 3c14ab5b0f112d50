"""GET /dashboard: a small live page for operators, and GET /dashboard/data, the
JSON it polls. With AUTH=token both are an admin's (a signed-in session or a
token): others get 401, non-admins 403.

Uploads and bytes per minute come from the database (the files table by
upload time), so every gateway replica sharing it shows the same; refusals,
outcomes and errors come from this gateway's metrics registry (since it
started); the services' health is asked as /readyz asks it.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from flask import Blueprint, current_app, jsonify

from gateway import metrics
from gateway.auth.identity import auth_enabled, current_user
from gateway.http.html import render_page
from gateway.http.records import iso
from gateway.ingest.services import services
from gateway.http.paging import paged
from gateway.metadata.files import repository
from gateway.metadata.refusals import refusal_log
from protos.errors import Forbidden, Unauthenticated

bp = Blueprint("dashboard", __name__)

# Minutes of uploads the page charts (the current, unfinished minute included).
WINDOW_MINUTES = 30
# How often the page asks for fresh numbers.
POLL_SECONDS = 5
# The stored totals count and sum the whole files table, too much to do on every
# poll of every open page once it holds millions of rows: the whole table is
# read at most this often per gateway, and in between only the files uploaded
# from RECENT before that count on are counted again (a range of the uploaded_at
# index), so new uploads and their deletion show at once; the deletion of an
# older file shows at the next whole count.
TOTALS_SECONDS = 60
# Longer than an upload can take between its uploaded_at and its row being written.
RECENT = timedelta(minutes=10)


@bp.before_request
def _admins_only():
    if not auth_enabled():
        return
    user = current_user()
    if user is None:  # auth already answered 401; this endpoint is not open
        raise Unauthenticated()
    if not user.admin:
        raise Forbidden("Only an admin can see the dashboard.")


@bp.get("/dashboard")
def page():
    return render_page("dashboard.html", user=current_user(), poll_seconds=POLL_SECONDS,
                       window_minutes=WINDOW_MINUTES)


def per_minute(now: datetime) -> list[dict]:
    """The last WINDOW_MINUTES minutes, oldest first, with zeros where nothing came."""
    current = now.replace(second=0, microsecond=0)
    first = current - timedelta(minutes=WINDOW_MINUTES - 1)
    counts = repository().per_minute(first)
    minutes = []
    for i in range(WINDOW_MINUTES):
        minute = first + timedelta(minutes=i)
        files, size = counts.get(minute, (0, 0))
        minutes.append({"minute": iso(minute), "uploads": files, "bytes": size})
    return minutes


class StoredTotals:
    """(files, bytes) stored, for one gateway's dashboards (see TOTALS_SECONDS)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counted_at = None  # monotonic time of the last whole count
        self._since = None       # its "recent" files are those uploaded from here on...
        self._older = (0, 0)     # ...and these are the others, as it found them

    def __call__(self, now: datetime) -> tuple[int, int]:
        repo = repository()
        with self._lock:  # one whole count at a time; pages polling meanwhile wait for its answer
            if self._counted_at is None or time.monotonic() - self._counted_at >= TOTALS_SECONDS:
                since = now - RECENT
                (files, size), (recent, recent_size) = repo.totals(since)
                self._since, self._older = since, (files - recent, size - recent_size)
                self._counted_at = time.monotonic()
            since, (older, older_size) = self._since, self._older
        files, size = repo.uploaded_since(since)
        return older + files, older_size + size


def stored_totals(now: datetime) -> tuple[int, int]:
    return current_app.extensions.setdefault("dashboard_totals", StoredTotals())(now)


@bp.get("/dashboard/data")
def data():
    now = datetime.now(timezone.utc)
    minutes = per_minute(now)
    status = services().health()
    metrics.observe_services(status)
    pending = repository().count_pending_thumbnails()
    metrics.THUMBNAILS_PENDING.set(pending)
    stored_files, stored_bytes = stored_totals(now)
    outcomes = metrics.uploads_by_outcome()
    refusals = sorted(metrics.refusals_by_reason().items(), key=lambda item: (-item[1], item[0]))
    response = jsonify(
        generated_at=iso(now),
        since=iso(datetime.fromtimestamp(metrics.STARTED, timezone.utc)),
        window_minutes=WINDOW_MINUTES,
        per_minute=minutes,
        window={"uploads": sum(m["uploads"] for m in minutes), "bytes": sum(m["bytes"] for m in minutes)},
        stored={"files": stored_files, "bytes": stored_bytes},
        outcomes={name: outcomes.get(name, 0) for name in ("stored", "refused", "error")},
        refusals=[{"reason": reason, "count": count} for reason, count in refusals],
        services=status,
        thumbnails_pending=pending,
        recent_refusals=[refusal_json(r) for r in refusal_log().page(RECENT_REFUSALS)[0]],
    )
    response.headers["Cache-Control"] = "no-store"
    return response


# Shown on the dashboard; GET /refusals pages through all that are kept.
RECENT_REFUSALS = 20


def refusal_json(refusal) -> dict:
    return {"id": refusal.id, "refused_at": iso(refusal.refused_at), "user_id": refusal.owner_id,
            "original_name": refusal.original_name, "size": refusal.size, "rule": refusal.rule,
            "code": refusal.code, "via": refusal.via}


@bp.get("/refusals")
def list_refusals():
    """The files refused lately, newest first (admins; kept REFUSALS_KEEP_DAYS): who, when, which
    file, which rule and why, so that a refusal someone reports can be looked up."""
    found, next_cursor = paged(lambda limit, cursor: refusal_log().page(limit, cursor))
    return jsonify(refusals=[refusal_json(r) for r in found], next_cursor=next_cursor)

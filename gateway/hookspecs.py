"""Hooks of the gateway: events about stored files.

A plugin is a module (or object) with functions named like the hooks below,
marked with ``protos.plugins.hookimpl``, found like the services' plugins
(entry-point group ``upload_service``, ``UPLOAD_PLUGINS``). The shipped
webhooks (``WEBHOOK_URLS``) are plugins of these hooks too
(gateway/events/webhooks.py).

Each hook is a notification of a change that has already happened and cannot
be undone by the hook. The event is written to the outbox (the
``event_outbox`` table) in the same database transaction as the change it
reports, so a crash can neither lose an event nor report a change that did
not happen; the gateway's event thread for the plugin then calls the hook,
never the request's thread: a slow or failing hook neither slows nor fails
an upload or a delete.

Delivery is at least once. An implementation that raises is called again
with the same event later (after a pause growing from 1 s to
EVENT_RETRY_MAX_DELAY), across gateway restarts, until it returns or
EVENT_GIVE_UP_AFTER has passed; a crash between the call and its being
recorded as done calls it again too. So make an implementation idempotent:
``event.id`` is the same on every call for one event. Events reach one plugin
roughly in the order they happened, but a retried one may come after later
ones: ``event.created_at`` says when it happened.

This module imports only the standard library and ``protos``: every
service's plugin manager imports it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from protos.plugins import hookspec

FILE_STORED = "file.stored"
FILE_DELETED = "file.deleted"
FILE_EXPIRED = "file.expired"

# Each event type and the hook that reports it.
HOOKS = {
    FILE_STORED: "upload_file_stored",
    FILE_DELETED: "upload_file_deleted",
    FILE_EXPIRED: "upload_file_expired",
}


@dataclass(frozen=True)
class Event:
    """One event, as a hook (and a webhook's body) sees it."""

    # 32 hex digits, the same on every call (and every webhook POST) for this event.
    id: str
    # file.stored | file.deleted | file.expired
    type: str
    # When the change was committed: ISO 8601 UTC ("2030-01-02T03:04:05.123456Z").
    created_at: str
    # The file's record as the HTTP API gives it (GET /files/<id>), as it was at the change.
    file: dict = field(default_factory=dict)
    # 1 the first time this event is offered to this plugin, 2 the next...
    attempt: int = 1

    def payload(self) -> dict:
        """What a webhook POSTs: ``{"id", "type", "created_at", "file"}``."""
        return {"id": self.id, "type": self.type, "created_at": self.created_at, "file": self.file}


@hookspec
def upload_file_stored(record: dict, event: Event) -> None:
    """A file was stored: a ``POST /upload`` file or a finished tus upload,
    once its record is committed. Notification hook: called on the gateway's
    event thread for this plugin, soon after the commit (not blocking the
    upload), at least once; an exception means "call me again later" and
    never fails the upload.

    ``record`` is the file's record as ``GET /files/<id>`` gives it (URLs
    relative to the gateway), ``event`` the event (``id``, ``type``,
    ``created_at``, ``file``, ``attempt``); take only the arguments you need.
    Example::

        @hookimpl
        def upload_file_stored(record, event):
            search_index.put(record["id"], record["original_name"], version=event.id)
    """


@hookspec
def upload_file_deleted(record: dict, event: Event) -> None:
    """A file was deleted: ``DELETE /files/<id>``, a multi-file ``POST /upload``
    taking back the files it had stored when a later one failed, or reconcile
    dropping a record whose bytes were lost. Notification hook: called on the
    gateway's event thread once the record is gone (not blocking the delete),
    at least once; an exception means "call me again later". ``record`` is the
    file's record as it was when it was deleted. Example::

        @hookimpl
        def upload_file_deleted(record):
            search_index.remove(record["id"])
    """


@hookspec
def upload_file_expired(record: dict, event: Event) -> None:
    """A file's lifetime (``expires_in``, FILE_TTL) ended and the reaper
    removed it (or a quota check did, for its owner). Notification hook:
    called on the gateway's event thread once the record is gone, at least
    once; an exception means "call me again later". ``record`` is the file's
    record as it was when it was removed. Example::

        @hookimpl
        def upload_file_expired(record, event):
            audit_log.info("%s expired (event %s)", record["original_name"], event.id)
    """

"""The shipped webhooks: a plugin of the gateway's hooks per WEBHOOK_URLS entry,
which POSTs each event as JSON, signed the way GitHub signs its webhooks.

    POST <url>
    Content-Type: application/json
    X-Upload-Event: file.stored
    X-Upload-Delivery: <event id>
    X-Upload-Signature-256: sha256=<hex HMAC-SHA256 of the body under WEBHOOK_SECRET>

    {"id": "...", "type": "file.stored", "created_at": "...", "file": {<the record>}}

A 2xx answer is delivered; anything else (another status, a redirect, which is
not followed, no answer within WEBHOOK_TIMEOUT, no connection) raises, and the
event thread tries again later with the same event: same id, same bytes
(README, "Webhooks"). Only the standard library: urllib.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from gateway.hookspecs import Event
from protos.plugins import hookimpl

SIGNATURE_HEADER = "X-Upload-Signature-256"
USER_AGENT = "upload-service-webhooks/1"


class WebhookFailed(Exception):
    """The receiver did not take the event (its answer, or why there was none)."""


def body(event: Event) -> bytes:
    """The bytes POSTed (and signed): compact JSON, UTF-8; the same for every attempt."""
    return json.dumps(event.payload(), separators=(",", ":"), ensure_ascii=False).encode()


def signature(secret: str, data: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``data`` under ``secret`` (GitHub's scheme)."""
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def plugin_name(url: str) -> str:
    """The plugin's name, which its events in the outbox and its metrics carry:
    the host and a digest of the whole URL (whose path or query may be a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host += f":{parts.port}"
    return f"webhook:{host}#{hashlib.sha256(url.encode()).hexdigest()[:8]}"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer other than 2xx, hence a failure: urllib would turn
    the POST into a GET without its body."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


class Webhook:
    """One receiver. Implements every event hook the same way: POST the event."""

    def __init__(self, url: str, secret: str, timeout: float):
        self.url = url
        self.timeout = timeout
        self._secret = secret
        # The name the plugin manager registers it under (protos.plugins reads __name__).
        self.__name__ = plugin_name(url)

    def __repr__(self) -> str:
        return f"<Webhook {self.__name__}>"

    def post(self, event: Event) -> None:
        data = body(event)
        request = urllib.request.Request(self.url, data=data, method="POST", headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Upload-Event": event.type,
            "X-Upload-Delivery": event.id,
            SIGNATURE_HEADER: signature(self._secret, data),
        })
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:  # every status but 2xx
            error.close()
            raise WebhookFailed(f"{self.__name__} answered {error.code} {error.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            raise WebhookFailed(f"{self.__name__} could not be reached: {reason}") from None
        if not 200 <= status < 300:  # 1xx never ends a response; kept for safety
            raise WebhookFailed(f"{self.__name__} answered {status}")

    @hookimpl
    def upload_file_stored(self, event: Event) -> None:
        self.post(event)

    @hookimpl
    def upload_file_deleted(self, event: Event) -> None:
        self.post(event)

    @hookimpl
    def upload_file_expired(self, event: Event) -> None:
        self.post(event)

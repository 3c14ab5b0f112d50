"""Rate limits on uploading, signing in and minting credentials (API tokens,
share links) (Flask-Limiter): per user and per IP address, answered with 429
and Retry-After.

Counters live in RATE_LIMIT_STORAGE: in memory with one gateway worker process,
in a SQLite file in DATA_DIR shared by several (limit_storage.py); several
gateways on several machines share a server, e.g. redis://.
"""
from __future__ import annotations

import os

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from gateway.auth.identity import current_user
from gateway.http import limit_storage  # noqa: F401 - registers its scheme with limits

# Creating uploads, both ways in: they share one budget.
UPLOAD_ENDPOINTS = ("uploads.upload", "tus.create")
LOGIN_ENDPOINTS = ("login.login",)
# Each made by its own user, so each on its own per-user budget: (endpoint, setting, what).
MINTING = (("accounts_api.create_token", "RATE_LIMIT_TOKENS", "new API tokens"),
           ("sharing.share", "RATE_LIMIT_SHARES", "new share links"))


def _user_key() -> str:
    user = current_user()
    return f"user:{user.id}" if user else f"ip:{get_remote_address()}"


def _ip_key() -> str:
    return f"ip:{get_remote_address()}"


def _message(what: str):
    def message() -> str:
        return f"Too many {what} in a short time; wait a moment (see Retry-After) and try again."
    return message


def storage_uri(config) -> str:
    """RATE_LIMIT_STORAGE, or by default what every worker process of this gateway shares."""
    if config["RATE_LIMIT_STORAGE"]:
        return config["RATE_LIMIT_STORAGE"]
    if config["GATEWAY_WORKERS"] == 1:
        return "memory://"
    return limit_storage.uri(os.path.join(config["DATA_DIR"], "rate-limits.sqlite"))


def init_app(app: Flask) -> None:
    """Call after auth.init_app: the per-user key needs the request's user.
    With AUTH=off (a loopback bind, one person) there is nobody to limit."""
    config = app.config
    if config["AUTH"] != "token":
        return
    limiter = Limiter(_ip_key, app=app, storage_uri=storage_uri(config), headers_enabled=True,
                      strategy="moving-window", key_prefix="upload-service")
    app.extensions["rate_limiter"] = limiter
    rules = []
    if config["RATE_LIMIT_UPLOADS"]:
        rules.append(limiter.shared_limit(config["RATE_LIMIT_UPLOADS"], scope="uploads-per-user",
                                          key_func=_user_key, exempt_when=lambda: current_user() is None,
                                          error_message=_message("uploads")))
    if config["RATE_LIMIT_UPLOADS_PER_IP"]:
        rules.append(limiter.shared_limit(config["RATE_LIMIT_UPLOADS_PER_IP"], scope="uploads-per-ip",
                                          key_func=_ip_key, error_message=_message("uploads from this address")))
    for endpoint in UPLOAD_ENDPOINTS:
        for rule in rules:
            app.view_functions[endpoint] = rule(app.view_functions[endpoint])
    if config["RATE_LIMIT_LOGIN"]:
        rule = limiter.limit(config["RATE_LIMIT_LOGIN"], key_func=_ip_key,
                             error_message=_message("sign-in attempts from this address"))
        for endpoint in LOGIN_ENDPOINTS:
            app.view_functions[endpoint] = rule(app.view_functions[endpoint])
    for endpoint, setting, what in MINTING:
        if config[setting]:
            rule = limiter.limit(config[setting], key_func=_user_key, scope=setting.lower(),
                                 error_message=_message(what))
            app.view_functions[endpoint] = rule(app.view_functions[endpoint])


def reset(app: Flask | None = None) -> None:
    """Forget every counter (tests; an operator after a false alarm)."""
    limiter = (app or current_app).extensions.get("rate_limiter")
    if limiter is not None:
        limiter.reset()

"""Who is asking: every request is authenticated here, in one place.

With AUTH=off nobody is (and every file is everyone's, on a loopback bind).
With AUTH=token a request carries ``Authorization: Bearer <token>`` (an API
token, or ADMIN_TOKEN) or the signed-in browser's session cookie; the few
endpoints in OPEN need neither. Requests that change something with only the
cookie must also carry the session's CSRF token (header ``X-CSRF-Token`` or
form field ``csrf_token``), so another site cannot make a signed-in browser
act: the synchronizer-token pattern, written out because Flask-WTF would
bring WTForms for one check and need exempting for every Bearer request.
"""
from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from flask import Flask, g, request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway.metadata.accounts import User, accounts
from protos.errors import Forbidden, Unauthenticated

# Endpoints anyone may call: the page shell, sign-in and sign-out, probes, the
# public description of the service, static assets and share links. These are
# endpoint names (blueprint.function), not paths: a renamed view function must
# be renamed here too (tests/gateway/test_auth.py calls each one without credentials).
OPEN = {
    "page.index", "login.login_form", "login.login", "login.logout", "meta.healthz", "meta.readyz",
    "meta.metrics_endpoint", "meta.policy", "openapi.openapi_json", "static", "page.vendor.static",
    "sharing.open_share",
}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


def current_user() -> User | None:
    """The signed-in user; None with AUTH=off (or on an open endpoint without credentials)."""
    return g.get("user")


def owner_scope() -> str | None:
    """Whose files this request may see: None for everyone's (AUTH=off, an admin)."""
    user = current_user()
    if user is None or user.admin:
        return None
    return user.id


def owner_id() -> str | None:
    """The owner recorded on a new upload."""
    user = current_user()
    return user.id if user else None


def auth_enabled() -> bool:
    from flask import current_app

    return current_app.config["AUTH"] == "token"


def csrf_token() -> str:
    """The token a page embeds in its forms and scripts (made on first use)."""
    if CSRF_FIELD not in session:
        session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return session[CSRF_FIELD]


def check_csrf() -> None:
    expected = session.get(CSRF_FIELD)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.mimetype == "application/x-www-form-urlencoded":
        sent = request.form.get(CSRF_FIELD)
    if not expected or not sent or not hmac.compare_digest(str(sent), str(expected)):
        raise Forbidden("This form has expired or did not come from this site; reload the page and try again.")


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated("The Authorization header must be 'Bearer <token>'.")
    return value.strip()


def _from_bearer(secret: str, app: Flask) -> User:
    admin_token, admin_user = app.config["ADMIN_TOKEN"], app.extensions.get("admin_user")
    if admin_token and admin_user is not None and hmac.compare_digest(secret.encode(), admin_token.encode()):
        current = accounts().user(admin_user.id)
        if current is None:
            # Deleted by another admin: made again, as at start-up, rather than acting as a ghost.
            current = accounts().ensure_admin()
            if not current.admin:
                raise Unauthenticated("ADMIN_TOKEN is disabled on this server (see its log).")
            app.extensions["admin_user"] = current
        return current
    user = accounts().user_for_token(secret)
    if user is None:
        raise Unauthenticated("This API token is not valid (revoked, mistyped, or from another server).")
    return user


def _authenticate() -> None:
    from flask import current_app as app

    g.user = None
    if app.config["AUTH"] != "token" or request.method == "OPTIONS":
        return  # CORS preflights carry no credentials by design
    try:
        secret = _bearer()
        if secret is not None:
            g.user = _from_bearer(secret, app)
            return
    except Unauthenticated:
        # Open endpoints stay open to a client that sends a stale token
        # (a script opening a share link, a probe with a leftover header).
        if request.endpoint in OPEN:
            return
        raise
    session_id = session.get("sid")
    if session_id:
        g.user = accounts().user_for_session(session_id)
        if g.user is None:
            session.pop("sid", None)  # ended or expired: the cookie is dropped
        else:
            # Sign-in checks its own forms (and JSON needs none): signing in again must work.
            if request.method not in SAFE_METHODS and request.endpoint != "login.login":
                check_csrf()
            return
    if request.endpoint not in OPEN:
        raise Unauthenticated()


def _secret_key(app: Flask) -> str:
    """SECRET_KEY, or a random one kept in the database, so sign-ins and share
    links survive a restart and every gateway sharing the database agrees."""
    return app.config["SECRET_KEY"] or app.extensions["accounts"].secret("signing-key")


class _SessionInterface(SecureCookieSessionInterface):
    """Secure cookies whenever the page was reached over HTTPS (directly or,
    with TRUST_PROXY, through a proxy), so plain-HTTP local use still works."""

    def get_cookie_secure(self, app) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def init_app(app: Flask) -> None:
    app.secret_key = _secret_key(app)
    app.config.update(
        SESSION_COOKIE_NAME="upload_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=app.config["SESSION_LIFETIME"]),
    )
    app.session_interface = _SessionInterface()
    if app.config["TRUST_PROXY"]:
        hops = app.config["TRUST_PROXY"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    app.before_request(_authenticate)

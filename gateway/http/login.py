"""Browser sign-in: GET/POST /login, POST /logout (AUTH=token).

A signed-in browser holds a random session id in a signed, HttpOnly,
SameSite=Lax cookie (Secure over HTTPS); the server keeps only its hash, so
signing out or deleting the user ends the session at once.
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, make_response, redirect, request, session

from gateway.auth.identity import auth_enabled, check_csrf, csrf_token, current_user
from gateway.http.html import render_page
from gateway.http.jsonbody import json_object, text
from gateway.metadata.accounts import accounts
from protos.errors import InvalidInput, NotFound, Unauthenticated

bp = Blueprint("login", __name__)

BAD_CREDENTIALS = "The username or password is not right."


def login_page(error: str | None = None, username: str = "", status: int = 200):
    """The sign-in form (also what GET / shows to a browser that is not signed in)."""
    return render_page("login.html", status, error=error, username=username, csrf_token=csrf_token())


@bp.get("/login")
def login_form():
    if not auth_enabled() or current_user() is not None:
        return redirect("/", 303)
    return login_page()


@bp.post("/login")
def login():
    if not auth_enabled():
        raise NotFound("Accounts are off on this server (AUTH=off): there is nothing to sign in to.")
    if request.is_json:
        # A cross-site form cannot send JSON without a CORS preflight, which this server never allows
        # with credentials: no CSRF token needed here (auth skips its check for this endpoint).
        data = json_object('{"username": "...", "password": "..."}')
        username, password = data.get("username"), data.get("password")
    else:
        check_csrf()
        username, password = request.form.get("username"), request.form.get("password")
    for value, name in ((username, "username"), (password, "password")):
        if value is not None:
            text(value, name)
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        if request.is_json:
            raise InvalidInput("Both a username and a password are needed.")
        return login_page("Enter your username and password.", username or "", 400)
    user = accounts().authenticate(username, password)
    if user is None:
        if request.is_json:
            raise Unauthenticated(BAD_CREDENTIALS)
        return login_page(BAD_CREDENTIALS, username, 401)
    # A fresh session (and CSRF token) on every sign-in: nothing set before it carries over.
    session.clear()
    session["sid"] = accounts().create_session(user.id, current_app.config["SESSION_LIFETIME"])
    session.permanent = True
    csrf_token()
    if request.is_json:
        # The token a cookie-based client must send back with every write.
        return jsonify(username=user.username, admin=user.admin, csrf_token=csrf_token())
    return redirect("/", 303)


@bp.post("/logout")
def logout():
    if session.get("sid"):
        check_csrf()
        accounts().end_session(session["sid"])
    session.clear()
    if request.mimetype == "application/x-www-form-urlencoded" and not request.is_json:
        return redirect("/login", 303)
    return make_response("", 204)


"""The accounts API (AUTH=token): users (admin), the caller's tokens, who am I."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from gateway.auth.identity import auth_enabled, current_user
from gateway.auth.quotas import limits_for
from gateway.http.jsonbody import json_object, text
from gateway.http.paging import paged
from gateway.http.records import iso
from gateway.metadata.accounts import Token, User, accounts
from gateway.metadata.files import repository
from protos.errors import Forbidden, InvalidInput, NotFound

bp = Blueprint("accounts_api", __name__)


@bp.before_request
def _accounts_on():
    if not auth_enabled():
        raise NotFound("Accounts are off on this server (AUTH=off).")


def _caller() -> User:
    user = current_user()
    if user is None:  # only reachable if this blueprint were made open by mistake
        raise Forbidden("Sign in first.")
    return user


def _admin() -> User:
    user = _caller()
    if not user.admin:
        raise Forbidden("Only an admin can manage users.")
    return user


def user_json(user: User) -> dict:
    return {"id": user.id, "username": user.username, "admin": user.admin, "created_at": iso(user.created_at)}


def token_json(token: Token) -> dict:
    return {"id": token.id, "name": token.name, "created_at": iso(token.created_at),
            "last_used_at": iso(token.last_used_at)}


@bp.get("/me")
def me():
    user = _caller()
    files, size = repository().usage(user.id)
    quota_bytes, quota_files = limits_for(user, current_app.config)
    return jsonify(user_json(user) | {"usage": {"files": files, "bytes": size},
                                       "quota": {"files": quota_files, "bytes": quota_bytes}})


@bp.post("/users")
def create_user():
    _admin()
    data = json_object('{"username": "alice", "password": "...", "admin": false}')
    admin = data.get("admin", False)
    if not isinstance(admin, bool):
        raise InvalidInput("'admin' must be true or false.")
    password = data.get("password")
    if password is not None:
        text(password, "password")  # an empty one is refused with the length rule
    user = accounts().create_user(text(data.get("username"), "username", max_length=64), password, admin)
    token, secret = accounts().create_token(user.id, "first token")
    response = jsonify(user_json(user) | {"token": secret, "token_id": token.id})
    response.status_code = 201
    return response


@bp.get("/users")
def list_users():
    _admin()
    found, next_cursor = paged(accounts().page_users)
    return jsonify(users=[user_json(u) for u in found], next_cursor=next_cursor)


@bp.delete("/users/<user_id>")
def delete_user(user_id: str):
    """Removes the user, their tokens, sessions and share links; their files stay (an admin still sees them)."""
    admin = _admin()
    if user_id == admin.id:
        raise InvalidInput("You cannot delete yourself.")
    if not accounts().delete_user(user_id):
        raise NotFound("No user with that id.")
    return "", 204


@bp.post("/tokens")
def create_token():
    name = text(json_object('{"name": "laptop"}').get("name", ""), "name", max_length=100)
    token, secret = accounts().create_token(_caller().id, name, cap=current_app.config["MAX_TOKENS_PER_USER"])
    response = jsonify(token_json(token) | {"token": secret})
    response.status_code = 201
    return response


@bp.get("/tokens")
def list_tokens():
    user_id = _caller().id
    found, next_cursor = paged(lambda limit, cursor: accounts().page_tokens(user_id, limit, cursor))
    return jsonify(tokens=[token_json(t) for t in found], next_cursor=next_cursor)


@bp.delete("/tokens/<token_id>")
def revoke_token(token_id: str):
    # Only the caller's own: another user's token id is as unknown as a made-up one.
    if not accounts().revoke_token(token_id, _caller().id):
        raise NotFound("You have no token with that id.")
    return "", 204

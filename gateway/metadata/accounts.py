"""Users, their API tokens and their browser sessions.

Secrets are never stored: passwords as slow salted hashes (werkzeug's scrypt),
API tokens and session ids as sha256 (they are 256 random bits, so a fast
hash is enough: nothing to brute-force). A token is shown once, when made.
"""
from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from flask import current_app
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.metadata import cursors
from gateway.metadata.locking import lock_row
from gateway.metadata.tables import server_secrets, sessions, share_links, tokens, users, utc
from protos.errors import Conflict, InvalidInput

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
# Recognisable in logs and secret scanners, like GitHub's ghp_ prefix.
TOKEN_PREFIX = "ust_"
# The bootstrap admin that ADMIN_TOKEN acts as.
ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class User:
    id: str
    username: str
    admin: bool
    created_at: datetime
    quota_bytes: int | None = None
    quota_files: int | None = None


@dataclass(frozen=True)
class Token:
    id: str
    user_id: str
    name: str
    created_at: datetime
    last_used_at: datetime | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _user(mapping) -> User:
    return User(id=mapping["id"], username=mapping["username"], admin=bool(mapping["admin"]),
                created_at=utc(mapping["created_at"]), quota_bytes=mapping["quota_bytes"],
                quota_files=mapping["quota_files"])


def _token(mapping) -> Token:
    return Token(id=mapping["id"], user_id=mapping["user_id"], name=mapping["name"],
                 created_at=utc(mapping["created_at"]), last_used_at=utc(mapping["last_used_at"]))


def check_username(username) -> str:
    """The username as stored: case does not make a different user ("Alice" is "alice")."""
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        raise InvalidInput("A username is 1 to 64 letters, digits or . _ @ -, starting with a letter or digit.")
    return username.lower()


def check_password(password) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD or len(password) > 1024:
        raise InvalidInput(f"A password must be {MIN_PASSWORD} to 1024 characters long.")
    return password


class Accounts:
    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def secret(self, name: str) -> str:
        """A random secret made on first use and kept (the first writer wins a race)."""
        query = sa.select(server_secrets.c.value).where(server_secrets.c.name == name)
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
        if found is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(server_secrets.insert().values(name=name, value=secrets.token_urlsafe(48)))
            except sa.exc.IntegrityError:
                pass
            with self.engine.connect() as conn:
                found = conn.execute(query).scalar_one()
        return found

    # --- users ---

    def create_user(self, username: str, password: str | None = None, admin: bool = False) -> User:
        username = check_username(username)
        user = User(id=secrets.token_hex(16), username=username, admin=admin, created_at=_now())
        values = {"id": user.id, "username": username, "admin": admin, "created_at": user.created_at,
                  "password_hash": generate_password_hash(check_password(password)) if password is not None else None}
        try:
            with self.engine.begin() as conn:
                conn.execute(users.insert().values(**values))
        except sa.exc.IntegrityError:
            raise Conflict(f"There is already a user called {username!r}.") from None
        return user

    def user(self, user_id: str) -> User | None:
        with self.engine.connect() as conn:
            found = conn.execute(users.select().where(users.c.id == user_id)).mappings().first()
        return _user(found) if found else None

    def user_named(self, username: str) -> User | None:
        with self.engine.connect() as conn:
            found = conn.execute(users.select().where(users.c.username == username.lower())).mappings().first()
        return _user(found) if found else None

    def list_users(self) -> list[User]:
        with self.engine.connect() as conn:
            return [_user(m) for m in conn.execute(users.select().order_by(users.c.username)).mappings()]

    def page_users(self, limit: int, cursor: str | None = None) -> tuple[list[User], str | None]:
        """By username; raises ValueError for a cursor that is not one of ours."""
        with self.engine.connect() as conn:
            rows, next_cursor = cursors.page(conn, users.select(), [users.c.username], limit, cursor)
        return [_user(m) for m in rows], next_cursor

    def delete_user(self, user_id: str) -> bool:
        with self.engine.begin() as conn:
            # Explicit rather than ON DELETE CASCADE: SQLite enforces foreign keys only when asked.
            conn.execute(tokens.delete().where(tokens.c.user_id == user_id))
            conn.execute(sessions.delete().where(sessions.c.user_id == user_id))
            # What they shared ends with them (their files stay, for admins).
            conn.execute(share_links.delete().where(share_links.c.owner_id == user_id))
            return conn.execute(users.delete().where(users.c.id == user_id)).rowcount > 0

    def set_password(self, user_id: str, password: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == user_id)
                         .values(password_hash=generate_password_hash(check_password(password))))
            # A new password signs every browser out.
            conn.execute(sessions.delete().where(sessions.c.user_id == user_id))

    def set_quota(self, user_id: str, quota_bytes: int | None, quota_files: int | None) -> None:
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == user_id)
                         .values(quota_bytes=quota_bytes, quota_files=quota_files))

    def authenticate(self, username: str, password: str) -> User | None:
        with self.engine.connect() as conn:
            found = conn.execute(users.select().where(users.c.username == username.lower())).mappings().first()
        if found is None or not found["password_hash"]:
            # Same work as a real check, so timing does not tell which usernames exist.
            check_password_hash(_DUMMY_HASH, password)
            return None
        return _user(found) if check_password_hash(found["password_hash"], password) else None

    def ensure_admin(self) -> User:
        """The built-in admin user that ADMIN_TOKEN acts as (made on first start)."""
        user = self.user_named(ADMIN_USERNAME)
        if user is None:
            try:
                return self.create_user(ADMIN_USERNAME, admin=True)
            except Conflict:  # another worker made it first
                user = self.user_named(ADMIN_USERNAME)
        return user

    # --- tokens ---

    def create_token(self, user_id: str, name: str = "", cap: int = 0) -> tuple[Token, str]:
        """A new token for a user: (its record, the secret, shown this once).
        Conflict when the user already has ``cap`` tokens (0: no cap)."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = Token(id=secrets.token_hex(8), user_id=user_id, name=(name or "api")[:100],
                      created_at=_now(), last_used_at=None)
        with self.engine.begin() as conn:
            if cap:
                # The user's row is the lock, so requests made at once cannot all pass the count.
                lock_row(conn, users.c.id, user_id)
                count = sa.select(sa.func.count()).select_from(tokens).where(tokens.c.user_id == user_id)
                if conn.execute(count).scalar_one() >= cap:
                    raise Conflict(f"You already have {cap} API tokens, the most one user may have. Revoke "
                                   "some you no longer use (DELETE /tokens/<id>) and try again.")
            conn.execute(tokens.insert().values(id=token.id, user_id=user_id, token_hash=_hash(secret),
                                                name=token.name, created_at=token.created_at))
        return token, secret

    def user_for_token(self, secret: str) -> User | None:
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        query = (sa.select(users, tokens.c.id.label("token_id"), tokens.c.last_used_at)
                 .join(tokens, tokens.c.user_id == users.c.id).where(tokens.c.token_hash == _hash(secret)))
        with self.engine.connect() as conn:
            found = conn.execute(query).mappings().first()
        if found is None:
            return None
        now = _now()
        last = utc(found["last_used_at"])
        if last is None or now - last > timedelta(minutes=5):  # not a write per request
            with self.engine.begin() as conn:
                conn.execute(tokens.update().where(tokens.c.id == found["token_id"]).values(last_used_at=now))
        return _user(found)

    def list_tokens(self, user_id: str | None = None) -> list[Token]:
        query = tokens.select().order_by(tokens.c.created_at)
        if user_id is not None:
            query = query.where(tokens.c.user_id == user_id)
        with self.engine.connect() as conn:
            return [_token(m) for m in conn.execute(query).mappings()]

    def page_tokens(self, user_id: str, limit: int, cursor: str | None = None) -> tuple[list[Token], str | None]:
        """Oldest first, as list_tokens; raises ValueError for a cursor that is not one of ours."""
        query = tokens.select().where(tokens.c.user_id == user_id)
        with self.engine.connect() as conn:
            rows, next_cursor = cursors.page(conn, query, [tokens.c.created_at, tokens.c.id], limit, cursor)
        return [_token(m) for m in rows], next_cursor

    def revoke_token(self, token_id: str, user_id: str | None = None) -> bool:
        """False when there is no such token (or it is not ``user_id``'s)."""
        query = tokens.delete().where(tokens.c.id == token_id)
        if user_id is not None:
            query = query.where(tokens.c.user_id == user_id)
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount > 0

    # --- browser sessions ---

    def create_session(self, user_id: str, lifetime: float) -> str:
        secret = secrets.token_urlsafe(32)
        now = _now()
        with self.engine.begin() as conn:
            conn.execute(sessions.delete().where(sessions.c.expires_at < now))
            conn.execute(sessions.insert().values(id_hash=_hash(secret), user_id=user_id,
                                                  expires_at=now + timedelta(seconds=lifetime)))
        return secret

    def user_for_session(self, secret: str) -> User | None:
        query = (sa.select(users).join(sessions, sessions.c.user_id == users.c.id)
                 .where(sessions.c.id_hash == _hash(secret), sessions.c.expires_at > _now()))
        with self.engine.connect() as conn:
            found = conn.execute(query).mappings().first()
        return _user(found) if found else None

    def end_session(self, secret: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sessions.delete().where(sessions.c.id_hash == _hash(secret)))


_DUMMY_HASH = generate_password_hash("not a password, only for timing")


def init_app(app) -> None:
    accounts = Accounts(app.extensions["files"].engine)
    app.extensions["accounts"] = accounts
    if app.config["AUTH"] == "token" and app.config["ADMIN_TOKEN"]:
        admin = accounts.ensure_admin()
        if admin.admin:
            app.extensions["admin_user"] = admin
        else:
            # A plain user already has the name (`flask users create admin` before ADMIN_TOKEN was
            # set): the token must not act as them, nor as an admin that does not exist.
            logging.getLogger("upload.gateway").error(
                "ADMIN_TOKEN is ignored: ADMIN_TOKEN acts as the user %r, and that user here is not an "
                "admin. Delete it (`flask --app gateway users delete %s`; its files "
                "stay) and start again, or leave ADMIN_TOKEN unset.", ADMIN_USERNAME, ADMIN_USERNAME)


def accounts() -> Accounts:
    return current_app.extensions["accounts"]

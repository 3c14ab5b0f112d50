"""Helpers for tests of accounts (AUTH=token): users, tokens, bearer headers."""
from __future__ import annotations

ADMIN_TOKEN = "test-admin-token-d4c3b2a1"
# Rate limits off unless a test turns them on: most tests make many requests quickly.
TOKEN_SETTINGS = {"AUTH": "token", "ADMIN_TOKEN": ADMIN_TOKEN, "RATE_LIMIT_UPLOADS": "",
                  "RATE_LIMIT_UPLOADS_PER_IP": "", "RATE_LIMIT_LOGIN": "", "RATE_LIMIT_TOKENS": "",
                  "RATE_LIMIT_SHARES": ""}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


def create_user(client, username: str, admin: bool = False, password: str | None = None) -> dict:
    """Create a user through the API as the bootstrap admin; returns the 201 body
    plus ``headers`` (the user's bearer header)."""
    body = {"username": username, "admin": admin}
    if password:
        body["password"] = password
    response = client.post("/users", json=body, headers=ADMIN)
    assert response.status_code == 201, response.get_json()
    user = response.get_json()
    user["headers"] = bearer(user["token"])
    return user

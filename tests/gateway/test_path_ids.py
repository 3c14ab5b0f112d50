"""An id or a stored name in the path that holds a NUL is 404 (JSON) before any
query, on every route: PostgreSQL cannot compare such text, and its failed query
was a 500 for bad input. Without a token it is still 401 first.

Real app, real gRPC services, real database (a SQLite file, and PostgreSQL).
"""
from __future__ import annotations

import pytest

from tests.accounts import ADMIN, TOKEN_SETTINGS, create_user

ON_BOTH_BACKENDS = True

PATHS = [("DELETE", "/tokens/ab%00cd"), ("DELETE", "/users/ab%00cd"), ("GET", "/uploads/ab%00cd.txt"),
         ("GET", "/thumbnails/ab%00cd.jpg"), ("GET", "/files/" + "a" * 31 + "%00/audit")]


@pytest.fixture
def client(make_app):
    return make_app(**TOKEN_SETTINGS).test_client()


@pytest.mark.parametrize("method,path", PATHS)
def test_a_nul_in_an_id_or_a_name_is_404_json(client, method, path):
    alice = create_user(client, "alice")["headers"]
    for headers in (ADMIN, alice):
        response = client.open(path, method=method, headers=headers)
        assert response.status_code == 404, (response.status_code, response.get_data(as_text=True)[:300])
        assert response.get_json()["error"].endswith(".")


@pytest.mark.parametrize("method,path", PATHS)
def test_without_a_token_it_is_still_401(client, method, path):
    assert client.open(path, method=method).status_code == 401


def test_a_share_link_with_a_nul_is_still_tampered_403(client):
    assert client.get("/s/abc%00def").status_code == 403

"""An upload address whose id is not 32 lowercase hex digits is 404 before any
query: a NUL among them would otherwise fail PostgreSQL's query (a 500 for bad
input), as it did for file ids.

Real app, real gRPC services, real database (a SQLite file, and PostgreSQL).
"""
from __future__ import annotations

import pytest

ON_BOTH_BACKENDS = True

TUS = {"Tus-Resumable": "1.0.0"}
ODD_IDS = ["0" * 31 + "%00", "%00" + "a" * 31, "A" * 32, "g" * 32]


@pytest.mark.parametrize("upload_id", ODD_IDS)
@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE"])
def test_an_upload_id_that_is_not_32_hex_digits_is_404(make_app, method, upload_id):
    client = make_app().test_client()
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    response = client.open(f"/tus/{upload_id}", method=method, headers=headers, data=b"x")
    assert response.status_code == 404, (response.status_code, response.get_data(as_text=True)[:300])

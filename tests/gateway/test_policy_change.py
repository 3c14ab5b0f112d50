"""A whole-file rule turned on in the validator after the gateway read its policy: the gateway
sent only the head, the validator answered whole_file_required with head_incomplete, and that was
taken for a refusal (a finished tus upload lost its bytes). It is 503 now, the policy is read
again, and the next try sends every byte."""
from __future__ import annotations

import io
import time

from tests.conftest import Running, free_port
from tests.plugin_modules.counts_every_byte import CountingRule
from validator_service import server as validator_server


def upload(client, data):
    return client.post("/upload", data={"file": (io.BytesIO(data), "notes.txt")}, content_type="multipart/form-data")


def test_a_whole_file_rule_turned_on_after_the_policy_was_read_loses_nothing(make_app):
    port = free_port()
    plain = Running(*validator_server.create_server(f"127.0.0.1:{port}"))
    app = make_app(VALIDATOR_ADDR=f"127.0.0.1:{port}", POLICY_TTL=3600)
    client = app.test_client()
    assert upload(client, b"hello\n").status_code == 201  # the policy (no whole-file rule) is read
    plain.close()
    plain.server.stop(None).wait()
    pm = validator_server.create_plugins(extra_plugins=[CountingRule()])
    scanning = Running(*validator_server.create_server(f"127.0.0.1:{port}", pm=pm))
    try:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:  # the gateway's channel reconnects
            assert time.monotonic() < deadline, "the gateway never reached the restarted validator"
            time.sleep(0.1)
        data = b"plain words\n" * (3 * 1024 * 1024 // 12)  # past the head the old policy asked for
        first = upload(client, data)
        assert first.status_code == 503, first.get_json()
        assert "rules changed" in first.get_json()["error"]
        second = upload(client, data)  # the policy read again: every byte sent
        assert second.status_code == 201, second.get_json()
        assert len(client.get("/files").get_json()["files"]) == 2
    finally:
        scanning.close()

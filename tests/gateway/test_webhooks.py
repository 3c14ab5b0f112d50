"""Events about files reach the gateway's plugins and the shipped webhooks: a real
HTTP receiver (http.server in a thread) that fails, recovers and then has seen
every event (file.stored from POST /upload and tus, file.deleted, file.expired),
each under one id however often it was sent, each signed with the secret; the
events survive a gateway restart; a receiver that hangs slows no upload; a
plugin that raises fails none, and is offered the same event again."""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from gateway.events import dispatch
from gateway.events.webhooks import plugin_name, signature
from protos.plugins import hookimpl
from tests.conftest import free_port, start_gateway_process
from tests.samples import MZ_HEADER
from tests.tus.conftest import TUS_VERSION, encode_metadata, stop_gateway

SECRET = "It's a Secret to Everybody"
EVENT_ID = re.compile(r"[0-9a-f]{32}")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")

pytestmark = pytest.mark.timeout(180)


class Receiver:
    """A webhook receiver on a free port. ``status`` is what it answers now;
    while ``hold`` is set it keeps each request waiting (a receiver that hangs).
    It keeps every POST: (headers, body, status answered)."""

    def __init__(self, status: int = 200, port: int | None = None):
        self.status = status
        self.posts: list[tuple[dict, bytes, int]] = []
        self.hold = threading.Event()
        self.released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.hold.is_set():
                    receiver.released.wait(120)
                status = receiver.status
                with receiver._lock:
                    receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks?key=abc"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[tuple[dict, bytes, int]]:
        with self._lock:
            return list(self.posts)

    def delivered(self) -> dict[str, dict]:
        """Every event answered 2xx, by id."""
        return {json.loads(body)["id"]: json.loads(body) for _, body, status in self.snapshot() if 200 <= status < 300}

    def failed(self) -> int:
        return sum(1 for _, _, status in self.snapshot() if not 200 <= status < 300)


@pytest.fixture
def receiver():
    made = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for running in made:
        running.stop()


def wait_for(condition, timeout: float = 30, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def check_every_post(receiver: Receiver) -> dict[str, bytes]:
    """Every POST the receiver got: signed with SECRET over its exact bytes (GitHub's
    scheme, checked here with hmac, not with the gateway's code), with the event's
    headers; and each id always came with the same bytes. Returns {id: body}."""
    bodies: dict[str, bytes] = {}
    for headers, body, _ in receiver.snapshot():
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-upload-signature-256"], expected)
        assert headers["content-type"] == "application/json"
        payload = json.loads(body)
        assert list(payload) == ["id", "type", "created_at", "file"]
        assert EVENT_ID.fullmatch(payload["id"]) and ISO_UTC.fullmatch(payload["created_at"])
        assert headers["x-upload-event"] == payload["type"] and headers["x-upload-delivery"] == payload["id"]
        assert bodies.setdefault(payload["id"], body) == body, "a retry sent other bytes under the same id"
    return bodies


def multipart_upload(client, *names: str, **fields) -> list[dict]:
    data = {"file": [(io.BytesIO(f"text of {name}\n".encode()), name) for name in names], **fields}
    response = client.post("/upload", data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    return body["files"] if "files" in body else [body]


def tus_upload(client, name: str, data: bytes) -> str:
    created = client.post("/tus/", headers={"Tus-Resumable": TUS_VERSION, "Upload-Length": str(len(data)),
                                            "Upload-Metadata": encode_metadata({"filename": name})})
    assert created.status_code == 201, created.get_data(as_text=True)
    patched = client.patch(created.headers["Location"], data=data, headers={
        "Tus-Resumable": TUS_VERSION, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert patched.status_code == 204, patched.get_data(as_text=True)
    return patched.headers["Upload-File-Id"]


def webhook_app(make_app, url: str, **settings):
    app = make_app(**{"WEBHOOK_URLS": [url], "WEBHOOK_SECRET": SECRET, "EVENT_RETRY_MAX_DELAY": 1.0,
                      "WEBHOOK_TIMEOUT": 5.0, **settings})
    dispatch.start(app)
    return app


def metric_samples(client) -> dict:
    text = client.get("/metrics").get_data(as_text=True)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# ---------------------------------------------------------------- the receiver fails, recovers, sees all


def test_a_receiver_that_fails_then_recovers_sees_every_event_once_or_more_under_one_id(make_app, receiver):
    hook = receiver(status=500)
    app = webhook_app(make_app, hook.url)
    client = app.test_client()

    one = multipart_upload(client, "one.txt")[0]
    two, three = multipart_upload(client, "two.txt", "three.txt")
    via_tus = tus_upload(client, "four.txt", b"text of a tus upload\n")
    short = multipart_upload(client, "short.txt", expires_in="1")[0]
    assert client.delete(f"/files/{two['id']}").status_code == 204
    records = {r["id"]: r for r in (one, two, three, short)}
    records[via_tus] = client.get(f"/files/{via_tus}").get_json()
    time.sleep(1.1)
    assert app.extensions["file_reaper"].reap() == 1  # short.txt's time is up

    wait_for(lambda: hook.failed() >= 3, what="the receiver to refuse a few attempts")
    assert hook.delivered() == {}
    hook.status = 200
    expected = {(one["id"], "file.stored"), (two["id"], "file.stored"), (three["id"], "file.stored"),
                (via_tus, "file.stored"), (short["id"], "file.stored"), (two["id"], "file.deleted"),
                (short["id"], "file.expired")}
    delivered = wait_for(lambda: (d := hook.delivered()) and {(e["file"]["id"], e["type"]) for e in d.values()}
                         == expected and d, what="every event to be delivered")
    assert len(delivered) == len(expected)  # one id per event

    bodies = check_every_post(hook)
    assert set(bodies) == set(delivered)  # every id that failed was delivered later, under the same id
    for event in delivered.values():
        # The record as the API gave it (the expired one says when it expired, the others never).
        assert event["file"] == records[event["file"]["id"]]
    failed_ids = {json.loads(body)["id"] for _, body, status in hook.snapshot() if status == 500}
    assert failed_ids and failed_ids <= set(delivered)

    samples = metric_samples(client)
    consumer = plugin_name(hook.url)
    assert samples[("upload_event_deliveries_total", (("consumer", consumer), ("outcome", "delivered")))] == 7
    assert samples[("upload_event_deliveries_total", (("consumer", consumer), ("outcome", "failed")))] == hook.failed()
    assert samples[("upload_event_outbox", (("consumer", consumer), ("state", "pending")))] == 0
    assert samples[("upload_events_total", (("type", "file.stored"),))] >= 5
    assert "key=abc" not in consumer  # the URL's query (a secret, maybe) is not a label


def test_an_answer_that_is_not_2xx_is_a_failure_redirects_too(make_app, receiver):
    hook = receiver(status=302)
    app = webhook_app(make_app, hook.url)
    client = app.test_client()
    record = multipart_upload(client, "a.txt")[0]
    wait_for(lambda: hook.failed() >= 2, what="two refused attempts")
    assert all(headers.get("x-upload-event") for headers, _, _ in hook.snapshot())  # the POST, never a GET
    hook.status = 204
    delivered = wait_for(hook.delivered, what="the event")
    assert [e["file"]["id"] for e in delivered.values()] == [record["id"]]


def test_the_signature_is_githubs_scheme():
    # GitHub's documented example (docs.github.com, "Validating webhook deliveries").
    assert signature(SECRET, b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")


# ---------------------------------------------------------------- across a restart


def outbox_ids(data_dir) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{data_dir}/uploads.db")
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.exec_driver_sql("SELECT event_id FROM event_outbox WHERE state = 'pending'")}
    finally:
        engine.dispose()


def test_events_wait_in_the_outbox_across_a_gateway_restart(tmp_path, validator, thumbnailer, receiver):
    hook = receiver(status=503)
    env = {"WEBHOOK_URLS": hook.url, "WEBHOOK_SECRET": SECRET, "EVENT_RETRY_MAX_DELAY": "1", "WEBHOOK_TIMEOUT": "2"}
    data_dir = tmp_path / "data"
    gateway = start_gateway_process(data_dir, validator.address, thumbnailer.address, **env)
    try:
        made = [requests.post(gateway.url + "/upload", files={"file": (f"f{i}.txt", b"text\n")}, timeout=30)
                for i in range(3)]
        assert [r.status_code for r in made] == [201] * 3
        assert requests.delete(gateway.url + f"/files/{made[0].json()['id']}", timeout=30).status_code == 204
        wait_for(lambda: len({json.loads(b)["id"] for _, b, _ in hook.snapshot()}) == 4, what="an attempt at each")
    finally:
        stop_gateway(gateway)
    waiting = outbox_ids(data_dir)
    assert len(waiting) == 4 and waiting == {json.loads(b)["id"] for _, b, _ in hook.snapshot()}

    hook.status = 200
    gateway = start_gateway_process(data_dir, validator.address, thumbnailer.address, port=free_port(), **env)
    try:
        delivered = wait_for(lambda: (d := hook.delivered()) and len(d) == 4 and d, what="the events after restart")
        assert set(delivered) == waiting  # the same ids as before the restart
        check_every_post(hook)
        assert sorted(e["type"] for e in delivered.values()) == ["file.deleted"] + ["file.stored"] * 3
        wait_for(lambda: not outbox_ids(data_dir), what="the outbox to empty")
    finally:
        stop_gateway(gateway)


# ---------------------------------------------------------------- never in the way of uploads


def test_a_receiver_that_hangs_slows_no_upload(make_app, receiver):
    hook = receiver(status=200)
    hook.hold.set()  # takes each POST and answers nothing for now
    app = webhook_app(make_app, hook.url, WEBHOOK_TIMEOUT=60.0)
    client = app.test_client()
    multipart_upload(client, "first.txt")
    started = time.monotonic()
    ids = [multipart_upload(client, f"f{i}.txt")[0]["id"] for i in range(10)]
    assert client.delete(f"/files/{ids[0]}").status_code == 204
    # Delivered inside the request, each would wait the receiver's 60 s.
    assert time.monotonic() - started < 15
    assert hook.delivered() == {}
    hook.hold.clear()
    hook.released.set()
    delivered = wait_for(lambda: (d := hook.delivered()) and len(d) == 12 and d, what="every event once released")
    assert {e["file"]["id"] for e in delivered.values() if e["type"] == "file.stored"} >= set(ids)


def test_the_receiver_down_for_good_costs_one_attempt_per_pause(make_app):
    """Nobody listens at the URL: uploads go on, and the attempts do not grow with the events."""
    url = f"http://127.0.0.1:{free_port()}/hook"
    app = webhook_app(make_app, url)
    client = app.test_client()
    consumer = plugin_name(url)
    started = time.monotonic()
    for i in range(20):
        multipart_upload(client, f"f{i}.txt")
    time.sleep(2)
    samples = metric_samples(client)
    elapsed = time.monotonic() - started
    assert samples[("upload_event_outbox", (("consumer", consumer), ("state", "pending")))] == 20
    # A first attempt, then one after each pause (at least 0.8 s with EVENT_RETRY_MAX_DELAY=1).
    failed = samples[("upload_event_deliveries_total", (("consumer", consumer), ("outcome", "failed")))]
    assert 1 <= failed <= elapsed / 0.8 + 1
    assert samples[("upload_event_oldest_pending_seconds", (("consumer", consumer),))] >= 1


# ---------------------------------------------------------------- plugins of the hooks


class Flaky:
    """Raises on its first two calls, then keeps what it is given."""

    __name__ = "tests.flaky"

    def __init__(self):
        self.calls: list[str] = []
        self.kept: list[tuple[dict, object]] = []

    @hookimpl
    def upload_file_stored(self, record, event):
        self.calls.append(event.id)
        if len(self.calls) <= 2:
            raise RuntimeError("the search index is down")
        self.kept.append((record, event))


class Steady:
    __name__ = "tests.steady"

    def __init__(self):
        self.seen: list[tuple[str, str, int]] = []

    @hookimpl
    def upload_file_stored(self, record):
        self.seen.append(("file.stored", record["id"], 0))

    @hookimpl
    def upload_file_deleted(self, record, event):
        self.seen.append((event.type, record["id"], event.attempt))

    @hookimpl
    def upload_file_expired(self, event):
        self.seen.append((event.type, event.file["id"], event.attempt))


def test_a_plugin_that_raises_fails_no_upload_and_is_offered_the_event_again(make_app):
    flaky, steady = Flaky(), Steady()
    app = make_app(EXTRA_PLUGINS=[flaky, steady], EVENT_RETRY_MAX_DELAY=1.0)
    dispatch.start(app)
    client = app.test_client()
    record = multipart_upload(client, "a.txt")[0]
    wait_for(lambda: flaky.kept, what="the third call")
    (kept, event), = flaky.kept
    assert kept == record and event.attempt == 3 and event.type == "file.stored"
    assert flaky.calls == [event.id] * 3  # the same event each time
    assert steady.seen == [("file.stored", record["id"], 0)]  # the other plugin: once, whatever the first did
    assert client.delete(f"/files/{record['id']}").status_code == 204
    wait_for(lambda: len(steady.seen) == 2, what="the delete")
    assert steady.seen[1] == ("file.deleted", record["id"], 1)


def test_a_broken_plugin_module_stops_the_gateway_with_a_sentence(make_app):
    with pytest.raises(SystemExit, match="upload_chek"):
        make_app(UPLOAD_PLUGINS="tests.plugin_modules.misspelt")


@pytest.mark.parametrize("plugins, named", [("tests.plugin_modules.misspelt", "upload_chek"),
                                            ("no_such_plugin_module", "no_such_plugin_module")])
def test_python_m_gateway_with_a_broken_plugin_stops_before_serving(tmp_path, plugins, named):
    """Found in a worker, gunicorn restarted it for ever (27 times in 12 s), the port open
    and nothing answering; the gateway must stop, as the validator and thumbnail service do."""
    import subprocess
    import sys

    from tests.conftest import free_port
    from tests.processes import ROOT

    env = {**os.environ, "GATEWAY_PORT": str(free_port()), "DATA_DIR": str(tmp_path / "data"),
           "UPLOAD_PLUGINS": plugins, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "gateway"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert named in done.stderr
    assert "Booting worker" not in done.stderr


def upload_file_stored(record):
    """A module-level implementation, loaded by name (UPLOAD_PLUGINS)."""
    STORED_BY_MODULE.append(record["id"])


upload_file_stored = hookimpl(upload_file_stored)
STORED_BY_MODULE: list[str] = []


def test_a_plugin_module_named_in_upload_plugins_gets_events(make_app):
    app = make_app(UPLOAD_PLUGINS=__name__)
    dispatch.start(app)
    record = multipart_upload(app.test_client(), "a.txt")[0]
    wait_for(lambda: record["id"] in STORED_BY_MODULE, what="the module's hook")


# ---------------------------------------------------------------- every way a file comes and goes


def test_every_path_reports_its_event(make_app, tmp_path):
    """A form whose expires_in comes after its files; a batch taken back; reconcile
    dropping a record whose bytes are gone; a quota check reaping its user's expired
    files. Events are taken by hand (the threads not started): no race with the requests."""
    steady = Steady()
    app = make_app(EXTRA_PLUGINS=[steady], AUTH="token", ADMIN_TOKEN="a" * 40, USER_QUOTA_FILES=100)
    events = app.extensions["events"]
    client = app.test_client()
    admin = {"Authorization": "Bearer " + "a" * 40}
    alice = client.post("/users", json={"username": "alice"}, headers=admin).get_json()
    as_alice = {"Authorization": "Bearer " + alice["token"]}

    # expires_in after the file: the stored event (not taken yet) says the expiry too.
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"late.txt\"\r\n\r\nlate\n\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"expires_in\"\r\n\r\n1\r\n--b--\r\n")
    late = client.post("/upload", data=body, content_type="multipart/form-data; boundary=b", headers=as_alice)
    assert late.status_code == 201 and late.get_json()["expires_at"]
    events.deliver("tests.steady")
    assert steady.seen == [("file.stored", late.get_json()["id"], 0)]

    # A batch whose second file is refused: the first is taken back. (Uploads as the admin, who
    # has no quota, until late.txt is to be reaped by alice's.)
    refused = client.post("/upload", data={"file": [(io.BytesIO(b"fine\n"), "fine.txt"),
                                                   (io.BytesIO(MZ_HEADER), "evil.txt")]},
                          content_type="multipart/form-data", headers=admin)
    assert refused.status_code == 415
    events.deliver("tests.steady")
    assert [kind for kind, _, _ in steady.seen[1:]] == ["file.stored", "file.deleted"]
    assert steady.seen[1][1] == steady.seen[2][1]

    # Reconcile: bytes gone, the record goes, and says so.
    lost = client.post("/upload", data={"file": (io.BytesIO(b"lost\n"), "lost.txt")},
                       content_type="multipart/form-data", headers=admin).get_json()
    app.extensions["storage"].delete("files", lost["filename"])
    app.extensions["reconciler"].run()
    events.deliver("tests.steady")
    assert steady.seen[-2:] == [("file.stored", lost["id"], 0), ("file.deleted", lost["id"], 1)]

    # The quota check of alice's next upload reaps late.txt, expired by now.
    expires = datetime.fromisoformat(late.get_json()["expires_at"].replace("Z", "+00:00"))
    time.sleep(max(0.0, (expires - datetime.now(timezone.utc)).total_seconds()) + 0.1)
    assert client.post("/upload", data={"file": (io.BytesIO(b"next\n"), "next.txt")},
                       content_type="multipart/form-data", headers=as_alice).status_code == 201
    events.deliver("tests.steady")
    kinds = [(kind, file_id) for kind, file_id, _ in steady.seen[-2:]]
    assert ("file.expired", late.get_json()["id"]) in kinds


def test_a_form_expiry_after_the_file_is_in_the_stored_event(make_app):
    flaky = Flaky()
    flaky.calls = ["x", "y"]  # past its failures: keeps from the first call
    app = make_app(EXTRA_PLUGINS=[flaky])
    client = app.test_client()
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"late.txt\"\r\n\r\nlate\n\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"expires_in\"\r\n\r\n3600\r\n--b--\r\n")
    response = client.post("/upload", data=body, content_type="multipart/form-data; boundary=b")
    assert response.status_code == 201
    app.extensions["events"].deliver("tests.flaky")
    (record, _), = flaky.kept
    assert record == response.get_json() and record["expires_at"]


# ---------------------------------------------------------------- settings


def test_webhook_settings_are_checked_at_start():
    from gateway import config

    with pytest.raises(SystemExit, match="WEBHOOK_SECRET"):
        config.from_env({"WEBHOOK_URLS": "https://example.org/hook"})
    with pytest.raises(SystemExit, match="not an http"):
        config.from_env({"WEBHOOK_URLS": "ftp://example.org/hook", "WEBHOOK_SECRET": "s"})
    settings = config.from_env({"WEBHOOK_URLS": " https://a.example/x , http://b.example:8080/y,https://a.example/x",
                                "WEBHOOK_SECRET": "s"})
    assert settings["WEBHOOK_URLS"] == ["https://a.example/x", "http://b.example:8080/y"]
    assert plugin_name("http://b.example:8080/y").startswith("webhook:b.example:8080#")

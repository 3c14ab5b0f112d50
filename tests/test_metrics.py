"""Prometheus metrics of all three services, scraped over HTTP the way Prometheus does:
the validator and the thumbnail service run as real processes (`python -m ...`, as
`make run` starts them) with their metrics endpoints on free ports, the gateway as
`python -m gateway`; real uploads go through, and the counters must have moved by
exactly what happened, with the right labels."""
from __future__ import annotations

import base64
import errno
import io
import socket
import time
import urllib.request

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway import create_app
from protos.metrics import ServerMetrics, metrics_host, serve_metrics
from protos.serving import build_server
from tests.conftest import free_port, render, start_gateway_process, validate
from tests.processes import service_process
from tests.samples import MZ_HEADER, make_sample
from thumbnail_service import metrics as thumbnail_metrics
from thumbnail_service.config import Settings as ThumbnailSettings
from validator_service.config import Settings as ValidatorSettings

pytestmark = pytest.mark.timeout(120)


class Scrape(dict):
    """One scrape: {(sample name, sorted labels): value}."""

    def __call__(self, name: str, **labels) -> float:
        return self.get((name, tuple(sorted(labels.items()))), 0.0)


def parse(text: str) -> Scrape:
    samples = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(response.read().decode())


def moved(before: Scrape, after: Scrape, name: str, **labels) -> float:
    return after(name, **labels) - before(name, **labels)


def tus_upload(base: str, name: str, data: bytes) -> requests.Response:
    metadata = f"filename {base64.b64encode(name.encode()).decode()}"
    return requests.post(base + "/tus/", data=data, timeout=30, headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)), "Upload-Metadata": metadata,
        "Content-Type": "application/offset+octet-stream"})


def post(base: str, name: str, data: bytes) -> requests.Response:
    return requests.post(base + "/upload", files={"file": (name, data)}, timeout=30)


@pytest.fixture
def stack(tmp_path):
    """The three services as processes, each with its metrics endpoint on a free port."""
    ports = {name: (free_port(), free_port()) for name in ("validator", "thumbnail")}
    with service_process("validator_service", "VALIDATOR_ADDR", ports["validator"][0],
                         {"VALIDATOR_METRICS_PORT": str(ports["validator"][1])}), \
            service_process("thumbnail_service", "THUMBNAIL_ADDR", ports["thumbnail"][0],
                            {"THUMBNAIL_METRICS_PORT": str(ports["thumbnail"][1])}):
        gateway = start_gateway_process(tmp_path / "data", f"127.0.0.1:{ports['validator'][0]}",
                                        f"127.0.0.1:{ports['thumbnail'][0]}")
        try:
            yield {"gateway": gateway.url + "/metrics", "base": gateway.url,
                   "validator": f"http://127.0.0.1:{ports['validator'][1]}/metrics",
                   "thumbnail": f"http://127.0.0.1:{ports['thumbnail'][1]}/metrics"}
        finally:
            gateway.proc.terminate()
            gateway.proc.wait(timeout=15)


def test_real_uploads_move_every_services_counters(stack, tmp_path):
    base = stack["base"]
    png = make_sample("png", tmp_path).read_bytes()
    text = b"plain words, sent through tus\n" * 10
    # The first uploads (and scrapes) make the label children; what follows is measured against them.
    assert post(base, "warm.txt", b"warm up\n").status_code == 201
    before = {name: scrape(stack[name]) for name in ("gateway", "validator", "thumbnail")}

    assert post(base, "photo.png", png).status_code == 201
    assert post(base, "tool.exe", MZ_HEADER).status_code == 415          # extension_not_allowed
    refused = post(base, "fake.png", b"this is text, not a png\n")       # content_mismatch
    assert refused.status_code == 415 and refused.json()["code"] == "content_mismatch"
    created = tus_upload(base, "notes.txt", text)
    assert created.status_code == 201 and created.headers["Upload-Offset"] == str(len(text))

    after = {name: scrape(stack[name]) for name in ("gateway", "validator", "thumbnail")}
    g0, g1 = before["gateway"], after["gateway"]

    # --- the gateway: outcomes, refusals by reason, bytes, steps, tus, gRPC calls, health ---
    assert moved(g0, g1, "upload_requests_total", outcome="stored") == 2
    assert moved(g0, g1, "upload_requests_total", outcome="refused") == 2
    assert moved(g0, g1, "upload_requests_total", outcome="error") == 0
    assert moved(g0, g1, "upload_refusals_total", reason="extension_not_allowed") == 1
    assert moved(g0, g1, "upload_refusals_total", reason="content_mismatch") == 1
    assert moved(g0, g1, "upload_stored_bytes_total") == len(png) + len(text)
    assert moved(g0, g1, "upload_duration_seconds_count") == 1  # the stored POST /upload
    # receive: three POST /upload files and one PATCH; validate: the same four, the tus head check
    # (it comes with the PATCH) not counted as a step; store and db: the two stored files.
    assert moved(g0, g1, "upload_step_seconds_count", step="receive") == 4
    assert moved(g0, g1, "upload_step_seconds_count", step="validate") == 4
    assert moved(g0, g1, "upload_step_seconds_count", step="store") == 2
    assert moved(g0, g1, "upload_step_seconds_count", step="db") == 2
    assert moved(g0, g1, "upload_step_seconds_count", step="thumbnail") == 1  # the PNG
    assert moved(g0, g1, "upload_step_seconds_sum", step="thumbnail") > 0
    assert moved(g0, g1, "upload_thumbnails_total", outcome="done") == 1
    assert moved(g0, g1, "upload_tus_creations_total") == 1
    assert moved(g0, g1, "upload_tus_patches_total") == 1
    assert moved(g0, g1, "upload_tus_received_bytes_total") == len(text)
    assert moved(g0, g1, "upload_tus_finished_total") == 1
    assert g1("upload_service_up", service="validator") == g1("upload_service_up", service="thumbnail") == 1
    assert g1("upload_thumbnails_pending") == 0
    assert g1("process_resident_memory_bytes") > 0

    # --- each call the gateway made is one the service answered, with the same code ---
    v0, v1 = before["validator"], after["validator"]
    t0, t1 = before["thumbnail"], after["thumbnail"]
    for service, method, s0, s1 in (("validator", "upload.v1.Validator/Check", v0, v1),
                                    ("thumbnail", "upload.v1.Thumbnail/Render", t0, t1)):
        made = moved(g0, g1, "upload_grpc_client_calls_total", service=service, method=method, code="OK")
        answered = moved(s0, s1, "upload_grpc_server_calls_total", service=service, method=method, code="OK")
        assert made == answered >= 1, (service, method, made, answered)
        assert moved(g0, g1, "upload_grpc_client_call_seconds_count", service=service, method=method) == made
        assert moved(s0, s1, "upload_grpc_server_call_seconds_count", service=service, method=method) == made
    assert moved(g0, g1, "upload_grpc_client_calls_total", service="thumbnail",
                 method="upload.v1.Thumbnail/Render", code="OK") == 1

    # --- the validator: verdicts by reason ---
    assert moved(v0, v1, "upload_validator_verdicts_total", verdict="refused", reason="extension_not_allowed") == 1
    assert moved(v0, v1, "upload_validator_verdicts_total", verdict="refused", reason="content_mismatch") == 1
    # photo.png, and notes.txt twice (its head when it arrived, the whole when it was finished).
    assert moved(v0, v1, "upload_validator_verdicts_total", verdict="accepted", reason="none") == 3
    assert v1("process_resident_memory_bytes") > 0

    # --- the thumbnail service: renders ---
    assert moved(t0, t1, "upload_thumbnail_renders_total", outcome="ok") == 1
    assert moved(t0, t1, "upload_thumbnail_render_seconds_count", outcome="ok") == 1
    assert moved(t0, t1, "upload_thumbnail_input_bytes_total") == len(png)


def test_a_refusal_counts_under_its_reason(make_app, tmp_path):
    client = make_app().test_client()
    before = parse(client.get("/metrics").get_data(as_text=True))
    response = client.post("/upload", data={"file": (io.BytesIO(b""), "empty.txt")},
                           content_type="multipart/form-data")
    assert response.status_code == 400 and response.get_json()["code"] == "empty_file"
    response = client.post("/upload", data={"file": (io.BytesIO(MZ_HEADER), "setup.exe")},
                           content_type="multipart/form-data")
    assert response.status_code == 415
    after = parse(client.get("/metrics").get_data(as_text=True))
    assert moved(before, after, "upload_refusals_total", reason="empty_file") == 1
    assert moved(before, after, "upload_refusals_total", reason="extension_not_allowed") == 1
    assert moved(before, after, "upload_requests_total", outcome="refused") == 2
    assert moved(before, after, "upload_requests_total", outcome="stored") == 0
    assert moved(before, after, "upload_stored_bytes_total") == 0


def test_refusals_answered_before_the_body_count_too(make_app):
    """A POST /upload whose Content-Length is over the limit, and tus creations refused for their
    name or their Upload-Length, are answered before a byte of the file is read: refusals all the
    same, under their reason, or the dashboard and Grafana miss them."""
    client = make_app(MAX_REQUEST_SIZE=64 * 1024).test_client()
    before = parse(client.get("/metrics").get_data(as_text=True))
    response = client.post("/upload", data={"file": (io.BytesIO(b"x" * 100_000), "big.txt")},
                           content_type="multipart/form-data")
    assert response.status_code == 413 and response.get_json()["code"] == "file_too_large"
    tus = {"Tus-Resumable": "1.0.0"}
    response = client.post("/tus/", headers={**tus, "Upload-Length": "100", "Upload-Metadata":
                                             "filename " + base64.b64encode(b"setup.exe").decode()})
    assert response.status_code == 415 and response.get_json()["code"] == "extension_not_allowed"
    response = client.post("/tus/", headers={**tus, "Upload-Length": str(2 ** 40), "Upload-Metadata":
                                             "filename " + base64.b64encode(b"huge.txt").decode()})
    assert response.status_code == 413 and response.get_json()["code"] == "file_too_large"
    after = parse(client.get("/metrics").get_data(as_text=True))
    assert moved(before, after, "upload_refusals_total", reason="file_too_large") == 2
    assert moved(before, after, "upload_refusals_total", reason="extension_not_allowed") == 1
    assert moved(before, after, "upload_requests_total", outcome="refused") == 3
    assert moved(before, after, "upload_requests_total", outcome="error") == 0


def test_calls_to_a_service_that_is_down_count_as_unavailable(tmp_path, validator):
    app = create_app({"TESTING": True, "DATA_DIR": str(tmp_path / "data"), "VALIDATOR_ADDR": validator.address,
                      "THUMBNAIL_ADDR": f"127.0.0.1:{free_port()}", "HEALTH_TIMEOUT": 0.5})
    try:
        client = app.test_client()
        labels = {"service": "thumbnail", "method": "grpc.health.v1.Health/Check"}
        before = parse(client.get("/metrics").get_data(as_text=True))
        assert client.get("/readyz").status_code == 503
        after = parse(client.get("/metrics").get_data(as_text=True))
        # /readyz and the scrape each ask; every attempt of the retried check counts.
        assert moved(before, after, "upload_grpc_client_calls_total", code="UNAVAILABLE", **labels) >= 2
        assert moved(before, after, "upload_grpc_client_calls_total", code="OK", **labels) == 0
        assert after("upload_service_up", service="thumbnail") == 0
        assert after("upload_service_up", service="validator") == 1
    finally:
        app.extensions["thumbnails"].stop()
        app.extensions["services"].close()


def test_tus_counters(client):
    data = b"abcdefghij" * 100
    before = parse(client.get("/metrics").get_data(as_text=True))
    tus = {"Tus-Resumable": "1.0.0"}
    created = client.post("/tus/", headers={**tus, "Upload-Length": str(len(data)),
                                            "Upload-Metadata": "filename " + base64.b64encode(b"a.txt").decode()})
    assert created.status_code == 201
    location = created.headers["Location"]
    for offset in range(0, len(data), 400):
        response = client.patch(location, data=data[offset:offset + 400], headers={
            **tus, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"})
        assert response.status_code == 204
    after = parse(client.get("/metrics").get_data(as_text=True))
    assert moved(before, after, "upload_tus_creations_total") == 1
    assert moved(before, after, "upload_tus_patches_total") == 3
    assert moved(before, after, "upload_tus_received_bytes_total") == len(data)
    assert moved(before, after, "upload_step_seconds_count", step="receive") == 3
    assert moved(before, after, "upload_tus_finished_total") == 1
    assert moved(before, after, "upload_requests_total", outcome="stored") == 1


def test_a_render_that_fails_counts_under_its_error(thumbnailer):
    server = serve_metrics(thumbnail_metrics.REGISTRY, free_port(), "127.0.0.1", "THUMBNAIL_METRICS_PORT")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        before = scrape(url)
        with pytest.raises(grpc.RpcError) as raised:
            render(thumbnailer.channel, b"not a picture", "application/x-nothing")
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        after = scrape(url)
        assert moved(before, after, "upload_thumbnail_renders_total", outcome="unsupported_type") == 1
        assert moved(before, after, "upload_thumbnail_render_seconds_count", outcome="unsupported_type") == 1
        assert moved(before, after, "upload_grpc_server_calls_total", service="thumbnail",
                     method="upload.v1.Thumbnail/Render", code="FAILED_PRECONDITION") == 1
    finally:
        server.shutdown()
        server.server_close()


def test_a_streamed_answer_counts_when_it_ends_with_how_it_ended():
    """grpc.health.v1.Health/Watch answers with a stream (so does reflection): the call is
    counted and timed when that stream ends, not when the handler hands it over."""
    registry = CollectorRegistry()
    server_metrics = ServerMetrics(registry, "test")
    server, port = build_server("127.0.0.1:0", lambda _server: None, [], metrics=server_metrics)
    server.start()
    method = {"service": "test", "method": "grpc.health.v1.Health/Watch"}

    def calls(code: str) -> float:
        return registry.get_sample_value("upload_grpc_server_calls_total", {**method, "code": code}) or 0
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            time.sleep(0.3)
            watch.cancel()
        deadline = time.monotonic() + 10
        while calls("CANCELLED") == 0:
            assert time.monotonic() < deadline, "the cancelled Watch was never counted"
            time.sleep(0.05)
        assert calls("OK") == 0
        assert registry.get_sample_value("upload_grpc_server_call_seconds_sum", method) >= 0.3
    finally:
        server.stop(0)


# --- the services' metrics settings ---

def test_metrics_ports_have_defaults_apart_from_the_contracts_ports_and_0_turns_them_off():
    ports = {ValidatorSettings.from_env({}).metrics_port, ThumbnailSettings.from_env({}).metrics_port}
    assert len(ports) == 2 and not ports & {5000, 50051, 50052}
    assert ValidatorSettings.from_env({"VALIDATOR_METRICS_PORT": "0"}).metrics_port == 0
    assert ThumbnailSettings.from_env({"THUMBNAIL_METRICS_PORT": "9999"}).metrics_port == 9999
    assert serve_metrics(thumbnail_metrics.REGISTRY, 0, "127.0.0.1", "THUMBNAIL_METRICS_PORT") is None
    with pytest.raises(SystemExit, match="VALIDATOR_METRICS_PORT must be a whole number"):
        ValidatorSettings.from_env({"VALIDATOR_METRICS_PORT": "many"})


def test_metrics_listen_on_the_grpc_interface():
    assert metrics_host("127.0.0.1:50051") == "127.0.0.1"
    assert metrics_host("[::]:50051") == "::"
    assert metrics_host("0.0.0.0:50052") == "0.0.0.0"


def test_a_metrics_port_in_use_is_reported_and_the_service_still_serves(tmp_path):
    # Two replicas on one host share the default metrics port: the second must still validate.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "validator.log"
        grpc_port = free_port()
        with service_process("validator_service", "VALIDATOR_ADDR", grpc_port, log=log,
                             extra_env={"VALIDATOR_METRICS_PORT": str(port)}):
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                verdict = validate(channel, "notes.txt", b"plain text\n")
            assert verdict.accepted
            text = log.read_text()
            assert f"Cannot serve metrics on 127.0.0.1:{port}" in text
            assert "set VALIDATOR_METRICS_PORT to another port" in text


def test_metrics_on_every_interface_fall_back_to_ipv4_where_the_kernel_has_no_ipv6(monkeypatch):
    # A kernel booted with ipv6.disable=1 cannot be had here: the refusal it gives is simulated.
    import protos.metrics as module

    real = module.start_http_server
    asked = []

    def no_ipv6(port, addr, registry):
        asked.append(addr)
        if addr == "::":
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real(port, addr=addr, registry=registry)

    monkeypatch.setattr(module, "start_http_server", no_ipv6)
    server = serve_metrics(thumbnail_metrics.REGISTRY, free_port(), "::", "THUMBNAIL_METRICS_PORT")
    try:
        assert asked == ["::", "0.0.0.0"]
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5) as reply:
            assert b"upload_grpc_server_calls_total" in reply.read()
    finally:
        server.shutdown()

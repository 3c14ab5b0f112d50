"""Optional mutual TLS between the gateway (or any internal caller) and the gRPC services
(protos/tls.py), with real certificates made here (tests/certificates.py, the `pki` fixture):
an upload through a real gateway to both services, who is let in and who is not, the name
checked in a service's certificate, files renewed under a running service, and settings
that cannot work stopping the start with a sentence."""
from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from protos.tls import ClientTls, ServerTls, open_channel
from tests.conftest import free_port, start_gateway_process
from tests.images import encode
from tests.processes import ROOT, service_process
from thumbnail_service.config import Settings as ThumbnailSettings
from validator_service.config import Settings as ValidatorSettings

SERVING = health_pb2.HealthCheckResponse.SERVING
# A channel of its own connection: gRPC otherwise shares connections between channels of
# one process, and a test that means a new handshake must get one.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def client(ca, issued=None, server_name: str = "") -> ClientTls:
    """What a caller holding ``issued`` (or no certificate) and trusting ``ca`` uses."""
    env = {**(issued.env(ca) if issued else {"GRPC_TLS_CA": str(ca)}), "GRPC_TLS_SERVER_NAME": server_name}
    return ClientTls.from_env(env, who="the test")


def health(address: str, tls: ClientTls | None) -> int:
    with open_channel(address, tls, OWN_CONNECTION) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def refused(address: str, tls: ClientTls | None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        health(address, tls)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    return caught.value


@pytest.fixture
def mutual_validator(start_validator, pki):
    """A validator serving mutual TLS: its certificate, and callers' from the test CA."""
    return start_validator(settings=ValidatorSettings.from_env(pki.validator.env(pki.ca)))


# --- end to end ---

def test_an_upload_goes_through_a_real_gateway_to_both_services_over_mutual_tls(tmp_path, pki):
    v_port, t_port = free_port(), free_port()
    gateway_tls = client(pki.ca, pki.gateway)
    with service_process("validator_service", "VALIDATOR_ADDR", v_port, pki.validator.env(pki.ca), tls=gateway_tls), \
            service_process("thumbnail_service", "THUMBNAIL_ADDR", t_port, pki.thumbnail.env(pki.ca), tls=gateway_tls):
        gateway = start_gateway_process(tmp_path / "data", f"127.0.0.1:{v_port}", f"127.0.0.1:{t_port}",
                                        **pki.gateway.env(pki.ca))
        try:
            ready = requests.get(f"{gateway.url}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            image = encode(Image.effect_noise((320, 240), 40).convert("RGB"), "JPEG")
            answer = requests.post(f"{gateway.url}/upload", files={"file": ("photo.jpg", image)}, timeout=30)
            assert answer.status_code == 201, answer.text
            record = answer.json()
            assert record["type"] == "image/jpeg" and record["thumbnail_url"], record
            thumbnail = requests.get(gateway.url + record["thumbnail_url"], timeout=10)
            assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/jpeg"
        finally:
            gateway.proc.terminate()
            gateway.proc.wait(timeout=15)


def test_a_gateway_without_the_tls_settings_finds_tls_services_unreachable(make_app, start_validator,
                                                                            start_thumbnailer, pki):
    validator = start_validator(settings=ValidatorSettings.from_env(pki.validator.env(pki.ca)))
    thumbnailer = start_thumbnailer(settings=ThumbnailSettings.from_env(pki.thumbnail.env(pki.ca)))
    addresses = {"VALIDATOR_ADDR": validator.address, "THUMBNAIL_ADDR": thumbnailer.address}
    plaintext = make_app(**addresses, GRPC_TLS=None).test_client()
    assert plaintext.get("/readyz").status_code == 503
    answer = plaintext.post("/upload", data={"file": (io.BytesIO(b"hello\n"), "a.txt")})
    assert answer.status_code == 503 and "validation service" in answer.get_json()["error"]
    mutual = make_app(**addresses, GRPC_TLS=client(pki.ca, pki.gateway)).test_client()
    assert mutual.get("/readyz").status_code == 200


# --- who is let in ---

def test_health_and_reflection_answer_a_caller_with_a_certificate_from_the_ca(mutual_validator, pki):
    tls = client(pki.ca, pki.gateway)
    assert health(mutual_validator.address, tls) == SERVING
    with open_channel(mutual_validator.address, tls) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=5)
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"upload.v1.Validator", "grpc.health.v1.Health"} <= names


def test_a_caller_without_a_client_certificate_is_refused(mutual_validator, pki):
    refused(mutual_validator.address, client(pki.ca))


def test_a_caller_with_a_certificate_from_another_ca_is_refused(mutual_validator, pki):
    refused(mutual_validator.address, client(pki.ca, pki.stranger))


def test_a_plaintext_caller_is_refused_by_a_tls_port(mutual_validator):
    refused(mutual_validator.address, None)


def test_a_caller_that_does_not_trust_the_services_ca_refuses_them(mutual_validator, pki):
    # The caller's CA bundle holds only the other CA: the validator's certificate does not chain to it.
    refused(mutual_validator.address, client(pki.other_ca, pki.gateway))


def test_without_a_ca_a_service_serves_tls_to_callers_without_certificates(start_validator, pki):
    one_way = start_validator(settings=ValidatorSettings.from_env(pki.validator.env()))
    assert health(one_way.address, client(pki.ca)) == SERVING
    refused(one_way.address, None)


def test_a_service_certificate_for_another_name_is_refused_unless_GRPC_TLS_SERVER_NAME_names_it(
        start_validator, pki):
    # Its certificate carries validator.internal only, and it is reached at 127.0.0.1.
    named = start_validator(settings=ValidatorSettings.from_env(pki.internal.env(pki.ca)))
    refused(named.address, client(pki.ca, pki.gateway))
    refused(named.address, client(pki.ca, pki.gateway, server_name="thumbnail.internal"))
    assert health(named.address, client(pki.ca, pki.gateway, server_name="validator.internal")) == SERVING


# --- renewed files ---

def test_a_service_presents_renewed_files_to_new_connections_and_keeps_the_last_good_ones(
        start_validator, pki, tmp_path, caplog):
    served = tmp_path / "served"
    served.mkdir()
    cert, key = served / "tls.crt", served / "tls.key"

    def put(issued_cert, issued_key):
        # As a renewal lands: each file replaced whole (Kubernetes swaps a symlink, certbot renames).
        for source, target in ((issued_cert, cert), (issued_key, key)):
            shutil.copy(source, str(target) + ".new")
            os.replace(str(target) + ".new", target)

    put(pki.validator.cert, pki.validator.key)
    running = start_validator(settings=ValidatorSettings.from_env(
        {"GRPC_TLS_CERT": str(cert), "GRPC_TLS_KEY": str(key), "GRPC_TLS_CA": str(pki.ca)}))
    as_validator = client(pki.ca, pki.gateway, server_name="validator")
    as_internal = client(pki.ca, pki.gateway, server_name="validator.internal")
    assert health(running.address, as_validator) == SERVING
    refused(running.address, as_internal)

    put(pki.internal.cert, pki.internal.key)
    assert health(running.address, as_internal) == SERVING
    refused(running.address, as_validator)

    # Half a renewal (a certificate without its key): the last good pair is still served.
    with caplog.at_level(logging.WARNING, logger="upload.grpc"):
        put(pki.validator.cert, pki.internal.key)
        assert health(running.address, as_internal) == SERVING
    assert any("cannot be used, still serving the ones loaded before" in r.getMessage()
               and "is not the private key of the certificate" in r.getMessage() for r in caplog.records)
    put(pki.validator.cert, pki.validator.key)
    assert health(running.address, as_validator) == SERVING


# --- settings that cannot work stop the start ---

def stops(make, env: dict, sentence: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        make(env)
    assert sentence in str(stopped.value), stopped.value


SERVER = lambda env: ServerTls.from_env(env, who="the validator")  # noqa: E731
CALLER = lambda env: ClientTls.from_env(env, who="the gateway")  # noqa: E731


def test_half_set_settings_stop_the_start(pki):
    cert, key, ca = str(pki.validator.cert), str(pki.validator.key), str(pki.ca)
    for make in (SERVER, CALLER):
        stops(make, {"GRPC_TLS_CERT": cert, "GRPC_TLS_CA": ca},
              "GRPC_TLS_CERT is set but GRPC_TLS_KEY is not: a certificate is presented with the private key "
              "it was made for, so set both (or neither).")
        stops(make, {"GRPC_TLS_KEY": key, "GRPC_TLS_CA": ca},
              "GRPC_TLS_KEY is set but GRPC_TLS_CERT is not")
    stops(SERVER, {"GRPC_TLS_CA": ca},
          "GRPC_TLS_CA is set but GRPC_TLS_CERT and GRPC_TLS_KEY are not: the validator serves TLS only with a "
          "certificate of its own")
    stops(CALLER, {"GRPC_TLS_CERT": cert, "GRPC_TLS_KEY": key},
          "GRPC_TLS_CERT and GRPC_TLS_KEY are set but GRPC_TLS_CA is not: the gateway checks the services' "
          "certificates against that CA bundle")
    stops(CALLER, {"GRPC_TLS_SERVER_NAME": "validator"}, "GRPC_TLS_SERVER_NAME is set but GRPC_TLS_CA is not")
    # Nothing set (or set empty) is plaintext, as `make run` has it.
    for make in (SERVER, CALLER):
        assert make({}) is None
        assert make({"GRPC_TLS_CERT": " ", "GRPC_TLS_KEY": "", "GRPC_TLS_CA": ""}) is None


def test_files_that_cannot_be_used_stop_the_start(pki, tmp_path):
    from tests.certificates import CA

    cert, key, ca = str(pki.validator.cert), str(pki.validator.key), str(pki.ca)
    missing = str(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    locked = CA(tmp_path, "locked-ca").issue("locked", passphrase=b"secret")
    for make in (SERVER, CALLER):
        stops(make, {"GRPC_TLS_CERT": cert, "GRPC_TLS_KEY": key, "GRPC_TLS_CA": missing},
              f"GRPC_TLS_CA names {missing}, which cannot be read (No such file or directory).")
        stops(make, {"GRPC_TLS_CERT": missing, "GRPC_TLS_KEY": key, "GRPC_TLS_CA": ca},
              f"GRPC_TLS_CERT names {missing}, which cannot be read")
        stops(make, {"GRPC_TLS_CERT": str(junk), "GRPC_TLS_KEY": key, "GRPC_TLS_CA": ca},
              f"GRPC_TLS_CERT ({junk}) holds no PEM certificate")
        stops(make, {"GRPC_TLS_CERT": cert, "GRPC_TLS_KEY": key, "GRPC_TLS_CA": key},
              f"GRPC_TLS_CA ({key}) holds no PEM certificate")
        stops(make, {"GRPC_TLS_CERT": cert, "GRPC_TLS_KEY": str(pki.gateway.key), "GRPC_TLS_CA": ca},
              f"GRPC_TLS_KEY ({pki.gateway.key}) is not the private key of the certificate in GRPC_TLS_CERT "
              f"({cert}): give the key that certificate was made for.")
        stops(make, {"GRPC_TLS_CERT": cert, "GRPC_TLS_KEY": str(junk), "GRPC_TLS_CA": ca},
              f"GRPC_TLS_KEY ({junk}) holds no PEM private key")
        stops(make, {"GRPC_TLS_CERT": str(locked.cert), "GRPC_TLS_KEY": str(locked.key), "GRPC_TLS_CA": ca},
              f"GRPC_TLS_KEY ({locked.key}) is protected by a passphrase, which gRPC cannot use")


@pytest.mark.parametrize("module,env,sentence", [
    ("validator_service", {"GRPC_TLS_CA": "{ca}"},
     "GRPC_TLS_CA is set but GRPC_TLS_CERT and GRPC_TLS_KEY are not: the validator serves TLS only"),
    ("thumbnail_service", {"GRPC_TLS_CERT": "{cert}"}, "GRPC_TLS_CERT is set but GRPC_TLS_KEY is not"),
    ("gateway", {"GRPC_TLS_CERT": "{cert}", "GRPC_TLS_KEY": "{key}"},
     "GRPC_TLS_CERT and GRPC_TLS_KEY are set but GRPC_TLS_CA is not: the gateway checks"),
])
def test_each_process_started_with_settings_that_cannot_work_stops_with_the_sentence(pki, tmp_path, module,
                                                                                    env, sentence):
    files = {"ca": pki.ca, "cert": pki.validator.cert, "key": pki.validator.key}
    env = {name: value.format(**files) for name, value in env.items()}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRPC_TLS_")}
    result = subprocess.run([sys.executable, "-m", module], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**clean, "DATA_DIR": str(tmp_path / "data"), "GATEWAY_PORT": str(free_port()),
                                 "VALIDATOR_ADDR": f"127.0.0.1:{free_port()}",
                                 "THUMBNAIL_ADDR": f"127.0.0.1:{free_port()}", "VALIDATOR_METRICS_PORT": "0",
                                 "THUMBNAIL_METRICS_PORT": "0", **env})
    assert result.returncode == 1, result.stderr
    assert sentence in result.stderr and "Traceback" not in result.stderr, result.stderr


# --- the README's recipe ---

def readme_recipe() -> str:
    """The first shell block of the README's "Mutual TLS" section: how an operator makes the files."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Mutual TLS"):]
    block = section[section.index("```sh\n") + len("```sh\n"):]
    return block[:block.index("```")]


def test_the_readmes_openssl_recipe_makes_certificates_that_work(tmp_path, start_validator):
    if shutil.which("openssl") is None:
        pytest.fail("The openssl command is missing (the README's recipe uses it): "
                    "run 'sudo apt-get install openssl', then the tests again.", pytrace=False)
    made = subprocess.run(["bash", "-euc", readme_recipe()], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    tls = tmp_path / "tls"

    def env(name: str, **more) -> dict:
        return {"GRPC_TLS_CERT": str(tls / f"{name}.pem"), "GRPC_TLS_KEY": str(tls / f"{name}.key"),
                "GRPC_TLS_CA": str(tls / "ca.pem"), **more}

    validator = start_validator(settings=ValidatorSettings.from_env(env("validator")))
    assert health(validator.address, ClientTls.from_env(env("gateway"))) == SERVING
    # The images' health check presents the service's own certificate, and dials 127.0.0.1 by another name.
    assert health(validator.address, ClientTls.from_env(env("validator", GRPC_TLS_SERVER_NAME="validator"))) \
        == SERVING
    refused(validator.address, ClientTls.from_env({"GRPC_TLS_CA": str(tls / "ca.pem")}))
    # The gateway's certificate is for client use only: a service cannot serve with it.
    wrong = start_validator(settings=ValidatorSettings.from_env(env("gateway")))
    refused(wrong.address, ClientTls.from_env(env("gateway", GRPC_TLS_SERVER_NAME="gateway")))


def test_an_internal_caller_uses_protos_client_with_the_same_settings(mutual_validator, pki):
    from protos.client import ValidatorClient, connect

    tls = ClientTls.from_env({**pki.gateway.env(pki.ca), "GRPC_TLS_SERVER_NAME": "validator"})
    with connect(mutual_validator.address, tls.credentials(), tls.options()) as channel:
        verdict = ValidatorClient(channel).check("notes.txt", b"hello\n")
    assert verdict.accepted and verdict.detected_type == "text/plain"
    with connect(mutual_validator.address) as channel, pytest.raises(grpc.RpcError) as plaintext:
        ValidatorClient(channel).check("notes.txt", b"hello\n", timeout=2)
    # The client retries UNAVAILABLE until its deadline: either way, a plaintext caller gets nothing.
    assert plaintext.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

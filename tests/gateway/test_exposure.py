"""AUTH=off serves only this machine: `python -m gateway` refuses a non-loopback
GATEWAY_HOST unless accounts are on (or ALLOW_PUBLIC_WITHOUT_AUTH says a proxy
in front authenticates), and says why."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from gateway import config
from tests.accounts import ADMIN_TOKEN
from tests.conftest import free_port, start_gateway_process
from tests.processes import ROOT


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts_are_loopback(host):
    assert config.is_loopback(host) is True


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "172.16.4.4", "8.8.8.8",
                                  "fe80::1", "", "0", "no-such-host.invalid"])
def test_other_hosts_are_not_loopback(host):
    assert config.is_loopback(host) is False


def settings(**env) -> dict:
    return config.from_env({k: str(v) for k, v in env.items()})


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", ""])
def test_check_exposure_refuses_auth_off_beyond_loopback_and_names_auth_token(host):
    with pytest.raises(SystemExit) as refused:
        config.check_exposure(settings(GATEWAY_HOST=host, AUTH="off"))
    message = str(refused.value.code)
    assert "AUTH=token" in message
    assert "Refusing to start" in message
    assert f"GATEWAY_HOST={host}" in message
    assert "ALLOW_PUBLIC_WITHOUT_AUTH" in message


def test_auth_off_is_the_default_and_is_refused_on_all_interfaces():
    with pytest.raises(SystemExit):
        config.check_exposure(settings(GATEWAY_HOST="0.0.0.0"))


@pytest.mark.parametrize("env", [
    {"GATEWAY_HOST": "127.0.0.1", "AUTH": "off"},
    {"GATEWAY_HOST": "localhost", "AUTH": "off"},
    {"GATEWAY_HOST": "::1", "AUTH": "off"},
    {},  # the default bind is 127.0.0.1
    {"GATEWAY_HOST": "0.0.0.0", "AUTH": "token"},
    {"GATEWAY_HOST": "192.168.1.20", "AUTH": "token", "ADMIN_TOKEN": "x"},
    {"GATEWAY_HOST": "0.0.0.0", "AUTH": "off", "ALLOW_PUBLIC_WITHOUT_AUTH": "1"},
    {"GATEWAY_HOST": "0.0.0.0", "AUTH": "off", "ALLOW_PUBLIC_WITHOUT_AUTH": "true"},
])
def test_check_exposure_allows_loopback_token_auth_or_an_explicit_opt_out(env):
    assert config.check_exposure(settings(**env)) is None


def test_a_bad_allow_public_value_is_refused_not_taken_as_yes():
    with pytest.raises(SystemExit) as refused:
        settings(GATEWAY_HOST="0.0.0.0", ALLOW_PUBLIC_WITHOUT_AUTH="maybe")
    assert "ALLOW_PUBLIC_WITHOUT_AUTH" in str(refused.value.code)


# --- the real process ---

def gateway_env(tmp_path, validator, thumbnailer, **env) -> dict:
    return {**os.environ, "GATEWAY_PORT": str(free_port()), "DATA_DIR": str(tmp_path / "data"),
            "VALIDATOR_ADDR": validator.address, "THUMBNAIL_ADDR": thumbnailer.address,
            **{k: str(v) for k, v in env.items()}}


def stop(gateway) -> None:
    if gateway.proc.poll() is None:
        gateway.proc.terminate()
        try:
            gateway.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            gateway.proc.kill()
            gateway.proc.wait()


def get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_the_process_refuses_auth_off_on_a_public_bind_quickly_and_says_why(tmp_path, validator, thumbnailer, host):
    env = gateway_env(tmp_path, validator, thumbnailer, GATEWAY_HOST=host, AUTH="off")
    env.pop("ALLOW_PUBLIC_WITHOUT_AUTH", None)
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the gateway started (or hung) on a public bind with AUTH=off")
    assert proc.returncode != 0
    assert time.monotonic() - started < 15
    assert "Refusing to start" in err and "AUTH=token" in err and f"GATEWAY_HOST={host}" in err
    assert "Traceback" not in err
    assert "Listening at" not in out + err
    assert not (tmp_path / "data" / "uploads.db").exists()  # refused before anything was made


def test_the_process_with_auth_token_starts_on_all_interfaces(tmp_path, validator, thumbnailer):
    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address,
                                    GATEWAY_HOST="0.0.0.0", AUTH="token", ADMIN_TOKEN=ADMIN_TOKEN)
    try:
        assert get(gateway.url + "/healthz")[0] == 200
        status, body = get(gateway.url + "/files")
        assert status == 401 and body["error"]
        status, body = get(gateway.url + "/me", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 200 and body["admin"] is True
    finally:
        stop(gateway)
    assert gateway.proc.returncode is not None


def test_the_process_with_auth_off_and_allow_public_starts_on_all_interfaces(tmp_path, validator, thumbnailer):
    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address,
                                    GATEWAY_HOST="0.0.0.0", AUTH="off", ALLOW_PUBLIC_WITHOUT_AUTH="1")
    try:
        assert get(gateway.url + "/healthz")[0] == 200
        status, body = get(gateway.url + "/files")
        assert status == 200 and body["files"] == []
    finally:
        stop(gateway)


def test_the_process_with_auth_off_on_loopback_starts(tmp_path, validator, thumbnailer):
    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address,
                                    GATEWAY_HOST="127.0.0.1", AUTH="off", ALLOW_PUBLIC_WITHOUT_AUTH="")
    try:
        assert get(gateway.url + "/files")[0] == 200
    finally:
        stop(gateway)

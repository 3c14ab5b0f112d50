"""A service installs alone, and so does a caller: fresh venvs (python -m venv, the pip it comes
with) get `pip install -c requirements.lock "<clone>[validator]"`, `"<clone>[thumbnail]"` and the
bare `"<clone>"`, from a copy of the checkout as git holds it (no generated protos: the build makes
them). None of them has the gateway's, the tests' or the benchmarks' packages; what they have is at
the lock's versions; each service then runs from its venv alone and answers gRPC calls made from
the caller's venv (the generated stubs, and protos.client), which has nothing but the `protos`
package and its gRPC dependencies.

Needs PyPI (pip's cache makes it quick: well under a minute after `make install`)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import free_port
from tests.processes import ROOT, terminate

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
LOCK = ROOT / "requirements.lock"
# service -> (its extra, its module, the env var of its address, of its metrics port)
SERVICES = {
    "validator": ("validator", "validator_service", "VALIDATOR_ADDR", "VALIDATOR_METRICS_PORT"),
    "thumbnail": ("thumbnail", "thumbnail_service", "THUMBNAIL_ADDR", "THUMBNAIL_METRICS_PORT"),
}
# The extras that no service or caller needs.
NOT_SERVICES = ("gateway", "dev", "test", "bench", "fuzz")
# What the issue names, which the sets computed below must include.
NEVER_IN_A_SERVICE = {"flask", "gunicorn", "sqlalchemy", "boto3", "playwright", "moto", "matplotlib", "pytest",
                      "grpcio-tools", "honcho"}
# What a venv has of its own, beside what was asked for.
VENV_OWN = {"pip", "setuptools"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0))


def names(requirements: list[str]) -> set[str]:
    return {requirement_name(r) for r in requirements}


BASE = names(PROJECT["dependencies"])
EXTRAS = {extra: names(reqs) for extra, reqs in PROJECT["optional-dependencies"].items()}


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


# --- what pyproject.toml and the lock say, read without installing anything ---

def test_the_lock_pins_every_extra_but_fuzz_and_make_lock_compiles_them_all():
    pins = locked()
    for extra, required in [("(base)", BASE)] + [(e, n) for e, n in EXTRAS.items() if e != "fuzz"]:
        assert required <= set(pins), f"{extra}: {required - set(pins)} not in requirements.lock: make lock"
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    (lock_rule,) = re.findall(r"^\t.*uv pip compile.*$", makefile, flags=re.M)
    assert set(re.findall(r"--extra (\S+)", lock_rule)) == set(EXTRAS) - {"fuzz"}


def test_the_build_generates_the_protos_with_the_locked_grpcio_tools():
    """setup.py generates the protos while building, with [build-system]'s grpcio-tools: the same
    version as the lock's, which `make protos` uses, so every install gets the same code (and
    generated code demands a grpcio and protobuf at least as new as its grpcio-tools)."""
    (pin,) = [r for r in PYPROJECT["build-system"]["requires"] if requirement_name(r) == "grpcio-tools"]
    assert pin == f"grpcio-tools=={locked()['grpcio-tools']}", "pin [build-system]'s grpcio-tools to the lock's"
    assert "grpcio-tools" in EXTRAS["dev"]


def test_services_and_callers_need_none_of_the_gateway_tests_or_benchmarks():
    assert NEVER_IN_A_SERVICE <= set().union(*(EXTRAS[e] for e in NOT_SERVICES))
    for extra in (None, *(extra for extra, *_ in SERVICES.values())):
        assert not (BASE | EXTRAS.get(extra, set())) & NEVER_IN_A_SERVICE, extra


# --- real installs ---

def run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The checkout as a fresh clone has it: the files git tracks (and new ones it does not
    ignore), so no generated protos, no venv, no node_modules."""
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT).stdout.splitlines()
    root = tmp_path_factory.mktemp("clone") / "upload-service"
    for name in listed:
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    assert not list((root / "protos").rglob("*_pb2*.py"))
    return root


class Venv:
    def __init__(self, path: Path):
        self.path = path
        self.python = path / "bin" / "python"

    def installed(self) -> dict[str, str]:
        script = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
        return {canonical(k): v for k, v in json.loads(run(self.python, "-c", script, env=clean_env()).stdout).items()}


def lean_venv(tmp_path_factory, clone: Path, extra: str | None) -> Venv:
    """python -m venv, then the clone (with `extra`) at the lock's versions, by the venv's own pip."""
    venv = Venv(tmp_path_factory.mktemp(f"venv-{extra or 'caller'}"))
    run(sys.executable, "-m", "venv", "--clear", venv.path, env=clean_env())
    target = f"{clone}[{extra}]" if extra else str(clone)
    run(venv.python, "-m", "pip", "install", "-q", "-c", clone / "requirements.lock", target,
        env=clean_env(), cwd=venv.path, timeout=300)
    return venv


def assert_lean(venv: Venv, extra: str | None) -> None:
    installed = venv.installed()
    wanted = BASE | (EXTRAS[extra] if extra else set())
    assert wanted | {"upload-service"} <= set(installed)
    # Whatever any other extra asks for and this install does not need (python-magic for the
    # thumbnail service, Pillow and pluggy for a caller, flask or pytest for any of them).
    unwanted = set().union(*EXTRAS.values()) - wanted - VENV_OWN
    assert NEVER_IN_A_SERVICE <= unwanted
    assert not unwanted & set(installed), f"{extra or 'caller'} has {sorted(unwanted & set(installed))}"
    pins = locked()
    off_lock = {name: version for name, version in installed.items()
                if name not in VENV_OWN | {"upload-service"} and pins.get(name) != version}
    assert not off_lock, f"not at the lock's versions (or not in it): {off_lock}"


@pytest.fixture(scope="module")
def caller(tmp_path_factory, clone) -> Venv:
    venv = lean_venv(tmp_path_factory, clone, None)
    assert_lean(venv, None)
    return venv


CALLER = textwrap.dedent('''
    """Run by the caller's venv: health until SERVING, then the service's calls, through the
    generated stubs and through protos.client; prints JSON."""
    import json, sys, time
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from protos.client import ThumbnailClient, ValidatorClient, connect, error_reason
    from protos.upload.v1 import common_pb2, validator_pb2, validator_pb2_grpc

    service, address, path = sys.argv[1], sys.argv[2], sys.argv[3]
    image = open(path, "rb").read()
    out = {"protos": validator_pb2.__file__}
    with connect(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 30
        while True:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{address} did not report SERVING within 30 s")
            time.sleep(0.1)
        out["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        if service == "validator":
            stub = validator_pb2_grpc.ValidatorStub(channel)
            info = common_pb2.FileInfo(original_name="dot.png", declared_size=len(image))
            verdict = stub.Check(validator_pb2.CheckRequest(info=info, head=image, size=len(image)), timeout=10)
            out["verdict"] = [verdict.accepted, verdict.detected_type, verdict.width, verdict.height]
            verdict = ValidatorClient(channel).validate_file(path)
            out["streamed"] = [verdict.accepted, verdict.detected_type]
            try:  # an error, with its google.rpc.Status (grpcio-status) in the trailers
                ValidatorClient(channel).check("x" * 2000 + ".png", image)
            except grpc.RpcError as error:
                out["error"] = [error.code().name, error_reason(error)]
        else:
            thumb = ThumbnailClient(channel).render_file(path, "image/png", box=(16, 16))
            out["thumbnail"] = [thumb.mime_type, thumb.width, thumb.height, len(thumb.data) > 0]
    print(json.dumps(out))
''')


@pytest.mark.timeout(600)
@pytest.mark.parametrize("service", SERVICES)
def test_a_service_installs_alone_and_serves_a_caller_that_has_only_protos(service, clone, caller,
                                                                           tmp_path_factory, tmp_path):
    extra, module, addr_var, metrics_var = SERVICES[service]
    venv = lean_venv(tmp_path_factory, clone, extra)
    assert_lean(venv, extra)

    # It runs from its venv: started outside the clone and the checkout, with no PYTHONPATH.
    where = run(venv.python, "-c", f"import {module}, protos.upload.v1.{service}_pb2 as m; "
                f"print({module}.__file__); print(m.__file__)", cwd=tmp_path, env=clean_env()).stdout.split()
    assert all(Path(path).is_relative_to(venv.path) for path in where), where

    image = tmp_path / "dot.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    port = free_port()
    log = tmp_path / f"{service}.log"
    with open(log, "w") as output:
        proc = subprocess.Popen([str(venv.python), "-m", module], cwd=tmp_path, stdout=output,
                                stderr=subprocess.STDOUT,
                                env={**clean_env(), addr_var: f"127.0.0.1:{port}", metrics_var: "0",
                                     "PYTHONUNBUFFERED": "1"})
        try:
            call = subprocess.run([str(caller.python), "-c", CALLER, service, f"127.0.0.1:{port}", str(image)],
                                  capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=90)
        finally:
            terminate(proc)
    assert call.returncode == 0, f"{call.stdout}\n{call.stderr}\n--- {service}'s log:\n{log.read_text()[-3000:]}"
    out = json.loads(call.stdout)
    assert Path(out["protos"]).is_relative_to(caller.path)
    assert out["health"] == "SERVING"
    if service == "validator":
        assert out["verdict"] == [True, "image/png", 40, 30] and out["streamed"] == [True, "image/png"]
        assert out["error"] == ["INVALID_ARGUMENT", "INVALID_INPUT"]
    else:
        mime, width, height, data = out["thumbnail"]
        assert mime in ("image/png", "image/jpeg") and (width, height) == (16, 12) and data

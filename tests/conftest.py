"""Shared fixtures: real gRPC servers on free ports, real channels."""
from __future__ import annotations

import io
import os
import socket

import pytest

from protos.streaming import file_info, read_chunks, render_requests, validate_requests
from protos.testing import Running
from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc, validator_pb2_grpc
from tests.postgres import BACKENDS
from tests.s3 import s3_bucket, s3_server  # noqa: F401  (fixtures: a real S3 API, moto's server)
from thumbnail_service import server as thumbnail_server
from validator_service import server as validator_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def start_validator():
    """Start a validator with a given plugin manager and settings; stopped at teardown."""
    started = []

    def start(pm=None, settings=None) -> Running:
        running = Running(*validator_server.create_server("127.0.0.1:0", pm=pm, settings=settings))
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


@pytest.fixture
def start_thumbnailer():
    started = []

    def start(pm=None, settings=None) -> Running:
        running = Running(*thumbnail_server.create_server("127.0.0.1:0", pm=pm, settings=settings))
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


@pytest.fixture(scope="session")
def validator():
    running = Running(*validator_server.create_server("127.0.0.1:0"))
    yield running
    running.close()


@pytest.fixture(scope="session")
def thumbnailer():
    running = Running(*thumbnail_server.create_server("127.0.0.1:0"))
    yield running
    running.close()


def validate(channel, name: str, data: bytes, declared: bool = True, chunk_size: int = 64 * 1024):
    stub = validator_pb2_grpc.ValidatorStub(channel)
    info = file_info(name, len(data) if declared else None)
    return stub.Validate(validate_requests(info, read_chunks(io.BytesIO(data), chunk_size)), timeout=10)


def render(channel, data: bytes, mime: str, box: tuple[int, int] = (0, 0)):
    stub = thumbnail_pb2_grpc.ThumbnailStub(channel)
    options = thumbnail_pb2.RenderOptions(
        info=file_info("x", len(data)), mime_type=mime, max_width=box[0], max_height=box[1])
    return stub.Render(render_requests(options, read_chunks(io.BytesIO(data))), timeout=30)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of the tests' own (tests/postgres.py), for the whole session."""
    from tests.postgres import MISSING, Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.fail(MISSING, pytrace=False)
    cluster = Cluster(bindir, free_port())
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


# A test run killed by a signal (a C library's abort()) ends without pytest's summary; the Makefile
# names the test that was running from this file, so a CI log's tail says where to look.
LAST_STARTED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest-last")


def pytest_runtest_logstart(nodeid, location):
    with open(LAST_STARTED, "w") as f:
        f.write(nodeid + "\n")


def pytest_sessionfinish(session, exitstatus):
    if os.path.exists(LAST_STARTED):
        os.unlink(LAST_STARTED)


def pytest_generate_tests(metafunc):
    """A module with ON_BOTH_BACKENDS = True runs each of its tests that makes an
    app (make_app, app, client...) once on SQLite and once on PostgreSQL."""
    if getattr(metafunc.module, "ON_BOTH_BACKENDS", False) and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS)


@pytest.fixture(params=BACKENDS)
def empty_database(request, tmp_path):
    """The URL of an empty database, once on each backend (a SQLite file, a new
    PostgreSQL database dropped at teardown)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/metadata.db"
        return
    cluster = request.getfixturevalue("postgres")
    url = cluster.database()
    yield url
    cluster.drop(url)


@pytest.fixture
def backend():
    """The metadata backend of make_app's apps; ON_BOTH_BACKENDS modules get both."""
    return "sqlite"


@pytest.fixture
def new_database_url(request, backend):
    """Fresh empty databases on the test's backend: "" is SQLite in the app's DATA_DIR
    (the default); a PostgreSQL database is made per call and dropped at teardown."""
    if backend == "sqlite":
        yield lambda: ""
        return
    cluster = request.getfixturevalue("postgres")
    made = []

    def make() -> str:
        made.append(cluster.database())
        return made[-1]

    yield make
    for url in made:
        cluster.drop(url)


@pytest.fixture
def make_app(tmp_path, validator, thumbnailer, new_database_url):
    """Gateway apps wired to the real gRPC services, each on its own fresh data
    folder (the first under tmp_path/"data") and fresh database (on the test's
    ``backend``); settings override the defaults."""
    from gateway import create_app

    apps = []

    def make(**settings):
        app = create_app({
            "TESTING": True,
            "DATA_DIR": str(tmp_path / ("data" if not apps else f"data{len(apps)}")),
            "DATABASE_URL": settings.pop("DATABASE_URL", None) or new_database_url(),
            "VALIDATOR_ADDR": validator.address,
            "THUMBNAIL_ADDR": thumbnailer.address,
            "THUMBNAIL_RETRY_INTERVAL": 0.2,
            **settings,
        })
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["thumbnails"].stop()
        app.extensions["file_reaper"].stop()
        app.extensions["tus_reaper"].stop()
        app.extensions["events"].stop()
        if "reconcile_timer" in app.extensions:
            app.extensions["reconcile_timer"].stop()
        app.extensions["services"].close()
        # Each app holds a few SQLite connections: hundreds of apps would run the process out of descriptors.
        app.extensions["files"].engine.dispose()


@pytest.fixture
def app(make_app):
    """A gateway app on a fresh data folder, wired to the real gRPC services (AUTH=off)."""
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


class LiveGateway:
    """The gateway as `make run` serves it: `python -m gateway` (gunicorn)."""

    def __init__(self, proc, url: str, data_dir):
        self.proc = proc
        self.url = url
        self.data_dir = data_dir


def start_gateway_process(data_dir, validator_addr: str, thumbnail_addr: str, port: int | None = None, **env):
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from tests.processes import ROOT

    port = port or free_port()
    full_env = {**os.environ, "GATEWAY_PORT": str(port), "DATA_DIR": str(data_dir),
                "VALIDATOR_ADDR": validator_addr, "THUMBNAIL_ADDR": thumbnail_addr,
                "THUMBNAIL_RETRY_INTERVAL": "0.5", **{k: str(v) for k, v in env.items()}}
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=full_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the gateway did not start")
            time.sleep(0.1)
    return LiveGateway(proc, url, data_dir)


@pytest.fixture
def live_gateway(tmp_path, validator, thumbnailer):
    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address)
    yield gateway
    gateway.proc.terminate()
    gateway.proc.wait(timeout=15)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """Certificates for mutual TLS (tests/certificates.py): the services' (for their names and
    127.0.0.1, usable as client certificates too, as the images' health check presents them),
    the gateway's (client only), one from another CA, and one for a name no address carries."""
    from types import SimpleNamespace

    from tests.certificates import CA, CLIENT

    folder = tmp_path_factory.mktemp("pki")
    ca, other = CA(folder), CA(folder, "other-ca")
    return SimpleNamespace(
        ca=ca.cert,
        other_ca=other.cert,
        validator=ca.issue("validator", dns=("validator", "localhost"), ips=("127.0.0.1",)),
        thumbnail=ca.issue("thumbnail", dns=("thumbnail", "localhost"), ips=("127.0.0.1",)),
        gateway=ca.issue("gateway", usages=(CLIENT,)),
        stranger=other.issue("stranger", usages=(CLIENT,)),
        internal=ca.issue("validator.internal", dns=("validator.internal",)),
    )


def _start_clamd(**options):
    from tests.clamd import MISSING, Clamd, find_clamd

    binary = find_clamd()
    if binary is None:
        pytest.fail(MISSING, pytrace=False)
    clamd = Clamd(binary, free_port(), **options)
    clamd.start()
    return clamd


@pytest.fixture(scope="session")
def clamd():
    """A real clamd with the tests' signatures (tests/clamd.py), for the whole session."""
    running = _start_clamd()
    yield running
    running.stop()


@pytest.fixture
def own_clamd():
    """A clamd of the test's own, to kill: started on demand, stopped at teardown."""
    started = []

    def start(**options):
        started.append(_start_clamd(**options))
        return started[-1]

    yield start
    for running in started:
        running.stop()

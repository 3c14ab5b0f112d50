"""Several gateway worker processes (GATEWAY_WORKERS): one /metrics adding up every
worker's counts, background work done by one worker at a time and taken over
when it dies, rate limits counted once for all of them.

Real gunicorn workers (`python -m gateway`), real gRPC services, real SQLite.
"""
from __future__ import annotations

import glob
import io
import os
import signal
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict

from gateway import config
from gateway.http.limit_storage import SQLiteStorage, uri
from gateway.serving.processes import BACKGROUND_LOCK
from tests.accounts import TOKEN_SETTINGS, create_user
from tests.conftest import start_gateway_process

pytestmark = pytest.mark.timeout(120)


def workers_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def stored_by(metrics_dir: Path, pid: int) -> float:
    """upload_requests_total{outcome="stored"} as worker ``pid`` wrote it in its own file."""
    path = metrics_dir / f"counter_{pid}.db"
    if not path.exists():
        return 0
    return sum(item[1] for item in MmapedDict.read_all_values_from_file(str(path))
               if '"upload_requests_total"' in item[0] and '"stored"' in item[0])


def upload(url: str, name: str) -> int:
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: text/plain\r\n\r\nsome words, {name}\r\n--{boundary}--\r\n").encode()
    request = urllib.request.Request(url + "/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                              "Connection": "close"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return response.status


def scrape_stored(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('upload_requests_total{outcome="stored"}'))


def holders(pids: list[int], lock: Path) -> list[int]:
    """Which of ``pids`` keep the background lock file open (only the one holding its flock does)."""
    found = []
    for pid in pids:
        try:
            targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if str(lock) in targets:
            found.append(pid)
    return found


def wait_for(condition, seconds: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds} s")


@pytest.fixture
def two_workers(tmp_path, validator, thumbnailer):
    metrics_dir = tmp_path / "metrics"
    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address,
                                    GATEWAY_WORKERS=2, PROMETHEUS_MULTIPROC_DIR=metrics_dir,
                                    THUMBNAIL_RETRY_INTERVAL=0.2, RECONCILE_INTERVAL=0.2)
    wait_for(lambda: len(workers_of(gateway.proc.pid)) == 2, what="two workers")
    yield gateway, metrics_dir
    gateway.proc.terminate()
    gateway.proc.wait(timeout=15)


def test_metrics_add_up_every_workers_counts(two_workers):
    gateway, metrics_dir = two_workers
    pids = workers_of(gateway.proc.pid)
    sent = 0
    # Connections go to whichever worker accepts first: upload until both have stored some.
    while sent < 400 and not all(stored_by(metrics_dir, pid) for pid in pids):
        assert upload(gateway.url, f"note{sent}.txt") == 201
        sent += 1
    per_worker = {pid: stored_by(metrics_dir, pid) for pid in pids}
    assert all(per_worker.values()), per_worker
    assert sum(per_worker.values()) == sent
    # Whichever worker answers the scrape, it reports every worker's uploads.
    for _ in range(6):
        assert scrape_stored(gateway.url) == sent


def test_one_worker_at_a_time_does_the_background_work_and_another_takes_over(two_workers):
    gateway, _ = two_workers
    lock = Path(gateway.data_dir) / BACKGROUND_LOCK
    first = wait_for(lambda: holders(workers_of(gateway.proc.pid), lock), what="a worker taking its turn")
    time.sleep(1.0)  # many rounds of RECONCILE_INTERVAL: still one, the same
    assert holders(workers_of(gateway.proc.pid), lock) == first and len(first) == 1
    os.kill(first[0], signal.SIGKILL)
    # gunicorn starts a new worker; within a round one of the live ones holds the lock.
    taken = wait_for(lambda: [p for p in holders(workers_of(gateway.proc.pid), lock) if p != first[0]],
                     what="another worker taking over")
    assert len(taken) == 1
    # And the gateway still stores files, with the background work (reconcile) running beside.
    assert upload(gateway.url, "after.txt") == 201


def test_a_metrics_directory_made_for_the_workers_is_removed_at_exit(tmp_path, validator, thumbnailer):
    def made():
        return set(glob.glob(os.path.join(tempfile.gettempdir(), "upload-metrics-*")))

    before = made()
    gateway = start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address, GATEWAY_WORKERS=2)
    try:
        new = made() - before
        assert len(new) == 1, new
        assert upload(gateway.url, "one.txt") == 201
        assert any(name.endswith(".db") for name in os.listdir(new.pop()))
    finally:
        gateway.proc.terminate()
        gateway.proc.wait(timeout=15)
    assert made() - before == set()


def test_rate_limits_count_once_for_all_workers(make_app, new_database_url, tmp_path):
    # Two apps on one DATA_DIR and one database: two worker processes of one gateway.
    shared = {**TOKEN_SETTINGS, "GATEWAY_WORKERS": 2, "RATE_LIMIT_UPLOADS_PER_IP": "3/minute",
              "DATA_DIR": str(tmp_path / "shared"), "DATABASE_URL": new_database_url()}
    first, second = make_app(**shared), make_app(**shared)
    a, b = first.test_client(), second.test_client()
    alice = create_user(a, "alice")["headers"]

    def post(client):
        return client.post("/upload", data={"file": (io.BytesIO(b"plain words\n"), "n.txt")},
                           content_type="multipart/form-data", headers=alice).status_code

    assert [post(a), post(b), post(a)] == [201, 201, 201]
    assert post(b) == 429
    assert post(a) == 429


def test_one_worker_keeps_its_counters_in_memory(make_app):
    from gateway.http.limits import storage_uri

    app = make_app(GATEWAY_WORKERS=1)
    assert storage_uri(app.config) == "memory://"
    app = make_app(GATEWAY_WORKERS=3)
    assert storage_uri(app.config) == uri(os.path.join(app.config["DATA_DIR"], "rate-limits.sqlite"))
    app = make_app(GATEWAY_WORKERS=3, RATE_LIMIT_STORAGE="redis://elsewhere:6379")
    assert storage_uri(app.config) == "redis://elsewhere:6379"


def test_the_sqlite_storage_keeps_both_kinds_of_window(tmp_path):
    storage = SQLiteStorage(uri(str(tmp_path / "limits.sqlite")))
    assert storage.check()
    assert [storage.acquire_entry("k", 2, 60) for _ in range(3)] == [True, True, False]
    start, count = storage.get_moving_window("k", 2, 60)
    assert count == 2 and time.time() - 5 < start <= time.time()
    assert storage.acquire_entry("other", 1, 60)  # keys are counted apart
    assert not storage.acquire_entry("k2", 1, 60, amount=2)  # more than the limit at once
    # A hit older than the window no longer counts.
    assert storage.acquire_entry("short", 1, 1) and not storage.acquire_entry("short", 1, 1)
    time.sleep(1.1)
    assert storage.acquire_entry("short", 1, 1)
    assert storage.incr("fixed", 60) == 1 and storage.incr("fixed", 60, amount=2) == 3
    assert storage.get("fixed") == 3 and storage.get_expiry("fixed") > time.time()
    storage.clear("k")
    assert storage.get_moving_window("k", 2, 60)[1] == 0
    assert storage.reset() >= 2
    assert storage.get("fixed") == 0


def test_workers_default_to_the_cores_and_must_be_a_sensible_number():
    assert config.from_env({})["GATEWAY_WORKERS"] == min(config.cores(), 4)  # 4 x 16 threads: 64 slots
    assert 1 <= config.cores() <= len(os.sched_getaffinity(0))
    # Fewer threads each, more workers before the validator's 64 slots are all taken.
    assert config.from_env({"GATEWAY_THREADS": "64"})["GATEWAY_WORKERS"] == 1
    assert config.from_env({"GATEWAY_THREADS": "8"})["GATEWAY_WORKERS"] == min(config.cores(), 8)
    assert config.from_env({"GATEWAY_WORKERS": "3"})["GATEWAY_WORKERS"] == 3
    for bad in ("0", "-1", "1000"):
        with pytest.raises(SystemExit, match="GATEWAY_WORKERS must be from 1 to 256"):
            config.from_env({"GATEWAY_WORKERS": bad})


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "200000 100000\n"}, 2),            # cgroup v2, a limit of 2 CPUs
    ({"cpu.max": "150000 100000\n"}, 2),            # 1.5 rounds up
    ({"cpu.max": "50000 100000\n"}, 1),             # half a CPU: one worker
    ({"cpu.max": "max 100000\n"}, None),            # no limit: the affinity decides
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),                                       # no cgroup files at all
])
def test_a_containers_cpu_limit_caps_the_default(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert config.cores(str(tmp_path)) == (affinity if expected is None else min(expected, affinity))

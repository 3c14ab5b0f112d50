"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries,
initdb + pg_ctl in a temp folder, a free TCP port on 127.0.0.1 and its socket in
that folder, trust authentication, stopped and removed at the end.

Missing binaries are a failure, not a skip: the metadata suite must run on both
backends (`.ci/run` installs Debian's `postgresql`).
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import sqlalchemy as sa

MISSING = ("PostgreSQL's server binaries (initdb, pg_ctl) were not found on PATH nor in "
           "/usr/lib/postgresql/<version>/bin: install them with `apt-get install postgresql` "
           "(`.ci/run` does), then run the tests again.")


def find_bindir() -> Path | None:
    """PATH first (a developer's own build), then Debian's newest version."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


class Cluster:
    """One server; ``database()`` makes a fresh, empty database on it."""

    def __init__(self, bindir: Path, port: int):
        self.bindir = bindir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="upload-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        # initdb refuses to run as root: as root, the cluster belongs to the `postgres` user.
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.root, postgres.pw_uid, postgres.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._names = itertools.count(1)
        self.admin: sa.Engine | None = None

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self.as_user, str(self.bindir / tool), *args],
                                capture_output=True, text=True, timeout=120)
        if result.returncode:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n{log}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        # Durability is not what these tests are about: no fsync keeps them quick.
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options)
        self.admin = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def database(self) -> str:
        """A new empty database; its URL."""
        name = f"t{next(self._names)}"
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop(self, url: str) -> None:
        name = sa.make_url(url).database
        with self.admin.connect() as conn:
            # FORCE: a test that failed may still hold connections.
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            if self.admin is not None:
                self.admin.dispose()
            if self.data.exists():
                self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


BACKENDS = ("sqlite", "postgresql")

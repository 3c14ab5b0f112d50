"""Migrations on SQLite and PostgreSQL: the migrated schema is exactly the
metadata, databases made by create_all (before migrations) are adopted and
stamped with their rows kept, concurrent starts do not race, and the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from gateway.metadata.engine import create_engine
from gateway.metadata import migrate
from gateway.metadata.accounts import Accounts
from gateway.metadata.files import FileRepository, FileRow
from gateway.metadata.migrate import metadata  # with every table's module imported
from tests.processes import ROOT


def differences(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, metadata)


def version_rows(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()


def a_file(n: int = 1) -> FileRow:
    return FileRow(id=f"{n:032x}", filename=f"{n:032x}.txt", original_name="a.txt", size=3, type="text/plain",
                   is_image=False, width=None, height=None, sha256="0" * 64, thumbnail=None, thumbnail_status="none",
                   uploaded_at=datetime(2030, 1, 2, 3, 4, 5, 6789, tzinfo=timezone.utc), expires_at=None)


def test_migrated_schema_is_the_metadata(empty_database):
    engine = create_engine(empty_database)
    assert migrate.current(engine) is None
    migrate.upgrade(engine)
    assert differences(engine) == []
    assert migrate.current(engine) == migrate.head() == "0005"
    assert set(sa.inspect(engine).get_table_names()) == set(metadata.tables) | {"alembic_version"}
    migrate.upgrade(engine)  # a second start changes nothing
    assert version_rows(engine) == [(migrate.head(),)]
    engine.dispose()


def test_downgrade_to_nothing_and_back(empty_database):
    engine = create_engine(empty_database)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        command.downgrade(migrate.alembic_config(conn), "base")
        conn.commit()
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)
    assert differences(engine) == []
    engine.dispose()


def test_a_database_made_by_create_all_is_stamped_not_made_again(empty_database):
    engine = create_engine(empty_database)
    metadata.create_all(engine)  # what every start did before migrations
    FileRepository(engine).add(a_file())
    alice = Accounts(engine).create_user("alice", "password1")
    migrate.upgrade(engine)
    assert version_rows(engine) == [(migrate.head(),)]
    assert differences(engine) == []
    assert FileRepository(engine).get(a_file().id) == a_file()
    assert Accounts(engine).authenticate("alice", "password1") == alice
    engine.dispose()


def test_a_database_of_an_older_version_gets_what_it_lacked(empty_database):
    # Before accounts and expiry: files without owner_id and its expiry index, no user tables.
    engine = create_engine(empty_database)
    old = sa.MetaData()
    sa.Table("files", old, *[sa.Column(c.name, c.type, nullable=c.nullable, primary_key=c.primary_key)
                             for c in metadata.tables["files"].columns if c.name != "owner_id"])
    old.create_all(engine)
    row = a_file()
    with engine.begin() as conn:
        conn.execute(old.tables["files"].insert().values(**{k: v for k, v in vars(row).items() if k != "owner_id"}))
    migrate.upgrade(engine)
    inspector = sa.inspect(engine)
    assert "owner_id" in {c["name"] for c in inspector.get_columns("files")}
    assert "ix_files_expires_at" in {i["name"] for i in inspector.get_indexes("files")}
    assert {"users", "tokens", "sessions", "server_secrets", "tus_uploads"} <= set(inspector.get_table_names())
    assert FileRepository(engine).get(row.id) == row
    assert migrate.current(engine) == migrate.head()
    engine.dispose()


def test_0002_adds_the_tus_lock_columns_and_keeps_uploads_in_progress(empty_database):
    from gateway.metadata.tables import tus_uploads as table
    from gateway.tus.store import TusStore, TusUpload

    engine = create_engine(empty_database)
    migrate.upgrade(engine, "0001")
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    upload = TusUpload(id="a" * 32, filename="a" * 32 + ".txt", length=10, offset=4, metadata="", original_name="a.txt",
                       declared_type="", expires_in=None, concat=None, state="uploading", head_checked=False,
                       file_id=None, error=None, created_at=now, expires_at=now, owner_id=None)
    with engine.begin() as conn:
        conn.execute(table.insert().values(**{k: v for k, v in vars(upload).items()}))
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    assert differences(engine) == []
    assert TusStore(engine, None, ttl=60).get(upload.id) == upload
    with engine.connect() as conn:
        row = conn.execute(sa.select(table.c.lock_owner, table.c.lock_expires_at, table.c.multipart_id)).one()
    assert tuple(row) == (None, None, None)
    engine.dispose()


def test_0003_adds_share_links_and_keeps_files_users_and_tokens(empty_database):
    """A database in use at 0002 (files, a user, her tokens) gains the share_links
    table; nothing it held changes, and links can be made, revoked and deleted
    with their file at once."""
    from gateway.metadata.shares import ShareLinks
    from gateway.metadata.tables import share_links

    engine = create_engine(empty_database)
    migrate.upgrade(engine, "0002")
    assert "share_links" not in sa.inspect(engine).get_table_names()
    accounts = Accounts(engine)
    alice = accounts.create_user("alice", "password1")
    token, secret = accounts.create_token(alice.id, "laptop")
    files = FileRepository(engine)
    kept, other = a_file(1), a_file(2)
    kept.owner_id = other.owner_id = alice.id
    files.add(kept)
    files.add(other)

    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head() == "0005"
    assert differences(engine) == []
    assert files.get(kept.id) == kept and files.get(other.id) == other
    assert accounts.user_for_token(secret) == alice
    assert [t.id for t in accounts.list_tokens(alice.id)] == [token.id]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(share_links)).scalar_one() == 0

    links = ShareLinks(engine)
    soon = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=1)
    first = links.create(kept.id, alice.id, alice.id, soon)
    second = links.create(other.id, alice.id, alice.id, soon)
    assert links.get(first.id) == first
    assert links.revoke(first.id, owner=alice.id) and links.get(first.id).revoked_at is not None
    files.delete(other.id)  # the file's links go with it
    assert links.get(second.id) is None

    # And back: 0002 has no share_links; the files stay.
    with engine.connect() as conn:
        command.downgrade(migrate.alembic_config(conn), "0002")
        conn.commit()
    assert "share_links" not in sa.inspect(engine).get_table_names()
    assert files.get(kept.id) == kept
    engine.dispose()


def test_0004_adds_the_event_outbox_and_keeps_files_and_share_links(empty_database):
    """A database in use at 0003 gains event_outbox; what it held stays, and a
    file's row and its event are then written together."""
    from gateway.metadata.outbox import Outbox
    from gateway.metadata.shares import ShareLinks

    engine = create_engine(empty_database)
    migrate.upgrade(engine, "0003")
    assert "event_outbox" not in sa.inspect(engine).get_table_names()
    files = FileRepository(engine)
    kept = a_file(1)
    files.add(kept)
    link = ShareLinks(engine).create(kept.id, None, None, datetime.now(timezone.utc) + timedelta(hours=1))

    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head() == "0005"
    assert differences(engine) == []
    assert files.get(kept.id) == kept and ShareLinks(engine).get(link.id) == link
    outbox = Outbox(engine)
    outbox.subscribe({"file.stored": ["hook"]})
    FileRepository(engine, outbox).add(a_file(2))
    assert [s.count for s in outbox.stats()] == [1]

    with engine.connect() as conn:
        command.downgrade(migrate.alembic_config(conn), "0003")
        conn.commit()
    assert "event_outbox" not in sa.inspect(engine).get_table_names()
    assert files.get(kept.id) == kept
    engine.dispose()


CHILD = """
import os, sys, time
from gateway.metadata.engine import create_engine
from gateway.metadata import migrate
while not os.path.exists(sys.argv[2]):
    time.sleep(0.005)
migrate.upgrade(create_engine(sys.argv[1]))
"""


def test_workers_starting_together_migrate_once(empty_database, tmp_path):
    """Like gunicorn workers or replicas starting at the same moment on a new
    database: each upgrades; the lock lets one do it, the others find it done."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, empty_database, str(go)], cwd=ROOT, env=env,
                                 stderr=subprocess.PIPE, text=True) for _ in range(5)]
    time.sleep(1.5)  # all of them imported and waiting
    go.touch()
    errors = [child.communicate(timeout=120)[1] for child in children]
    assert [child.returncode for child in children] == [0] * 5, errors
    engine = create_engine(empty_database)
    assert version_rows(engine) == [(migrate.head(),)]
    assert differences(engine) == []
    engine.dispose()


def test_cli_db_current_and_upgrade(empty_database, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": empty_database, "DATA_DIR": str(tmp_path / "data"),
           "FILE_REAP_INTERVAL": "0", "TUS_REAP_INTERVAL": "0"}

    def flask(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "gateway", "db", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert flask("upgrade") == f"The database is at revision {migrate.head()} (head {migrate.head()}).\n"
    engine = create_engine(empty_database)
    assert differences(engine) == []
    engine.dispose()
    assert flask("current") == f"{migrate.head()} (head {migrate.head()})\n"


def test_two_gateway_processes_share_one_postgres_database(postgres, tmp_path, validator, thumbnailer):
    """The deployment PostgreSQL is for: gateways (gunicorn, `python -m gateway`) on
    one database; a file uploaded through one is listed and served by the other."""
    import requests

    from tests.conftest import start_gateway_process

    url = postgres.database()
    gateways = [start_gateway_process(tmp_path / "data", validator.address, thumbnailer.address, DATABASE_URL=url)
                for _ in range(2)]
    try:
        made = requests.post(gateways[0].url + "/upload", files={"file": ("a.txt", b"hello")}, timeout=30)
        assert made.status_code == 201, made.text
        listed = requests.get(gateways[1].url + "/files", timeout=30).json()["files"]
        assert [f["id"] for f in listed] == [made.json()["id"]]
        assert requests.get(gateways[1].url + made.json()["download_url"], timeout=30).content == b"hello"
    finally:
        for gateway in gateways:
            gateway.proc.terminate()
            gateway.proc.wait(timeout=15)
        postgres.drop(url)
    assert not (tmp_path / "data" / "uploads.db").exists()  # the metadata went to PostgreSQL only

"""Every repository method (files, accounts, tus uploads) on a migrated SQLite
file and on a real PostgreSQL database: the same SQLAlchemy code on both."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from gateway.metadata.engine import create_engine
from gateway.metadata import migrate
from gateway.metadata.accounts import Accounts
from gateway.metadata.files import FileRepository, FileRow
from gateway.storage.local import LocalStorage
from gateway.tus.store import TusStore, TusUpload
from protos.errors import Conflict

UTC = timezone.utc
# Microseconds and all: both backends must give back the very instant.
T0 = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


@pytest.fixture
def engine(empty_database):
    engine = create_engine(empty_database)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def file_row(n: int, **changes) -> FileRow:
    values = dict(id=f"{n:032x}", filename=f"{n:032x}.png", original_name=f"Ünïcode {n}.png", size=5 * 2**40 + n,
                  type="image/png", is_image=True, width=10, height=20, sha256="ab" * 32, thumbnail=None,
                  thumbnail_status="none", uploaded_at=T0 + timedelta(seconds=n), expires_at=None,
                  verdict='{"rules": []}', owner_id=None)
    return FileRow(**{**values, **changes})


def test_files_round_trip_exactly(engine):
    repo = FileRepository(engine)
    row = file_row(1, expires_at=T0 + timedelta(days=1), owner_id="u" * 32)
    repo.add(row)
    got = repo.get(row.id)
    assert got == row  # BigInteger size, boolean, unicode, aware UTC datetimes with microseconds
    assert got.uploaded_at.tzinfo is not None and got.uploaded_at.utcoffset() == timedelta(0)
    assert repo.by_filename(row.filename) == row and repo.by_filename(row.filename, owner="other") is None
    assert repo.get(row.id, owner="u" * 32) == row and repo.get(row.id, owner="other") is None
    assert repo.get("0" * 32) is None
    with pytest.raises(sa.exc.IntegrityError):  # filename is unique
        repo.add(file_row(2, filename=row.filename))


def test_datetimes_are_utc_whatever_the_server_zone(engine, empty_database):
    if engine.dialect.name == "postgresql":
        # A server (database) whose default zone is not UTC: the gateway's sessions still are.
        with engine.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE \"{engine.url.database}\" SET timezone = 'Asia/Kolkata'")
            conn.commit()
        engine.dispose()
    repo = FileRepository(engine)
    repo.add(file_row(1, uploaded_at=T0.astimezone(timezone(timedelta(hours=-7)))))
    repo.add(file_row(2, uploaded_at=T0.replace(tzinfo=None)))  # naive means UTC, as on SQLite
    for n in (1, 2):
        got = repo.get(file_row(n).id).uploaded_at
        assert got == T0 and got.utcoffset() == timedelta(0) and got.isoformat().endswith("+00:00")


def test_files_pages_newest_first_with_cursor_and_owner(engine):
    repo = FileRepository(engine)
    for n in range(7):
        repo.add(file_row(n, owner_id="alice" if n % 2 else "bob"))
    # Two rows at the same instant: the id breaks the tie, and the cursor too.
    repo.add(file_row(100, uploaded_at=T0 + timedelta(seconds=6)))
    now = T0 - timedelta(days=1)
    seen, cursor = [], None
    while True:
        rows, cursor = repo.page(3, cursor, now=now)
        seen += [r.id for r in rows]
        if cursor is None:
            break
    assert seen == [file_row(100).id] + [file_row(n).id for n in range(6, -1, -1)]
    rows, cursor = repo.page(10, owner="alice", now=now)
    assert [r.id for r in rows] == [file_row(n).id for n in (5, 3, 1)] and cursor is None


def test_files_expiry_queries(engine):
    repo = FileRepository(engine)
    for n in range(5):
        repo.add(file_row(n, expires_at=T0 + timedelta(hours=n), owner_id="alice"))
    repo.add(file_row(9, owner_id="alice"))  # never expires
    now = T0 + timedelta(hours=2)
    assert [r.id for r in repo.page(10, now=now)[0]] == [file_row(n).id for n in (9, 4, 3)]
    first = repo.expired(now, limit=2)
    assert [r.id for r in first] == [file_row(0).id, file_row(1).id]
    rest = repo.expired(now, limit=10, after=(first[-1].expires_at, first[-1].id))
    assert [r.id for r in rest] == [file_row(2).id]
    repo.set_expires_at([file_row(0).id, file_row(1).id], None)
    assert [r.id for r in repo.expired(now, limit=10)] == [file_row(2).id]
    assert repo.get(file_row(0).id).expires_at is None


def test_files_usage_each_delete(engine):
    repo = FileRepository(engine)
    future, past = datetime.now(UTC) + timedelta(days=1), datetime.now(UTC) - timedelta(seconds=1)
    repo.add(file_row(1, owner_id="alice", size=3 * 2**40))
    repo.add(file_row(2, owner_id="alice", size=2, expires_at=future))
    repo.add(file_row(3, owner_id="alice", size=100, expires_at=past))  # expired: does not count
    repo.add(file_row(4, owner_id="bob", size=7))
    assert repo.usage("alice") == (2, 3 * 2**40 + 2)
    assert repo.usage("nobody") == (0, 0)
    assert [r.id for r in repo.each(batch=2)] == [file_row(n).id for n in (1, 2, 3, 4)]
    assert repo.delete(file_row(1).id).size == 3 * 2**40
    assert repo.delete(file_row(1).id) is None
    assert repo.get(file_row(1).id) is None


def test_files_thumbnails(engine):
    repo = FileRepository(engine)
    for n in range(3):
        repo.add(file_row(n, thumbnail_status="pending"))
    assert repo.count_pending_thumbnails() == 3
    assert [r.id for r in repo.pending_thumbnails(limit=2)] == [file_row(0).id, file_row(1).id]
    assert repo.set_thumbnail(file_row(0).id, "t" * 32 + ".jpg", "done")
    assert repo.by_thumbnail("t" * 32 + ".jpg").id == file_row(0).id
    assert not repo.set_thumbnail("f" * 32, None, "failed")  # no such row
    assert repo.count_pending_thumbnails() == 2


def test_files_per_minute_and_totals(engine):
    """The dashboard's numbers: files and bytes per UTC minute, counted by the database."""
    repo = FileRepository(engine)
    minute = T0.replace(second=0, microsecond=0)
    stamps = [minute - timedelta(seconds=1),                   # the minute before: left out
              minute, minute + timedelta(seconds=59, microseconds=999999),
              minute + timedelta(minutes=2, seconds=30)]
    for n, stamp in enumerate(stamps):
        repo.add(file_row(n, size=10 ** n, uploaded_at=stamp))
    # An aware time in another zone means the same instant.
    since = minute.astimezone(timezone(timedelta(hours=-5)))
    assert repo.per_minute(since) == {minute: (2, 10 + 100), minute + timedelta(minutes=2): (1, 1000)}
    assert repo.per_minute(minute + timedelta(minutes=3)) == {}
    # Everyone's, and of them those uploaded from a time on (the dashboard recounts only these).
    assert repo.totals(since) == ((4, 1111), (3, 1110))
    assert repo.totals(minute + timedelta(minutes=3)) == ((4, 1111), (0, 0))
    assert repo.uploaded_since(since) == (3, 1110)


def test_accounts_users(engine):
    accounts = Accounts(engine)
    alice = accounts.create_user("Alice", "password1")
    assert alice.username == "alice"
    with pytest.raises(Conflict):
        accounts.create_user("ALICE")  # usernames are stored lowercased, so unique whatever the case
    assert accounts.user(alice.id) == alice and accounts.user_named("aLiCe") == alice
    assert accounts.authenticate("ALICE", "password1") == alice
    assert accounts.authenticate("alice", "wrong-password") is None and accounts.authenticate("nobody", "x") is None
    accounts.set_password(alice.id, "password2")
    assert accounts.authenticate("alice", "password2") == alice
    # The largest quotas the columns take (BigInteger, Integer).
    accounts.set_quota(alice.id, 2**63 - 1, 2**31 - 1)
    assert (accounts.user(alice.id).quota_bytes, accounts.user(alice.id).quota_files) == (2**63 - 1, 2**31 - 1)
    admin = accounts.ensure_admin()
    assert admin.admin and accounts.ensure_admin() == admin
    assert [u.username for u in accounts.list_users()] == ["admin", "alice"]
    assert accounts.delete_user(alice.id) and not accounts.delete_user(alice.id)
    assert accounts.user(alice.id) is None


def test_accounts_tokens_and_sessions(engine):
    accounts = Accounts(engine)
    alice, bob = accounts.create_user("alice"), accounts.create_user("bob")
    token, secret = accounts.create_token(alice.id, "laptop")
    other, _ = accounts.create_token(bob.id)
    assert accounts.user_for_token(secret) == alice
    used = accounts.list_tokens(alice.id)[0].last_used_at
    assert used is not None and abs(datetime.now(UTC) - used) < timedelta(minutes=1)
    assert {t.id for t in accounts.list_tokens()} == {token.id, other.id}
    assert accounts.user_for_token(secret + "x") is None
    assert not accounts.revoke_token(token.id, user_id=bob.id)
    assert accounts.revoke_token(token.id) and accounts.user_for_token(secret) is None

    session = accounts.create_session(alice.id, lifetime=60)
    expired = accounts.create_session(alice.id, lifetime=-1)
    assert accounts.user_for_session(session) == alice and accounts.user_for_session(expired) is None
    accounts.end_session(session)
    assert accounts.user_for_session(session) is None
    kept = accounts.create_session(bob.id, lifetime=60)
    accounts.delete_user(bob.id)  # takes its tokens and sessions along
    assert accounts.user_for_session(kept) is None and accounts.list_tokens(bob.id) == []


def test_accounts_token_cap_and_pages(engine):
    accounts = Accounts(engine)
    alice, bob = accounts.create_user("alice"), accounts.create_user("bob")
    made = [accounts.create_token(alice.id, f"t{n}", cap=4)[0].id for n in range(4)]
    with pytest.raises(Conflict):
        accounts.create_token(alice.id, cap=4)
    accounts.create_token(bob.id, cap=4)  # a cap per user
    accounts.create_token(alice.id)  # no cap (the operator's CLI)
    seen, cursor = [], None
    while True:
        page, cursor = accounts.page_tokens(alice.id, 2, cursor)
        seen += [t.id for t in page]
        if cursor is None:
            break
    assert seen[:4] == made and len(seen) == 5
    users, cursor = accounts.page_users(1)
    assert [u.username for u in users] == ["alice"] and accounts.page_users(5, cursor)[0][0].username == "bob"
    for bad in ("nonsense", "W10", "WzFd"):
        with pytest.raises(ValueError):
            accounts.page_tokens(alice.id, 2, bad)


def test_share_links(engine):
    from gateway.metadata.shares import ShareLinks

    files, links, accounts = FileRepository(engine), ShareLinks(engine), Accounts(engine)
    alice = accounts.create_user("alice")
    files.add(file_row(1, owner_id=alice.id))
    files.add(file_row(2, owner_id="bob"))
    soon, later = datetime.now(UTC) + timedelta(hours=1), T0 + timedelta(days=3650)
    made = [links.create(file_row(1).id, alice.id, alice.id, soon, per_file=3) for _ in range(3)]
    with pytest.raises(Conflict):
        links.create(file_row(1).id, alice.id, alice.id, soon, per_file=3)
    theirs = links.create(file_row(2).id, "bob", None, later)
    assert links.create("f" * 32, None, None, soon) is None  # no such file
    assert links.get(made[0].id) == made[0]  # aware UTC datetimes, microseconds and all
    assert [x.id for x in links.page(10, owner=alice.id)[0]] == [x.id for x in reversed(made)]
    first, cursor = links.page(2, file_id=file_row(1).id)
    assert [x.id for x in first + links.page(2, cursor, file_id=file_row(1).id)[0]] == [x.id for x in reversed(made)]
    assert not links.revoke(made[0].id, owner="bob") and links.revoke(made[0].id, owner=alice.id)
    assert not links.revoke(made[0].id)  # only live links are revoked
    assert links.get(made[0].id).revoked_at is not None
    assert made[0].id not in [x.id for x in links.page(10)[0]]
    links.create(file_row(1).id, alice.id, alice.id, soon, per_file=3)  # the revoked one made room

    assert links.purge(soon + timedelta(seconds=1)) == 4  # all but the ten-year one
    assert links.get(theirs.id) == theirs
    files.delete(file_row(2).id)
    assert links.get(theirs.id) is None
    links.create(file_row(1).id, alice.id, alice.id, soon)
    accounts.delete_user(alice.id)
    assert links.page(10)[0] == []


def test_accounts_secret_is_made_once(engine):
    accounts = Accounts(engine)
    first = accounts.secret("signing")
    assert accounts.secret("signing") == first and accounts.secret("other") != first


def tus_upload(n: int, **changes) -> TusUpload:
    values = dict(id=f"{n:032x}", filename=f"{n:032x}.bin", length=4 * 2**40, offset=0, metadata="filename eC5iaW4=",
                  original_name="x.bin", declared_type="application/octet-stream", expires_in=2**31 - 1, concat=None,
                  state="uploading", head_checked=False, file_id=None, error=None, created_at=T0,
                  expires_at=datetime.now(UTC) + timedelta(hours=1), owner_id="alice")
    return TusUpload(**{**values, **changes})


def test_tus_store(engine, tmp_path):
    store = TusStore(engine, LocalStorage(tmp_path / "data"), ttl=60)
    upload = tus_upload(1)
    store.add(upload)
    assert store.get(upload.id) == upload and store.path(upload).exists()
    assert store.get("f" * 32) is None
    upload.offset, upload.head_checked = 3 * 2**40, True
    store.save(upload, "offset", "head_checked")
    assert store.get(upload.id).offset == 3 * 2**40 and store.get(upload.id).head_checked is True
    store.add(tus_upload(2, concat="partial", length=None, offset=10))
    store.add(tus_upload(3, state="complete", owner_id="bob"))
    assert store.unfinished_filenames() == {tus_upload(1).filename, tus_upload(2).filename}
    # Partial uploads count bytes (what arrived, when deferred) but no file.
    assert store.reserved("alice") == (1, 4 * 2**40 + 10)
    assert store.reserved("alice", except_id=upload.id) == (0, 10)
    store.forget(tus_upload(2).id)
    assert store.get(tus_upload(2).id) is None


def test_tus_reap(engine, tmp_path):
    store = TusStore(engine, LocalStorage(tmp_path / "data"), ttl=60)
    past = datetime.now(UTC) - timedelta(seconds=1)
    store.add(tus_upload(1, expires_at=past))
    store.add(tus_upload(2, expires_at=past, state="complete"))
    store.add(tus_upload(3))
    assert {u.id for u in store.due()} == {tus_upload(1).id, tus_upload(2).id}
    assert store.reap() == 2
    reaped = store.get(tus_upload(1).id)
    assert reaped.state == "expired" and not store.path(reaped).exists()
    assert store.get(tus_upload(2).id) is None and store.get(tus_upload(3).id).state == "uploading"


# --- through the API: what PostgreSQL cannot hold is refused (or dropped) on both alike ---

ON_BOTH_BACKENDS = True  # the tests below make apps: once on each backend


def test_text_with_nul_is_refused_alike(make_app):
    from tests.accounts import ADMIN, TOKEN_SETTINGS

    client = make_app(**TOKEN_SETTINGS).test_client()
    response = client.post("/tokens", json={"name": "lap\x00top"}, headers=ADMIN)
    assert response.status_code == 400 and "NUL" in response.get_json()["error"]
    response = client.post("/users", json={"username": "a\x00b"}, headers=ADMIN)
    assert response.status_code == 400


def test_a_tus_filetype_with_control_characters_is_kept_without_them(make_app):
    import base64

    app = make_app()
    meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}"
                    for k, v in (("filename", "a.txt"), ("filetype", "text/pl\x00ain\n")))
    response = app.test_client().post("/tus/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "5",
                                                         "Upload-Metadata": meta})
    assert response.status_code == 201, response.get_json()
    upload = app.extensions["tus"].get(response.headers["Location"].rsplit("/", 1)[1])
    assert upload.declared_type == "text/plain"

"""The event outbox on SQLite and PostgreSQL: an event is committed with the
change it reports or not at all; one row per plugin; a claimed event is leased
to one gateway; failures wait, events past EVENT_GIVE_UP_AFTER are dead, and
`flask events` shows, retries and drops them."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from gateway.events.dispatch import Dispatcher
from gateway.hookspecs import FILE_DELETED, FILE_EXPIRED, FILE_STORED, Event
from gateway.metadata import migrate
from gateway.metadata.engine import create_engine
from gateway.metadata.files import FileRepository, FileRow, from_snapshot
from gateway.metadata.outbox import Outbox
from gateway.metadata.tables import event_outbox
from protos.plugins import hookimpl

ON_BOTH_BACKENDS = True


def a_file(n: int = 1) -> FileRow:
    return FileRow(id=f"{n:032x}", filename=f"{n:032x}.txt", original_name="a.txt", size=3, type="text/plain",
                   is_image=False, width=None, height=None, sha256="0" * 64, thumbnail=None, thumbnail_status="none",
                   uploaded_at=datetime(2030, 1, 2, 3, 4, 5, 6789, tzinfo=timezone.utc), expires_at=None,
                   verdict='{"accepted": true}', owner_id="b" * 32)


@pytest.fixture
def engine(empty_database):
    made = create_engine(empty_database)
    migrate.upgrade(made)
    yield made
    made.dispose()


def rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(m) for m in conn.execute(event_outbox.select().order_by(event_outbox.c.consumer)).mappings()]


class Boom(Exception):
    pass


def test_an_event_is_committed_with_its_change_or_not_at_all(engine, monkeypatch):
    outbox = Outbox(engine)
    outbox.subscribe({FILE_STORED: ["a", "b"], FILE_DELETED: ["a"], FILE_EXPIRED: []})
    woken = []
    outbox.on_added(woken.append)
    repo = FileRepository(engine, outbox)

    row = a_file()
    repo.add(row)
    written = rows(engine)
    assert [(r["consumer"], r["type"], r["state"], r["attempts"]) for r in written] == [
        ("a", FILE_STORED, "pending", 0), ("b", FILE_STORED, "pending", 0)]
    assert written[0]["event_id"] == written[1]["event_id"]  # one event, one id for every plugin
    restored = from_snapshot(written[0]["file"])
    assert restored == FileRow(**{**vars(row), "verdict": "{}"})  # all but the verdict
    assert woken == [FILE_STORED]  # after the commit

    with pytest.raises(sa.exc.IntegrityError):
        repo.add(row)  # the row fails: no event
    assert len(rows(engine)) == 2

    original = Outbox.add

    def add_then_crash(self, conn, *args):
        original(self, conn, *args)
        raise Boom()

    monkeypatch.setattr(Outbox, "add", add_then_crash)
    with pytest.raises(Boom):
        repo.add(a_file(2))  # the event fails: no row, no event
    assert repo.get(a_file(2).id) is None
    with pytest.raises(Boom):
        repo.delete(row.id)  # no delete without its event
    assert repo.get(row.id) == row
    assert len(rows(engine)) == 2 and woken == [FILE_STORED]
    monkeypatch.setattr(Outbox, "add", original)

    assert repo.delete(row.id) == row
    assert repo.delete(row.id) is None  # gone already: nothing more to report
    deleted = [r for r in rows(engine) if r["type"] == FILE_DELETED]
    assert [(r["consumer"], r["file_id"]) for r in deleted] == [("a", row.id)]
    repo.add(a_file(3))
    assert repo.delete(a_file(3).id, FILE_EXPIRED) is not None  # nobody takes file.expired: nothing written
    assert not [r for r in rows(engine) if r["type"] == FILE_EXPIRED]
    assert woken == [FILE_STORED, FILE_DELETED, FILE_STORED]


def test_expiry_set_after_the_fact_reaches_the_events_not_taken_yet(engine):
    outbox = Outbox(engine)
    outbox.subscribe({FILE_STORED: ["a", "b"]})
    repo = FileRepository(engine, outbox)
    repo.add(a_file())
    taken = outbox.due("a", datetime.now(timezone.utc), 10)[0]
    outbox.done(taken)  # "a" took it before the expiry came
    at = datetime(2031, 1, 1, tzinfo=timezone.utc)
    repo.set_expires_at([a_file().id], at)
    (left,) = rows(engine)
    assert left["consumer"] == "b" and from_snapshot(left["file"]).expires_at == at


def event_of(row) -> Event:
    return Event(id=row.event_id, type=row.type, created_at="", file={"id": row.file_id}, attempt=row.attempts)


def test_one_gateway_at_a_time_holds_an_event_and_a_failed_one_waits(engine):
    outbox = Outbox(engine)
    outbox.subscribe({FILE_STORED: ["hook"]})
    FileRepository(engine, outbox).add(a_file())
    now = datetime.now(timezone.utc)
    (row,) = outbox.due("hook", now, 10)
    (same,) = outbox.due("hook", now, 10)  # what a second gateway sees at the same moment
    assert outbox.claim(row, now, now + timedelta(seconds=60))
    assert not outbox.claim(same, now, now + timedelta(seconds=60))  # leased to the first
    assert outbox.due("hook", now + timedelta(seconds=59), 10) == []
    # The first died holding it: once its lease ends, another takes it, and it is its second attempt.
    (again,) = outbox.due("hook", now + timedelta(seconds=61), 10)
    assert outbox.claim(again, now + timedelta(seconds=61), now + timedelta(seconds=120))
    assert again.attempts == 2

    calls = []

    def refuse(event: Event) -> None:
        calls.append(event.attempt)
        raise RuntimeError("receiver says no")

    outbox.failed(again, "x", now)  # due again now
    dispatcher = Dispatcher(outbox, {"hook": refuse}, event_of, max_delay=600, give_up_after=3600, lease=60)
    assert dispatcher.deliver("hook") == 0
    assert calls == [3]
    (waiting,) = rows(engine)
    assert waiting["state"] == "pending" and waiting["attempts"] == 3 and "receiver says no" in waiting["last_error"]
    assert dispatcher.deliver("hook") == 0 and calls == [3]  # the plugin rests after a failure
    dispatcher.lanes["hook"].resting_until = 0
    assert dispatcher.deliver("hook") == 0 and calls == [3]  # and the event waits its own pause (4 s)


def test_events_past_the_give_up_time_are_dead_and_can_be_retried_or_dropped(engine):
    outbox = Outbox(engine)
    outbox.subscribe({FILE_STORED: ["hook", "gone"]})
    repo = FileRepository(engine, outbox)
    repo.add(a_file(1))
    repo.add(a_file(2))
    taken = []
    dispatcher = Dispatcher(outbox, {"hook": lambda event: taken.append(event.file["id"])}, event_of,
                            max_delay=1, give_up_after=3600, lease=60)
    assert dispatcher.sweep() == {}  # nothing that old
    # "gone" is a plugin no longer loaded: nobody takes its events; an hour later they are dead.
    with engine.begin() as conn:
        conn.execute(event_outbox.update().values(pending_since=datetime.now(timezone.utc) - timedelta(hours=2)))
    assert dispatcher.sweep() == {"hook": 2, "gone": 2}
    assert {(s.consumer, s.state, s.count) for s in outbox.stats()} == {("hook", "dead", 2), ("gone", "dead", 2)}
    assert dispatcher.deliver("hook") == 0

    assert outbox.retry_dead("hook") == 2
    assert dispatcher.deliver("hook") == 2 and sorted(taken) == [a_file(1).id, a_file(2).id]
    assert dispatcher.sweep() == {}  # the retry counted the give-up time afresh (then they were delivered)
    assert outbox.drop_dead() == 2
    assert rows(engine) == []


def test_a_failure_past_the_give_up_time_buries_the_event(engine):
    outbox = Outbox(engine)
    outbox.subscribe({FILE_DELETED: ["hook"]})
    repo = FileRepository(engine, outbox)
    repo.add(a_file())
    repo.delete(a_file().id)
    with engine.begin() as conn:
        conn.execute(event_outbox.update().values(pending_since=datetime.now(timezone.utc) - timedelta(seconds=11)))

    def refuse(event):
        raise RuntimeError("still down")

    dispatcher = Dispatcher(outbox, {"hook": refuse}, event_of, max_delay=1, give_up_after=10, lease=60)
    assert dispatcher.deliver("hook") == 0
    (dead,) = rows(engine)
    assert dead["state"] == "dead" and dead["attempts"] == 1 and "still down" in dead["last_error"]


class Refuses:
    __name__ = "tests.refuses"

    @hookimpl
    def upload_file_stored(self, record):
        raise RuntimeError("no thanks")


def test_flask_events_status_retry_and_drop(make_app):
    app = make_app(EXTRA_PLUGINS=[Refuses()], EVENT_GIVE_UP_AFTER=1.0)
    client = app.test_client()
    response = client.post("/upload", data={"file": (__import__("io").BytesIO(b"some text\n"), "a.txt")},
                           content_type="multipart/form-data")
    assert response.status_code == 201
    runner = app.test_cli_runner()
    status = runner.invoke(args=["events", "status"])
    assert status.exit_code == 0 and "tests.refuses\t1 pending" in status.output
    events = app.extensions["events"]
    events.deliver("tests.refuses")
    with app.extensions["outbox"].engine.begin() as conn:
        conn.execute(event_outbox.update().values(pending_since=datetime.now(timezone.utc) - timedelta(seconds=2)))
    events.sweep()
    status = runner.invoke(args=["events", "status"])
    assert "tests.refuses\t1 dead" in status.output and "last error: RuntimeError: no thanks" in status.output
    assert "1 event(s) will be offered again" in runner.invoke(args=["events", "retry"]).output
    assert "tests.refuses\t1 pending" in runner.invoke(args=["events", "status"]).output
    events.lanes["tests.refuses"].resting_until = 0
    events.deliver("tests.refuses")
    events.sweep()  # pending since the retry: not dead yet
    assert "tests.refuses\t1 pending" in runner.invoke(args=["events", "status"]).output
    with app.extensions["outbox"].engine.begin() as conn:
        conn.execute(event_outbox.update().values(state="dead"))
    assert "1 event(s) dropped" in runner.invoke(args=["events", "drop", "--plugin", "tests.refuses"]).output
    assert "tests.refuses\tnothing waiting" in runner.invoke(args=["events", "status"]).output

"""Delivering events from the outbox to the plugins that take them.

The gateway's plugins are loaded here (``init_app``): the built-ins, installed
packages (entry-point group ``upload_service``), UPLOAD_PLUGINS, and one
webhook per WEBHOOK_URLS entry. The outbox is told which of them implement
which hook, so each change writes one row per plugin that takes its event.

Each such plugin then has a thread of its own (``Dispatcher.start``, when the
gateway serves: a slow receiver holds up nobody else) that takes its due
events oldest first and calls its hook. Returning is delivered: the row goes.
Raising is a failure: the event is tried again after a pause that doubles
from 1 s up to EVENT_RETRY_MAX_DELAY (with jitter), and the plugin itself
rests for a pause that grows the same way with its failures in a row, so a
receiver that is down costs one attempt per pause, not one per event, and a
single event it keeps refusing does not hold up the others. After
EVENT_GIVE_UP_AFTER (0: never) a failed event is dead: kept, counted, logged,
and `flask events retry` brings it back.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pluggy

from gateway import metrics
from gateway.background import Periodic
from gateway.events.webhooks import Webhook, WebhookFailed
from gateway.hookspecs import HOOKS, Event
from gateway.http.records import iso, record
from gateway.metadata.files import from_snapshot
from gateway.metadata.outbox import Outbox, OutboxRow
from protos.plugins import PluginLoadError, create_plugin_manager

log = logging.getLogger("upload.events")

# The gateway's built-in plugins, by module name, called in this order (as the services'
# DEFAULT_PLUGINS). None today: the shipped webhooks are objects, one per WEBHOOK_URLS entry.
DEFAULT_PLUGINS: tuple[str, ...] = ()

# A plugin with nothing due looks again this often (events written by another process,
# `flask reconcile` or a second gateway); one written here wakes it at once.
POLL_INTERVAL = 1.0
# Events taken per query.
BATCH = 50
# The first pause after a failure; it doubles with each one, up to EVENT_RETRY_MAX_DELAY.
FIRST_DELAY = 1.0
# How often events past EVENT_GIVE_UP_AFTER are looked for.
SWEEP_INTERVAL = 60.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def backoff(failures: int, cap: float) -> float:
    """Seconds to wait after ``failures`` failures in a row: 1, 2, 4... up to ``cap``,
    each less up to a fifth at random, so that gateways do not retry in step."""
    return min(cap, FIRST_DELAY * 2 ** min(failures - 1, 30)) * random.uniform(0.8, 1.0)


@dataclass
class _Lane:
    """One plugin's delivery: its thread, its failures in a row, its rest."""

    name: str
    call: Callable[[Event], None]
    wake: threading.Event = field(default_factory=threading.Event)
    failures: int = 0
    resting_until: float = 0.0  # time.monotonic()
    thread: threading.Thread | None = None


class Dispatcher:
    def __init__(self, outbox: Outbox, consumers: Mapping[str, Callable[[Event], None]],
                 describe: Callable[[OutboxRow], Event], *, max_delay: float, give_up_after: float, lease: float):
        self.outbox = outbox
        self.describe = describe
        self.max_delay = max_delay
        self.give_up_after = give_up_after
        # How long an attempt holds its event: another gateway may try it only after that.
        self.lease = lease
        self.lanes = {name: _Lane(name, call) for name, call in consumers.items()}
        self._stopped = threading.Event()
        self._sweeper = Periodic("event-sweeper", SWEEP_INTERVAL if give_up_after > 0 else 0, self.sweep)
        outbox.on_added(self._added)

    def _added(self, kind: str) -> None:
        metrics.EVENTS.labels(type=kind).inc()
        for name in self.outbox.subscribers(kind):
            lane = self.lanes.get(name)
            if lane is not None:
                lane.wake.set()

    def start(self) -> "Dispatcher":
        for lane in self.lanes.values():
            if lane.thread is None:
                lane.thread = threading.Thread(target=self._run, args=(lane,), name=f"events {lane.name}",
                                               daemon=True)
                lane.thread.start()
        self._sweeper.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        self._sweeper.stop()
        for lane in self.lanes.values():
            lane.wake.set()
        for lane in self.lanes.values():
            if lane.thread is not None:
                lane.thread.join(timeout)

    def _run(self, lane: _Lane) -> None:
        while not self._stopped.is_set():
            try:
                self.deliver(lane.name)
            except Exception:  # the database, most likely: rest, then look again
                log.exception("delivering events to %s failed; trying again", lane.name)
                self._rest(lane)
            wait = max(POLL_INTERVAL, lane.resting_until - time.monotonic())
            lane.wake.wait(wait)
            lane.wake.clear()

    def _rest(self, lane: _Lane) -> None:
        lane.failures += 1
        lane.resting_until = time.monotonic() + backoff(lane.failures, self.max_delay)

    def deliver(self, name: str) -> int:
        """Hand plugin ``name`` its due events, oldest first, until none is due,
        it fails one (then it rests), or the dispatcher stops; how many it took."""
        lane = self.lanes[name]
        delivered = 0
        while not self._stopped.is_set() and time.monotonic() >= lane.resting_until:
            rows = self.outbox.due(name, utcnow(), BATCH)
            for row in rows:
                if self._stopped.is_set():
                    return delivered
                at = utcnow()
                if not self.outbox.claim(row, at, at + timedelta(seconds=self.lease)):
                    continue  # another gateway has it
                try:
                    lane.call(self.describe(row))
                except Exception as error:  # noqa: BLE001 - a plugin's failure is the event's, never ours
                    self._failed(lane, row, error)
                    return delivered
                self.outbox.done(row)
                metrics.EVENT_DELIVERIES.labels(consumer=name, outcome="delivered").inc()
                lane.failures = 0
                delivered += 1
            if len(rows) < BATCH:
                break
        return delivered

    def _failed(self, lane: _Lane, row: OutboxRow, error: Exception) -> None:
        self._rest(lane)
        text = str(error) if isinstance(error, WebhookFailed) else f"{type(error).__name__}: {error}"
        at = utcnow()
        if self.give_up_after and at - row.pending_since >= timedelta(seconds=self.give_up_after):
            self.outbox.bury(row, text)
            metrics.EVENT_DELIVERIES.labels(consumer=lane.name, outcome="dead").inc()
            log.error("event %s (%s of file %s) given up for %s after %d attempts: %s",
                      row.event_id, row.type, row.file_id, lane.name, row.attempts, text)
            return
        retry_in = backoff(row.attempts, self.max_delay)
        self.outbox.failed(row, text, at + timedelta(seconds=retry_in))
        metrics.EVENT_DELIVERIES.labels(consumer=lane.name, outcome="failed").inc()
        log.warning("event %s (%s) not delivered to %s (attempt %d), trying again in %.0fs: %s",
                    row.event_id, row.type, lane.name, row.attempts, retry_in, text,
                    exc_info=None if isinstance(error, WebhookFailed) else error)

    def sweep(self) -> dict[str, int]:
        """Events pending for longer than EVENT_GIVE_UP_AFTER (a plugin no longer
        loaded, one resting for days) are dead."""
        if not self.give_up_after:
            return {}
        buried = self.outbox.give_up(utcnow() - timedelta(seconds=self.give_up_after))
        for name, count in buried.items():
            metrics.EVENT_DELIVERIES.labels(consumer=name, outcome="dead").inc(count)
            log.error("%d event(s) for %s given up: pending for more than EVENT_GIVE_UP_AFTER (%.0fs)",
                      count, name, self.give_up_after)
        return buried


def _callers(pm) -> tuple[dict[str, tuple[str, ...]], dict[str, Callable[[Event], None]]]:
    """Which plugins take which event types, and for each plugin a function that
    hands it an event (calling its implementation of that event's hook)."""
    impls: dict[tuple[str, str], object] = {}
    subscribers: dict[str, tuple[str, ...]] = {}
    for kind, hook_name in HOOKS.items():
        found = getattr(pm.hook, hook_name).get_hookimpls()
        subscribers[kind] = tuple(impl.plugin_name for impl in found)
        impls.update({(impl.plugin_name, kind): impl for impl in found})

    def caller(name: str) -> Callable[[Event], None]:
        def call(event: Event) -> None:
            impl = impls.get((name, event.type))
            if impl is None:
                log.info("%s no longer takes %s events: event %s dropped", name, event.type, event.id)
                return
            arguments = {"record": event.file, "event": event}
            impl.function(**{argument: arguments[argument] for argument in impl.argnames})
        return call

    names = dict.fromkeys(name for names in subscribers.values() for name in names)
    return subscribers, {name: caller(name) for name in names}


def plugin_manager(config) -> pluggy.PluginManager:
    """The gateway's plugins (UPLOAD_PLUGINS, entry points, the webhooks); one that cannot be
    loaded stops the gateway with its sentence. ``python -m gateway`` calls this once before
    gunicorn forks: raised in a worker, it would be restarted for ever, never serving."""
    webhooks = [Webhook(url, config["WEBHOOK_SECRET"], config["WEBHOOK_TIMEOUT"]) for url in config["WEBHOOK_URLS"]]
    try:
        # EXTRA_PLUGINS: plugin objects handed to create_app (tests, embedding); not a setting.
        env = {**config.get("PLUGIN_SETTINGS", {}),
               **{key: config.get(key, "") for key in ("UPLOAD_PLUGINS", "UPLOAD_PLUGINS_DISABLED")}}
        return create_plugin_manager(DEFAULT_PLUGINS, env=env,
                                     extra_plugins=[*webhooks, *config.get("EXTRA_PLUGINS", ())])
    except PluginLoadError as error:
        raise SystemExit(str(error)) from error


def init_app(app) -> None:
    config = app.config
    pm = plugin_manager(config)
    app.extensions["plugins"] = pm
    subscribers, consumers = _callers(pm)
    outbox: Outbox = app.extensions["outbox"]
    outbox.subscribe(subscribers)

    def describe(row: OutboxRow) -> Event:
        # URLs as url_for gives them in a request (relative, under APPLICATION_ROOT), without one.
        urls = app.url_map.bind("localhost", script_name=config.get("APPLICATION_ROOT") or "/")
        file = record(from_snapshot(row.file), url=lambda endpoint, **values: urls.build(endpoint, values))
        return Event(id=row.event_id, type=row.type, created_at=iso(row.created_at), file=file,
                     attempt=row.attempts)

    app.extensions["events"] = Dispatcher(
        outbox, consumers, describe, max_delay=config["EVENT_RETRY_MAX_DELAY"],
        give_up_after=config["EVENT_GIVE_UP_AFTER"], lease=2 * config["WEBHOOK_TIMEOUT"] + 30)


def start(app) -> Dispatcher:
    """When the gateway serves (as reconcile): a thread per plugin that takes events."""
    return app.extensions["events"].start()

"""Rate-limit counters in a SQLite file, shared by the gateway's worker processes.

``limits`` (under Flask-Limiter) keeps counters in memory, one set per process,
or in a server (redis, memcached, MongoDB). Several gunicorn workers on one
machine (GATEWAY_WORKERS) would each count on their own with ``memory://``,
and the limits would be that many times the setting; running a redis for them
would be a new service to install. So their default is this file in DATA_DIR:
``upload-sqlite:///path/to/file``, a ``limits`` storage like any other
(registered by the scheme), written only by uploads, sign-ins and minting when
AUTH=token. Several gateways on several machines still need a shared server
(``RATE_LIMIT_STORAGE=redis://...``).

Both of ``limits``' window kinds are kept: the moving window (the gateway's
strategy) as one row per hit, the fixed window as one counter row per key.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from urllib.parse import urlsplit

from limits.storage import MovingWindowSupport, Storage

SCHEME = "upload-sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (key TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS hits_by_key ON hits (key, at);
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL);
"""


def uri(path: str) -> str:
    return f"{SCHEME}://{path}"


class SQLiteStorage(Storage, MovingWindowSupport):
    STORAGE_SCHEME = [SCHEME]

    def __init__(self, uri: str, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.path = urlsplit(uri).path
        if not self.path:
            raise ValueError(f"{SCHEME} needs a file: {SCHEME}:///path/to/rate-limits.sqlite")
        self._local = threading.local()
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._conn().executescript(SCHEMA)

    @property
    def base_exceptions(self):
        return sqlite3.Error

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3's may not cross threads), reading outside a transaction."""
        db = getattr(self._local, "db", None)
        if db is None:
            # Workers wait for each other's short write transactions rather than fail.
            db = self._local.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            # Switching a new file to WAL ignores the busy timeout: workers starting together
            # can find it locked for a moment.
            for attempt in range(50):
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 49:
                        raise
                    time.sleep(0.05)
            db.execute("PRAGMA synchronous=OFF")  # counters: a crash may forget the last hits, no more
        return db

    def _db(self) -> "_Transaction":
        """``with self._db() as db``: a write transaction on this thread's connection."""
        return _Transaction(self._conn())

    # --- moving window: a row per hit ---

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        with self._db() as db:
            db.execute("DELETE FROM hits WHERE key = ? AND at < ?", (key, now - expiry))
            (count,) = db.execute("SELECT count(*) FROM hits WHERE key = ?", (key,)).fetchone()
            if count + amount > limit:
                return False
            db.executemany("INSERT INTO hits (key, at) VALUES (?, ?)", [(key, now)] * amount)
            return True

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = time.time()
        with self._db() as db:
            oldest, count = db.execute("SELECT min(at), count(*) FROM hits WHERE key = ? AND at >= ?",
                                       (key, now - expiry)).fetchone()
        return (oldest, count) if count else (now, 0)

    # --- fixed window: a counter per key ---

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self._db() as db:
            db.execute("DELETE FROM counters WHERE key = ? AND expires <= ?", (key, now))
            db.execute("INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value", (key, amount, now + expiry))
            return db.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()[0]

    def get(self, key: str) -> int:
        row = self._conn().execute("SELECT value FROM counters WHERE key = ? AND expires > ?",
                                    (key, time.time())).fetchone()
        return row[0] if row else 0

    def get_expiry(self, key: str) -> float:
        row = self._conn().execute("SELECT expires FROM counters WHERE key = ?", (key,)).fetchone()
        return row[0] if row else time.time()

    def check(self) -> bool:
        try:
            self._conn().execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False

    def reset(self) -> int | None:
        with self._db() as db:
            hits = db.execute("DELETE FROM hits").rowcount
            return hits + db.execute("DELETE FROM counters").rowcount

    def clear(self, key: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM hits WHERE key = ?", (key,))
            db.execute("DELETE FROM counters WHERE key = ?", (key,))


class _Transaction:
    """BEGIN IMMEDIATE (the write lock first, so two workers cannot both count
    the same hits), then COMMIT, or ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, *_):
        self.db.execute("ROLLBACK" if kind else "COMMIT")
        return False

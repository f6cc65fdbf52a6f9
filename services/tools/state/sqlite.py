"""The tools service's default store: kv values and idempotency records in one SQLite file (WAL).

A restart of the tools service loses nothing: a write and the record of its idempotency key
commit together, so a retry that arrives after a restart is answered from the record, never
applied twice. Each tool call is one `BEGIN IMMEDIATE` transaction, taken only when the call
first touches kv (a search never opens one); several processes may share one file (SQLite
locks it), though a shared store for replicas on several hosts is Redis (state/redis_store.py).

    store = SqliteStore("/var/lib/inloop-tools/kv.sqlite3")
    store.run("task-17", lambda sess: kv(sess, "increment", "visits"))

Tables: sessions (name, last use, kv bytes), kv (session, key, value as JSON, version,
written), idempotency (session, key, fingerprint, result as JSON, written), meta (counters).
The bounds are those of the memory store (base.Limits), kept inside the same transaction.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from inloop.services.tools.state.base import (DEFAULT_CORPUS, DEFAULT_SESSION, NO_LOCK, KvEntry, Limits,
                                              StateUnavailable, StoreBase, T, entry_size, key_reused)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (name TEXT PRIMARY KEY, used INTEGER NOT NULL, bytes INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_used ON sessions (used);
CREATE TABLE IF NOT EXISTS kv (session TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                               version INTEGER NOT NULL, written INTEGER NOT NULL, PRIMARY KEY (session, key));
CREATE INDEX IF NOT EXISTS kv_written ON kv (session, written);
CREATE TABLE IF NOT EXISTS idempotency (session TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
                                        result TEXT NOT NULL, written INTEGER NOT NULL,
                                        PRIMARY KEY (session, key));
CREATE INDEX IF NOT EXISTS idempotency_written ON idempotency (session, written);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
BUSY_TIMEOUT_S = 5.0  # another process holding the write lock: wait this long, then fail the call


class SqliteView:
    """One call's view of its session; the transaction begins on the first kv access."""

    lock = NO_LOCK

    def __init__(self, store: "SqliteStore", name: str):
        self.store, self.name = store, name
        self.began = False

    @property
    def corpus(self):
        return self.store.corpus

    def _db(self) -> sqlite3.Connection:
        if not self.began:
            self.store.begin(self.name)
            self.began = True
        return self.store.conn

    def kv_get(self, key: str) -> KvEntry:
        row = self._db().execute("SELECT value, version FROM kv WHERE session = ? AND key = ?",
                                 (self.name, key)).fetchone()
        return KvEntry(json.loads(row[0]), row[1]) if row else KvEntry(None, 0)

    def kv_set(self, key: str, value: Any) -> KvEntry:
        db = self._db()
        old = self.kv_get(key)
        delta = entry_size(key, value) - (entry_size(key, old.value) if old.version else 0)
        if not old.version:
            count = db.execute("SELECT COUNT(*) FROM kv WHERE session = ?", (self.name,)).fetchone()[0]
            if count >= self.store.limits.max_keys:  # the least recently written key goes
                gone = db.execute("SELECT key, value FROM kv WHERE session = ? ORDER BY written LIMIT 1",
                                  (self.name,)).fetchone()
                db.execute("DELETE FROM kv WHERE session = ? AND key = ?", (self.name, gone[0]))
                delta -= entry_size(gone[0], json.loads(gone[1]))
        entry = KvEntry(value, old.version + 1)
        db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?, ?)",
                   (self.name, key, json.dumps(value), entry.version, time.time_ns()))
        db.execute("UPDATE sessions SET bytes = bytes + ? WHERE name = ?", (delta, self.name))
        return entry

    def replay(self, key: str, fingerprint: str) -> dict | None:
        row = self._db().execute("SELECT fingerprint, result FROM idempotency WHERE session = ? AND key = ?",
                                 (self.name, key)).fetchone()
        if row is None:
            return None
        if row[0] != fingerprint:
            raise key_reused(key, self.name)
        return json.loads(row[1])

    def remember(self, key: str, fingerprint: str, result: dict) -> None:
        db = self._db()
        db.execute("INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?)",
                   (self.name, key, fingerprint, json.dumps(result), time.time_ns()))
        excess = db.execute("SELECT COUNT(*) FROM idempotency WHERE session = ?",
                            (self.name,)).fetchone()[0] - self.store.limits.max_idempotency
        if excess > 0:
            db.execute("DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency WHERE session = ? "
                       "ORDER BY written LIMIT ?)", (self.name, excess))


class SqliteStore(StoreBase):
    """kv state in a SQLite file in WAL mode; one connection, one transaction at a time."""

    kind = "sqlite"

    def __init__(self, path: Path | str, corpus_path: Path | str = DEFAULT_CORPUS, limits: Limits = Limits()):
        super().__init__(corpus_path, limits)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode (isolation_level=None): we say BEGIN and COMMIT ourselves.
        self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                    check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL: a commit survives the process dying (kill -9); only an OS crash or power
        # loss may lose the last commits. FULL would fsync every write.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self._lock = threading.Lock()  # tool threads share the one connection, one transaction at a time

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def begin(self, session: str) -> None:
        """Start the call's write transaction and mark its session used (created if new)."""
        self._lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("INSERT INTO sessions VALUES (?, ?, 0) ON CONFLICT (name) DO UPDATE SET used = "
                              "excluded.used", (session, time.time_ns()))
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._lock.release()
            raise

    def run(self, session: str, work: Callable[[SqliteView], T]) -> T:
        view = SqliteView(self, session or DEFAULT_SESSION)
        try:
            result = work(view)
            if view.began:
                self._trim(view.name)
                self.conn.execute("COMMIT")
            return result
        except sqlite3.OperationalError as exc:  # locked past the busy timeout, disk full, ...
            raise StateUnavailable(f"kv state in {self.path}: {exc}") from exc
        finally:
            if view.began:
                if self.conn.in_transaction:  # the work raised: nothing it wrote stays
                    self.conn.execute("ROLLBACK")
                self._lock.release()

    def _trim(self, keep: str) -> None:
        """Evict least recently used sessions (never `keep`) beyond max_sessions or max_bytes."""
        db = self.conn
        while True:
            count, total = db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM sessions").fetchone()
            if count <= 1 or (count <= self.limits.max_sessions and total <= self.limits.max_bytes):
                return
            oldest = db.execute("SELECT name FROM sessions WHERE name != ? ORDER BY used LIMIT 1",
                                (keep,)).fetchone()[0]
            self._delete(oldest)
            db.execute("INSERT INTO meta VALUES ('evicted_sessions', 1) ON CONFLICT (name) DO UPDATE SET "
                       "value = value + 1")

    def _delete(self, name: str) -> bool:
        gone = self.conn.execute("DELETE FROM sessions WHERE name = ?", (name,)).rowcount
        self.conn.execute("DELETE FROM kv WHERE session = ?", (name,))
        self.conn.execute("DELETE FROM idempotency WHERE session = ?", (name,))
        return gone > 0

    def drop_session(self, name: str) -> bool:
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                gone = self._delete(name or DEFAULT_SESSION)
                self.conn.execute("COMMIT")
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            return gone

    def _read(self, sql: str) -> Any:
        with self._lock:
            return self.conn.execute(sql).fetchone()[0]

    @property
    def used_bytes(self) -> int:
        return self._read("SELECT COALESCE(SUM(bytes), 0) FROM sessions")

    @property
    def evicted_sessions(self) -> int:
        return self._read("SELECT COALESCE(MAX(value), 0) FROM meta WHERE name = 'evicted_sessions'")

    def stats(self) -> dict:
        return {"sessions": self._read("SELECT COUNT(*) FROM sessions"), "evicted_sessions": self.evicted_sessions,
                "kv_bytes": self.used_bytes, "corpus_docs": self.corpus_docs()}

    def close(self) -> None:
        with self._lock:
            self.conn.close()

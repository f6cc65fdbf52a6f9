"""The in-process store: kv namespaces and idempotency logs in this process's memory.

Tool functions are pure functions over this state, so the internal route (the runtime
calling tools in-process) and the external route (the tools service) share the code and
differ only in transport. The runtime's internal route keeps its tool state here; the tools
service keeps it in SQLite or Redis (state/sqlite.py, state/redis_store.py) unless told
`--state-db :memory:`.

    state = ToolState()                    # corpus read lazily on the first search
    sess = state.session("task-17")        # one namespace per task (created on first use)
    kv(sess, "increment", "visits")        # tools take the session view

Everything is bounded, so a long load run cannot grow memory forever: at most
`max_sessions` namespaces (the least recently used one is evicted whole), at most
`max_keys` kv entries and `max_idempotency` remembered writes per namespace (oldest
first out). An evicted idempotency entry means a retry arriving after that many newer
writes in the same namespace would apply again; the caps are far above what one task does.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from inloop.services.tools.state.base import (DEFAULT_CORPUS, DEFAULT_SESSION, KvEntry, Limits, StoreBase,
                                              StoredResult, T, entry_size, key_reused)

if TYPE_CHECKING:
    from inloop.services.tools.functions.search import Bm25Index


class Session:
    """One state namespace: its kv entries and its idempotency log (guarded by `lock`)."""

    def __init__(self, name: str, owner: "ToolState"):
        self.name = name
        self.owner = owner
        self.lock = owner.lock  # one lock for the whole state: tools are microseconds long
        self.kv: OrderedDict[str, KvEntry] = OrderedDict()
        self.idempotency: OrderedDict[str, StoredResult] = OrderedDict()

    @property
    def corpus(self) -> "Bm25Index":
        return self.owner.corpus

    # ---- kv (callers hold self.lock) ---------------------------------------------
    def kv_get(self, key: str) -> KvEntry:
        return self.kv.get(key) or KvEntry(None, 0)

    def kv_set(self, key: str, value: Any) -> KvEntry:
        old = self.kv.pop(key, None)
        if old is not None:
            self.owner.used_bytes -= entry_size(key, old.value)
        if old is None and len(self.kv) >= self.owner.max_keys:
            gone_key, gone = self.kv.popitem(last=False)  # the least recently written key goes
            self.owner.used_bytes -= entry_size(gone_key, gone.value)
        entry = KvEntry(value, (old.version if old else 0) + 1)
        self.kv[key] = entry
        self.owner.used_bytes += entry_size(key, value)
        self.owner.trim(keep=self.name)
        return entry

    def size(self) -> int:
        return sum(entry_size(k, e.value) for k, e in self.kv.items())

    # ---- idempotency (callers hold self.lock) ------------------------------------
    def replay(self, key: str, fingerprint: str) -> dict | None:
        """The stored result of an earlier call with this key, or None if there was none."""
        stored = self.idempotency.get(key)
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            raise key_reused(key, self.name)
        return stored.result

    def remember(self, key: str, fingerprint: str, result: dict) -> None:
        self.idempotency[key] = StoredResult(fingerprint, result)
        while len(self.idempotency) > self.owner.max_idempotency:
            self.idempotency.popitem(last=False)


class ToolState(StoreBase):
    """All state of one process, in memory. Thread-safe: every access goes through `lock`."""

    kind = "memory"

    def __init__(self, corpus_path: Path | str = DEFAULT_CORPUS, *, max_sessions: int = 1024,
                 max_keys: int = 1024, max_idempotency: int = 4096, max_bytes: int = 64 << 20):
        super().__init__(corpus_path, Limits(max_sessions, max_keys, max_idempotency, max_bytes))
        self.used_bytes = 0  # kv keys and values over all sessions
        # Re-entrant: a tool holding the lock may look up its session or the corpus.
        self.lock = threading.RLock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self.evicted_sessions = 0

    def run(self, session: str, work: Callable[["Session"], T]) -> T:
        """One tool call's work on its session, under the one lock (tools take microseconds)."""
        with self.lock:
            return work(self.session(session))

    def session(self, name: str = "") -> Session:
        """The namespace `name` ("" = the default one), created on first use, marked recent."""
        name = name or DEFAULT_SESSION
        with self.lock:
            sess = self._sessions.get(name)
            if sess is None:
                sess = Session(name, self)
                self._sessions[name] = sess
                while len(self._sessions) > self.max_sessions:
                    self._evict_oldest()
            else:
                self._sessions.move_to_end(name)
            return sess

    def drop_session(self, name: str) -> bool:
        """Forget a namespace (e.g. when its task ends); True if it existed."""
        with self.lock:
            sess = self._sessions.pop(name or DEFAULT_SESSION, None)
            if sess is not None:
                self.used_bytes -= sess.size()
            return sess is not None

    def trim(self, keep: str) -> None:
        """Evict least recently used namespaces (never `keep`) until the kv bytes fit max_bytes."""
        with self.lock:
            while self.used_bytes > self.max_bytes and len(self._sessions) > 1:
                if next(iter(self._sessions)) == keep:
                    self._sessions.move_to_end(keep)
                self._evict_oldest()

    def _evict_oldest(self) -> None:
        _, sess = self._sessions.popitem(last=False)
        self.used_bytes -= sess.size()
        self.evicted_sessions += 1

    def stats(self) -> dict:
        with self.lock:
            return {"sessions": len(self._sessions), "evicted_sessions": self.evicted_sessions,
                    "kv_bytes": self.used_bytes,
                    "corpus_docs": self.corpus_docs()}

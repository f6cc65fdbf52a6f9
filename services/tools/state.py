"""The tools' explicit state: kv namespaces, idempotency logs and the search index.

Tool functions are pure functions over this state, so the internal route (the runtime
calling tools in-process) and the external route (the tools service) share the code and
differ only in transport. One `ToolState` lives per process.

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

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inloop.services.contract.errors import ToolArgumentError

if TYPE_CHECKING:
    from inloop.services.tools.functions.search import Bm25Index

DEFAULT_CORPUS = Path(__file__).resolve().parent / "data" / "corpus.jsonl"
DEFAULT_SESSION = "default"


@dataclass
class KvEntry:
    value: Any
    version: int  # 1 on the first write, +1 on each later write; 0 means "never written"


@dataclass(frozen=True)
class StoredResult:
    fingerprint: str  # what the first call with this key asked for
    result: dict


def call_fingerprint(name: str, args: dict) -> str:
    """A stable digest of a call, so one idempotency key cannot be reused for another call."""
    canonical = json.dumps([name, args], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


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
            self.owner.used_bytes -= _size(key, old.value)
        if old is None and len(self.kv) >= self.owner.max_keys:
            gone_key, gone = self.kv.popitem(last=False)  # the least recently written key goes
            self.owner.used_bytes -= _size(gone_key, gone.value)
        entry = KvEntry(value, (old.version if old else 0) + 1)
        self.kv[key] = entry
        self.owner.used_bytes += _size(key, value)
        self.owner.trim(keep=self.name)
        return entry

    def size(self) -> int:
        return sum(_size(k, e.value) for k, e in self.kv.items())

    # ---- idempotency (callers hold self.lock) ------------------------------------
    def replay(self, key: str, fingerprint: str) -> dict | None:
        """The stored result of an earlier call with this key, or None if there was none."""
        stored = self.idempotency.get(key)
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            raise ToolArgumentError(
                f"idempotency key {key!r} was already used for a different call in session "
                f"{self.name!r}; use a new key for a new write")
        return stored.result

    def remember(self, key: str, fingerprint: str, result: dict) -> None:
        self.idempotency[key] = StoredResult(fingerprint, result)
        while len(self.idempotency) > self.owner.max_idempotency:
            self.idempotency.popitem(last=False)


def _size(key: str, value: Any) -> int:
    """What a kv entry costs, roughly: its key and value as text."""
    return len(key) + len(str(value))


class ToolState:
    """All state of one tools process. Thread-safe: every access goes through `lock`."""

    def __init__(self, corpus_path: Path | str = DEFAULT_CORPUS, *, max_sessions: int = 1024,
                 max_keys: int = 1024, max_idempotency: int = 4096, max_bytes: int = 64 << 20):
        if min(max_sessions, max_keys, max_idempotency, max_bytes) < 1:
            raise ValueError("max_sessions, max_keys, max_idempotency and max_bytes must be >= 1")
        self.max_bytes = max_bytes  # kv keys and values over all sessions; LRU sessions go beyond it
        self.used_bytes = 0
        self.corpus_path = Path(corpus_path)
        self.max_sessions = max_sessions
        self.max_keys = max_keys
        self.max_idempotency = max_idempotency
        # Re-entrant: a tool holding the lock may look up its session or the corpus.
        self.lock = threading.RLock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._corpus: Bm25Index | None = None
        self.evicted_sessions = 0

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

    @property
    def corpus(self) -> "Bm25Index":
        """The search index, built from corpus_path on first use (or by load_corpus())."""
        # Imported here: the index is built only when a search (or a server's start) needs it.
        from inloop.services.tools.functions.search import Bm25Index, load_corpus

        with self.lock:
            if self._corpus is None:
                self._corpus = Bm25Index(load_corpus(self.corpus_path))
            return self._corpus

    def load_corpus(self) -> int:
        """Build the index now (a server does this at start, to fail before serving)."""
        return len(self.corpus.docs)

    def stats(self) -> dict:
        with self.lock:
            return {"sessions": len(self._sessions), "evicted_sessions": self.evicted_sessions,
                    "kv_bytes": self.used_bytes,
                    "corpus_docs": len(self._corpus.docs) if self._corpus else None}

"""What every tool-state store shares: the entry types, the bounds, the search index and the
one way a tool call touches state (`run`).

A store runs each tool call as one unit of work over a session view:

    outcome = store.run("task-17", lambda sess: kv(sess, "increment", "visits"))

The view (`SessionView`) offers `kv_get`, `kv_set`, `replay` and `remember`; whatever the
work reads and writes through it is applied atomically or not at all (memory: one lock;
SQLite: one IMMEDIATE transaction; Redis: WATCH/MULTI, the work re-run on a conflict). So
a keyed write is checked, run and recorded as one step on every store, across replicas too.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from inloop.services.contract.errors import ToolArgumentError

if TYPE_CHECKING:
    from inloop.services.tools.functions.search import Bm25Index

DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus.jsonl"
DEFAULT_SESSION = "default"
T = TypeVar("T")


class StateUnavailable(RuntimeError):
    """The store could not be read or written (Redis unreachable, the SQLite file locked past
    its busy timeout, replicas conflicting without end); the call changed nothing."""


@dataclass
class KvEntry:
    value: Any
    version: int  # 1 on the first write, +1 on each later write; 0 means "never written"


@dataclass(frozen=True)
class StoredResult:
    fingerprint: str  # what the first call with this key asked for
    result: dict


@dataclass(frozen=True)
class Limits:
    """The bounds every store keeps, so a long load run cannot grow state forever."""

    max_sessions: int = 1024        # namespaces; the least recently used goes first
    max_keys: int = 1024            # kv entries per namespace; the least recently written goes first
    max_idempotency: int = 4096     # remembered writes per namespace; the oldest goes first
    max_bytes: int = 64 << 20       # kv keys and values over all namespaces; LRU namespaces go beyond it

    def __post_init__(self):
        if min(self.max_sessions, self.max_keys, self.max_idempotency, self.max_bytes) < 1:
            raise ValueError("max_sessions, max_keys, max_idempotency and max_bytes must be >= 1")


def call_fingerprint(name: str, args: dict) -> str:
    """A stable digest of a call, so one idempotency key cannot be reused for another call."""
    canonical = json.dumps([name, args], sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def entry_size(key: str, value: Any) -> int:
    """What a kv entry costs, roughly: its key and value as text."""
    return len(key) + len(str(value))


def key_reused(key: str, session: str) -> ToolArgumentError:
    return ToolArgumentError(
        f"idempotency key {key!r} was already used for a different call in session "
        f"{session!r}; use a new key for a new write")


class SessionView(Protocol):
    """What a tool sees of its session (the kv tool reads and writes through it)."""

    name: str
    lock: Any  # a context manager: the kv tool's read-modify-write runs inside it

    @property
    def corpus(self) -> "Bm25Index": ...
    def kv_get(self, key: str) -> KvEntry: ...
    def kv_set(self, key: str, value: Any) -> KvEntry: ...
    def replay(self, key: str, fingerprint: str) -> dict | None: ...
    def remember(self, key: str, fingerprint: str, result: dict) -> None: ...


NO_LOCK = contextlib.nullcontext()  # a durable view's unit of work is already atomic


class StoreBase:
    """The search index and the bounds; subclasses keep the kv entries and idempotency logs
    and give `used_bytes` (the kv bytes over all sessions) and `stats()`."""

    kind = "base"

    def __init__(self, corpus_path: Path | str = DEFAULT_CORPUS, limits: Limits = Limits()):
        self.corpus_path = Path(corpus_path)
        self.limits = limits
        self._corpus_lock = threading.Lock()
        self._corpus: Bm25Index | None = None

    # Bounds under the names the memory store has always used.
    @property
    def max_sessions(self) -> int:
        return self.limits.max_sessions

    @property
    def max_keys(self) -> int:
        return self.limits.max_keys

    @property
    def max_idempotency(self) -> int:
        return self.limits.max_idempotency

    @property
    def max_bytes(self) -> int:
        return self.limits.max_bytes

    @property
    def corpus(self) -> "Bm25Index":
        """The search index, built from corpus_path on first use (or by load_corpus())."""
        # Imported here: the index is built only when a search (or a server's start) needs it.
        from inloop.services.tools.functions.search import Bm25Index, load_corpus

        with self._corpus_lock:
            if self._corpus is None:
                self._corpus = Bm25Index(load_corpus(self.corpus_path))
            return self._corpus

    def load_corpus(self) -> int:
        """Build the index now (a server does this at start, to fail before serving)."""
        return len(self.corpus.docs)

    def corpus_docs(self) -> int | None:
        return len(self._corpus.docs) if self._corpus else None

    # ---- what each store provides --------------------------------------------------
    def run(self, session: str, work: Callable[[SessionView], T]) -> T:
        raise NotImplementedError

    def drop_session(self, name: str) -> bool:
        raise NotImplementedError

    def stats(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        """Where the state lives, for the service's start log line."""
        return self.kind

    def close(self) -> None:
        """Release connections (the memory store has none)."""

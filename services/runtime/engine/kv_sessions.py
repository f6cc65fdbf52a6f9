"""KV caches kept between the steps of a running task, reused for the longest common prefix.

Used where the engine runs without the batching core (a runner with a cache per sequence:
the CUDA backend for now); the batching core pins a task's blocks instead (kv_cache_manager).

A task's next model step usually starts with the previous step's prompt and output, plus a
tool result. Keeping the cache lets that step prefill only what is new. The memory held
this way has a cap in cached positions (least recently used sessions are evicted first) and
a time to live (a session nobody touched for `ttl_s` is dropped, so a client that opened a
session and went away does not hold memory until the cap forces it out); a session is also
dropped when its task ends, fails, expires or is cancelled.

The same store serves the optional automatic prefix cache (`take_longest_prefix`): requests
without a session leave their cache under an anonymous key, and a later request takes the
entry whose tokens share the longest prefix with its prompt, as vLLM's prefix caching lets
a stateless caller (the external route's Generate calls) skip what was computed before.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from inloop.services.contract.backend import KVCache


@dataclass
class Session:
    cache: KVCache
    ids: list[int]          # the tokens whose keys/values the cache holds, in order
    touched: float = field(default_factory=time.monotonic)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class KVSessionStore:
    def __init__(self, backend, max_positions: int = 65536, ttl_s: float = 600.0):
        self.backend = backend
        self.max_positions = max_positions
        self.ttl_s = ttl_s
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0            # reused prefix tokens, for metrics and tests
        self.evictions = 0
        self.expired = 0

    def take(self, session_id: str) -> Session | None:
        """Remove and return a session (the caller owns its cache until it puts it back)."""
        with self._lock:
            self._expire_locked()
            return self._sessions.pop(session_id, None)

    def take_longest_prefix(self, ids: list[int], namespace: str, min_tokens: int) -> Session | None:
        """Remove and return the entry under `namespace` sharing the longest prefix with `ids`,
        if that prefix is at least `min_tokens` long (shorter matches are not worth a cache)."""
        with self._lock:
            self._expire_locked()
            best, best_len = None, min_tokens - 1
            for key, session in self._sessions.items():
                if key.startswith(namespace):
                    n = common_prefix(session.ids, ids)
                    if n > best_len:
                        best, best_len = key, n
            return self._sessions.pop(best) if best is not None else None

    def put(self, session_id: str, session: Session) -> None:
        with self._lock:
            old = self._sessions.pop(session_id, None)
            if old is not None and old.cache is not session.cache:
                self.backend.free_kv(old.cache)
            session.touched = time.monotonic()
            self._sessions[session_id] = session
            self._expire_locked()
            self._evict_locked(keep=session_id)

    def rename(self, session_id: str, new_id: str) -> bool:
        """Keep a session's cache under another key (its LRU position is refreshed)."""
        with self._lock:
            s = self._sessions.pop(session_id, None)
            if s is not None:
                s.touched = time.monotonic()
                self._sessions[new_id] = s
        return s is not None

    def drop(self, session_id: str) -> bool:
        with self._lock:
            s = self._sessions.pop(session_id, None)
        if s is not None:
            self.backend.free_kv(s.cache)
        return s is not None

    def held_positions(self) -> int:
        with self._lock:
            self._expire_locked()
            return sum(s.cache.capacity for s in self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire_locked(self) -> None:
        """Drop sessions idle longer than ttl_s (oldest first: the dict is in LRU order)."""
        cutoff = time.monotonic() - self.ttl_s
        while self._sessions:
            sid, s = next(iter(self._sessions.items()))
            if s.touched > cutoff:
                break
            del self._sessions[sid]
            self.backend.free_kv(s.cache)
            self.expired += 1

    def _evict_locked(self, keep: str) -> None:
        total = sum(s.cache.capacity for s in self._sessions.values())
        for sid in list(self._sessions):
            if total <= self.max_positions:
                break
            if sid == keep:
                continue
            s = self._sessions.pop(sid)
            total -= s.cache.capacity
            self.backend.free_kv(s.cache)
            self.evictions += 1

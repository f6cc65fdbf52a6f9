"""A shared store for tools replicas: kv values and idempotency records in Redis.

With `--state-redis redis://HOST:6379/0` every tools replica reads and writes the same state,
so a task's kv writes and their retries may land on any replica (Kubernetes scaling the tools
Deployment, or a controller balancing over several tools addresses) and still apply once.

Each tool call is an optimistic transaction: the call's session keys are WATCHed from its
first kv access, its writes are queued and sent in one MULTI/EXEC; if another replica
changed the session in between, EXEC fails and the call's work runs again on fresh values
(the tools are pure functions of the session, so a re-run is safe).

Keys, under PREFIX (default "inloop:tools"):
    PREFIX:kv:{SESSION}      hash key -> JSON [value, version]
    PREFIX:kvw:{SESSION}     sorted set key -> write time (the max_keys bound evicts the oldest)
    PREFIX:idem:{SESSION}    hash idempotency key -> JSON [fingerprint, result]
    PREFIX:idemw:{SESSION}   sorted set idempotency key -> write time
    PREFIX:sessions          sorted set session -> last use (LRU for max_sessions / max_bytes)
    PREFIX:bytes             hash session -> kv bytes
    PREFIX:evicted           counter of sessions evicted
"""
from __future__ import annotations

import json
import random
import time
from typing import Any, Callable

import redis

from inloop.services.tools.state.base import (DEFAULT_CORPUS, DEFAULT_SESSION, NO_LOCK, KvEntry, Limits,
                                              StateUnavailable, StoreBase, T, entry_size, key_reused)

DEFAULT_PREFIX = "inloop:tools"
MAX_CONFLICT_RETRIES = 50  # a session written by many replicas at once; beyond this the call fails
SOCKET_TIMEOUT_S = 5.0


class RedisView:
    """One call's view: reads go to Redis (WATCHed), writes are buffered until commit."""

    lock = NO_LOCK

    def __init__(self, store: "RedisStore", name: str):
        self.store, self.name = store, name
        self.keys = store.session_keys(name)
        self.pipe: redis.client.Pipeline | None = None
        self.kv_writes: dict[str, KvEntry] = {}
        self.idem_writes: dict[str, list] = {}

    @property
    def corpus(self):
        return self.store.corpus

    def _redis(self) -> "redis.client.Pipeline":
        if self.pipe is None:
            self.pipe = self.store.client.pipeline()
            self.pipe.watch(*self.keys.values())  # immediate mode from here until multi()
        return self.pipe

    def kv_get(self, key: str) -> KvEntry:
        if key in self.kv_writes:
            return self.kv_writes[key]
        raw = self._redis().hget(self.keys["kv"], key)
        if raw is None:
            return KvEntry(None, 0)
        value, version = json.loads(raw)
        return KvEntry(value, version)

    def kv_set(self, key: str, value: Any) -> KvEntry:
        entry = KvEntry(value, self.kv_get(key).version + 1)
        self.kv_writes[key] = entry
        return entry

    def replay(self, key: str, fingerprint: str) -> dict | None:
        raw = self._redis().hget(self.keys["idem"], key)
        if raw is None:
            return None
        stored_fingerprint, result = json.loads(raw)
        if stored_fingerprint != fingerprint:
            raise key_reused(key, self.name)
        return result

    def remember(self, key: str, fingerprint: str, result: dict) -> None:
        self._redis()
        self.idem_writes[key] = [fingerprint, result]

    def commit(self) -> None:
        """Send the buffered writes in one MULTI/EXEC (raises WatchError on a conflict)."""
        if self.pipe is None:
            return
        pipe, keys, limits = self.pipe, self.keys, self.store.limits
        now = time.time()
        # Reads before MULTI: what the writes replace and what the key bounds evict.
        delta, evict_keys = 0, []
        new_keys = [k for k in self.kv_writes if not pipe.hexists(keys["kv"], k)]
        for key, entry in self.kv_writes.items():
            delta += entry_size(key, entry.value)
            if key not in new_keys:
                old = json.loads(pipe.hget(keys["kv"], key))[0]
                delta -= entry_size(key, old)
        over = pipe.zcard(keys["kvw"]) + len(new_keys) - limits.max_keys
        if over > 0:
            for gone in pipe.zrange(keys["kvw"], 0, over - 1):
                gone = gone.decode()
                if gone not in self.kv_writes:
                    evict_keys.append(gone)
                    delta -= entry_size(gone, json.loads(pipe.hget(keys["kv"], gone))[0])
        idem_over = pipe.zcard(keys["idemw"]) + len(self.idem_writes) - limits.max_idempotency
        pipe.multi()
        pipe.zadd(self.store.sessions_key, {self.name: now})
        if self.kv_writes:
            pipe.hset(keys["kv"], mapping={k: json.dumps([e.value, e.version]) for k, e in self.kv_writes.items()})
            pipe.zadd(keys["kvw"], {k: now for k in self.kv_writes})
        if evict_keys:
            pipe.hdel(keys["kv"], *evict_keys)
            pipe.zrem(keys["kvw"], *evict_keys)
        if delta:
            pipe.hincrby(self.store.bytes_key, self.name, delta)
        if self.idem_writes:
            pipe.hset(keys["idem"], mapping={k: json.dumps(v) for k, v in self.idem_writes.items()})
            pipe.zadd(keys["idemw"], {k: now for k in self.idem_writes})
            if idem_over > 0:
                # The oldest go; the ones written now have the newest score, so they stay.
                pipe.eval(TRIM_IDEMPOTENCY, 2, keys["idemw"], keys["idem"], idem_over)
        pipe.execute()

    def reset(self) -> None:
        if self.pipe is not None:
            self.pipe.reset()


# Drop the N oldest idempotency records (sorted set KEYS[1], hash KEYS[2]) inside the MULTI.
TRIM_IDEMPOTENCY = """
local gone = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
return #gone
"""


class RedisStore(StoreBase):
    """kv state shared by every tools replica that names the same Redis and prefix."""

    kind = "redis"

    def __init__(self, url: str, corpus_path=DEFAULT_CORPUS, limits: Limits = Limits(),
                 prefix: str = DEFAULT_PREFIX):
        super().__init__(corpus_path, limits)
        self.url, self.prefix = url, prefix
        self.client = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S,
                                           socket_connect_timeout=SOCKET_TIMEOUT_S)
        self.sessions_key = f"{prefix}:sessions"
        self.bytes_key = f"{prefix}:bytes"
        self.evicted_key = f"{prefix}:evicted"

    def describe(self) -> str:
        return f"redis:{self.client.connection_pool.connection_kwargs.get('host', '?')}" \
               f":{self.client.connection_pool.connection_kwargs.get('port', '?')}/{self.prefix}"

    def check(self) -> None:
        """Fail at start, not on the first kv call, when Redis cannot be reached."""
        self.client.ping()

    def session_keys(self, name: str) -> dict[str, str]:
        # {SESSION} is a Redis Cluster hash tag: a session's keys live on one shard.
        return {kind: f"{self.prefix}:{kind}:{{{name}}}" for kind in ("kv", "kvw", "idem", "idemw")}

    def run(self, session: str, work: Callable[[RedisView], T]) -> T:
        try:
            return self._run(session or DEFAULT_SESSION, work)
        except redis.RedisError as exc:  # unreachable, timed out, refused
            raise StateUnavailable(f"kv state in Redis {self.describe()}: {exc}") from exc

    def _run(self, name: str, work: Callable[[RedisView], T]) -> T:
        for attempt in range(MAX_CONFLICT_RETRIES):
            view = RedisView(self, name)
            try:
                result = work(view)
                view.commit()
            except redis.WatchError:
                # Another writer changed this session first: run the work again, after a short
                # jittered pause so that writers hammering one key do not keep colliding.
                time.sleep(random.uniform(0, 0.001 * min(attempt + 1, 10)))
                continue
            finally:
                view.reset()
            if view.pipe is not None:
                self._trim(keep=name)
            return result
        raise StateUnavailable(f"session {name!r} kept changing on other replicas; "
                               f"gave up after {MAX_CONFLICT_RETRIES} tries (nothing was written)")

    def _trim(self, keep: str) -> None:
        """Evict least recently used sessions (never `keep`) beyond max_sessions or max_bytes."""
        while True:
            count = self.client.zcard(self.sessions_key)
            if count <= 1:
                return
            if count <= self.limits.max_sessions and self.used_bytes <= self.limits.max_bytes:
                return
            oldest = [n.decode() for n in self.client.zrange(self.sessions_key, 0, 1)]
            victim = next(n for n in oldest if n != keep)
            if self._delete(victim):
                self.client.incr(self.evicted_key)

    def _delete(self, name: str) -> bool:
        pipe = self.client.pipeline()  # MULTI: the session goes whole or not at all
        pipe.zrem(self.sessions_key, name)
        pipe.hdel(self.bytes_key, name)
        pipe.delete(*self.session_keys(name).values())
        return bool(pipe.execute()[0])  # only the replica whose ZREM removed it counts it

    def drop_session(self, name: str) -> bool:
        return self._delete(name or DEFAULT_SESSION)

    @property
    def used_bytes(self) -> int:
        return sum(int(v) for v in self.client.hvals(self.bytes_key))

    @property
    def evicted_sessions(self) -> int:
        return int(self.client.get(self.evicted_key) or 0)

    def stats(self) -> dict:
        return {"sessions": self.client.zcard(self.sessions_key), "evicted_sessions": self.evicted_sessions,
                "kv_bytes": self.used_bytes, "corpus_docs": self.corpus_docs()}

    def close(self) -> None:
        self.client.close()

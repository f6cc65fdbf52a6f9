"""The tools' explicit state: kv namespaces, idempotency logs and the search index.

Three stores with one interface (base.StoreBase, `run(session, work)`):

    ToolState()                     memory: one process (the runtime's internal route, tests)
    SqliteStore(path)               a SQLite file in WAL mode: the tools service's default,
                                    so a restart loses no kv value and no idempotency record
    RedisStore(url)                 Redis: shared by several tools replicas

`open_store` picks one from the tools service's --state-db / --state-redis.
"""
from __future__ import annotations

import os
from pathlib import Path

from inloop.services.tools.state.base import (DEFAULT_CORPUS, DEFAULT_SESSION, KvEntry, Limits, SessionView,
                                              StateUnavailable, StoreBase, StoredResult, call_fingerprint,
                                              entry_size)
from inloop.services.tools.state.memory import Session, ToolState

__all__ = ["DEFAULT_CORPUS", "DEFAULT_SESSION", "KvEntry", "Limits", "MEMORY", "Session", "SessionView", "StateUnavailable",
           "StoreBase", "StoredResult", "ToolState", "call_fingerprint", "default_state_db", "entry_size",
           "open_store"]

MEMORY = ":memory:"  # --state-db :memory: keeps kv state in the process (lost on restart)
STATE_DB_NAME = "kv.sqlite3"


def default_state_dir(service: str = "tools") -> Path:
    """A service's state directory: systemd's StateDirectory= ($STATE_DIRECTORY), else
    $XDG_STATE_HOME/inloop/SERVICE (~/.local/state/inloop/tools; the runtime's internal route
    keeps its own under .../runtime)."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "inloop" / service


def default_state_db(service: str = "tools") -> Path:
    return default_state_dir(service) / STATE_DB_NAME


def open_store(state_db: str = "", state_redis: str = "", corpus_path: Path | str = DEFAULT_CORPUS,
               limits: Limits = Limits(), service: str = "tools") -> StoreBase:
    """Redis when `state_redis` is a URL, memory for ':memory:', else the SQLite file `state_db`
    (default: default_state_db(service))."""
    if state_redis:
        from inloop.services.tools.state.redis_store import RedisStore

        store = RedisStore(state_redis, corpus_path, limits)
        store.check()
        return store
    if state_db == MEMORY:
        return ToolState(corpus_path, max_sessions=limits.max_sessions, max_keys=limits.max_keys,
                         max_idempotency=limits.max_idempotency, max_bytes=limits.max_bytes)
    from inloop.services.tools.state.sqlite import SqliteStore

    return SqliteStore(state_db or default_state_db(service), corpus_path, limits)

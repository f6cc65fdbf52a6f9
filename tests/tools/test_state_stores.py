"""The three kv stores (memory, SQLite, Redis) behave the same through the registry: versions,
idempotent writes, bounds, atomic writes under concurrency; SQLite keeps it all across a reopen.

Redis runs as a real redis-server (skipped, saying why, where the Debian package is missing).
"""
from __future__ import annotations

import threading
import uuid

import pytest

from inloop.services.contract.errors import ToolArgumentError, ToolError
from inloop.services.tools.registry import call_tool, execute
from inloop.services.tools.state import Limits, ToolState, open_store
from inloop.services.tools.state.sqlite import SqliteStore
from tests.tools.redis_server import redis_server

KINDS = ("memory", "sqlite", "redis")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def make(request, tmp_path):
    """make(kind, **limits) -> a fresh store of that kind (a new file, a new Redis prefix)."""
    opened = []

    def build(kind: str, **limits):
        if kind == "memory":
            store = ToolState(**limits)
        elif kind == "sqlite":
            store = SqliteStore(tmp_path / f"{uuid.uuid4().hex}.sqlite3", limits=Limits(**limits))
        else:
            from inloop.services.tools.state.redis_store import RedisStore

            store = RedisStore(request.getfixturevalue("redis_url"), limits=Limits(**limits),
                               prefix=f"test:{uuid.uuid4().hex}")
        opened.append(store)
        return store

    yield build
    for store in opened:
        store.close()


def get(store, key: str, session: str) -> dict:
    return call_tool(store, "kv", {"op": "get", "key": key}, session=session)


@pytest.mark.parametrize("kind", KINDS)
def test_versions_sessions_and_idempotent_writes(make, kind):
    store = make(kind)
    assert get(store, "n", "t") == {"op": "get", "key": "n", "value": None, "version": 0, "found": False}
    args = {"op": "increment", "key": "n", "amount": 2.5}
    first = execute(store, "kv", args, idempotency_key="call-1", session="t")
    again = execute(store, "kv", args, idempotency_key="call-1", session="t")
    assert (first.replayed, again.replayed) == (False, True)
    assert first.result == again.result == {"op": "increment", "key": "n", "value": 2.5, "version": 1,
                                            "previous": 0}
    assert call_tool(store, "kv", {"op": "put", "key": "name", "value": "ada"}, session="t")["version"] == 1
    assert call_tool(store, "kv", {"op": "put", "key": "flag", "value": True}, session="t")["value"] is True
    assert get(store, "n", "t")["value"] == 2.5 and get(store, "n", "other")["found"] is False
    with pytest.raises(ToolArgumentError, match="already used for a different call"):
        execute(store, "kv", {"op": "increment", "key": "m"}, idempotency_key="call-1", session="t")
    with pytest.raises(ToolError, match="not a number"):
        call_tool(store, "kv", {"op": "increment", "key": "name"}, idempotency_key="call-2", session="t")
    # A refused write leaves nothing behind: not the value, not its idempotency record.
    assert get(store, "name", "t") == {"op": "get", "key": "name", "value": "ada", "version": 1, "found": True}
    store.drop_session("t")
    assert get(store, "name", "t")["found"] is False
    assert not execute(store, "kv", args, idempotency_key="call-1", session="t").replayed


@pytest.mark.parametrize("kind", KINDS)
def test_bounds_sessions_keys_idempotency(make, kind):
    store = make(kind, max_sessions=3, max_keys=2, max_idempotency=2)
    for i in range(5):
        call_tool(store, "kv", {"op": "put", "key": "a", "value": i}, session=f"s{i}")
    assert store.stats()["sessions"] == 3 and store.stats()["evicted_sessions"] == 2
    assert get(store, "a", "s1")["found"] is False and get(store, "a", "s4")["value"] == 4
    for key in "bc":  # "a" is now the least recently written key of s4: it goes
        call_tool(store, "kv", {"op": "put", "key": key, "value": 1}, session="s4")
    assert [get(store, k, "s4")["found"] for k in "abc"] == [False, True, True]
    inc = {"op": "increment", "key": "n"}
    for i in range(3):
        execute(store, "kv", inc, idempotency_key=f"k{i}", session="s4")
    assert execute(store, "kv", inc, idempotency_key="k2", session="s4").replayed
    assert not execute(store, "kv", inc, idempotency_key="k0", session="s4").replayed  # its record was evicted


@pytest.mark.parametrize("kind", KINDS)
def test_kv_bytes_are_bounded_over_all_sessions(make, kind):
    store = make(kind, max_bytes=20_000)
    for i in range(40):
        call_tool(store, "kv", {"op": "put", "key": f"k{i % 3}", "value": "x" * 4000}, session=f"s{i}")
        assert store.used_bytes <= 20_000 + 4100
    stats = store.stats()
    assert get(store, "k0", "s39")["found"] and stats["evicted_sessions"] >= 30
    assert stats["kv_bytes"] == store.used_bytes == 4002 * stats["sessions"]


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_writers_through_two_handles_apply_each_write_once(make, kind, tmp_path):
    """Two handles on one store (two processes on one file, two replicas on one Redis): 4 threads
    each increment 10 times, plus 8 retries of one keyed write; nothing is lost or doubled."""
    first = make(kind)
    if kind == "memory":
        second = first  # one process's memory: two handles would be two stores
    elif kind == "sqlite":
        second = SqliteStore(first.path)
    else:
        from inloop.services.tools.state.redis_store import RedisStore

        second = RedisStore(first.url, prefix=first.prefix)

    def worker(store):
        for _ in range(10):
            call_tool(store, "kv", {"op": "increment", "key": "hits"}, session="shared")
        call_tool(store, "kv", {"op": "increment", "key": "once"}, idempotency_key="retry", session="shared")

    threads = [threading.Thread(target=worker, args=(h,)) for h in (first, second, first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert get(second, "hits", "shared") == {"op": "get", "key": "hits", "value": 40, "version": 40, "found": True}
    assert get(first, "once", "shared")["value"] == 1
    if second is not first:
        second.close()


def test_sqlite_keeps_values_and_idempotency_records_across_a_reopen(tmp_path):
    path = tmp_path / "state" / "kv.sqlite3"  # the directory is created
    store = open_store(str(path))
    written = execute(store, "kv", {"op": "increment", "key": "c"}, idempotency_key="w1", session="t")
    store.close()
    reopened = open_store(str(path))
    again = execute(reopened, "kv", {"op": "increment", "key": "c"}, idempotency_key="w1", session="t")
    assert again.replayed and again.result == written.result
    assert get(reopened, "c", "t")["value"] == 1
    assert reopened.stats()["sessions"] == 1 and reopened.describe() == f"sqlite:{path}"
    assert (path.parent / "kv.sqlite3-wal").exists()  # WAL mode
    reopened.close()


def test_open_store_memory_and_an_unreachable_redis():
    assert isinstance(open_store(":memory:"), ToolState)
    pytest.importorskip("redis")
    from inloop.services.tools.state.redis_store import RedisStore
    from tests.tools.redis_server import free_port

    with pytest.raises(Exception, match="(?i)connect"):
        open_store(state_redis=f"redis://127.0.0.1:{free_port()}/0")
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    from inloop.services.tools.state import StateUnavailable

    with pytest.raises(StateUnavailable, match="kv state in Redis"):
        get(store, "k", "t")


@pytest.mark.parametrize("kind", KINDS)
def test_the_inloop_state_gauges_read_the_store(make, kind):
    import prometheus_client

    from inloop.services.common import metrics
    from inloop.services.tools.service.server import ToolsServicer

    store = make(kind)
    ToolsServicer(store)  # registers inloop_state{service="tools"} over this store
    call_tool(store, "kv", {"op": "put", "key": "k", "value": "abc"}, session="g")
    text = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    assert 'inloop_state{service="tools",what="kv_bytes"} 4.0' in text
    assert 'inloop_state{service="tools",what="sessions"} 1.0' in text

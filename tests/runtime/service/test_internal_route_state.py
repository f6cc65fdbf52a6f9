"""The internal route's kv state is durable like the tools service's (--tool-state-db, SQLite by
default): a keyed write retried after a restart is answered from its record, applied once; a
runtime killed after a task finds that task's writes in its file; a store that cannot open
fails the start with one line, before the model loads."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import pytest

from inloop.services.common.grpc_client import insecure_channel
from inloop.services.contract.errors import HopError, TaskError
from inloop.services.contract.task import TaskSpec
from inloop.services.runtime.model.tiny import make_tiny
from inloop.services.runtime.service.internal_route import LocalToolPort
from inloop.services.tools.registry import execute
from inloop.services.tools.state import StateUnavailable, ToolState
from inloop.services.tools.state.sqlite import SqliteStore
from inloop.v1 import runtime_pb2 as pb
from inloop.v1 import runtime_pb2_grpc
from tests.service_procs import REPO, runtime_process

pytestmark = pytest.mark.timeout(120)
INCREMENT = {"op": "increment", "key": "visits", "amount": 3}


def task(task_id: str = "task-1") -> TaskSpec:
    return TaskSpec(task_id=task_id, messages=[], tools=[], deadline=time.monotonic() + 30)


def test_a_keyed_write_retried_after_a_restart_is_applied_once(tmp_path):
    db = tmp_path / "kv.sqlite3"
    store = SqliteStore(db)
    first = asyncio.run(LocalToolPort(store).call(task(), "kv", INCREMENT, call_id="call-1"))
    store.close()  # the runtime stops; a new one opens the same file
    store = SqliteStore(db)
    try:
        retry = asyncio.run(LocalToolPort(store).call(task(), "kv", INCREMENT, call_id="call-1"))
        assert retry.result == first.result and first.result["value"] == 3
        assert execute(store, "kv", {"op": "get", "key": "visits"}, session="task-1").result["value"] == 3
    finally:
        store.close()


class DownStore(ToolState):
    def run(self, session, work):
        raise StateUnavailable("redis: connection refused")


def test_a_store_that_is_down_fails_the_hop_not_the_runtime():
    with pytest.raises(HopError) as err:
        asyncio.run(LocalToolPort(DownStore()).call(task(), "kv", INCREMENT, call_id="call-1"))
    assert err.value.error_type == TaskError.TOOL_HOP_FAILED and "unavailable" in str(err.value)


def test_a_task_s_setup_writes_survive_a_killed_runtime(tmp_path):
    db = tmp_path / "runtime-kv.sqlite3"
    runtime = runtime_process(make_tiny("llama", tmp_path / "tiny"), tmp_path / "runtime.jsonl",
                              "--tool-state-db", str(db))
    try:
        request = pb.TaskRequest(task_id="durable-1", messages=[pb.ChatMessage(role="user", content="hi")],
                                 tools=["kv"], tool_choice="none", max_steps=1,
                                 sampling=pb.SamplingParams(max_tokens=2),
                                 setup_json=json.dumps({"kv": {"city": "Lisbon"}}))
        with insecure_channel(runtime.target) as channel:
            runtime_pb2_grpc.RuntimeStub(channel).RunTask(request, timeout=60)
        assert runtime.kill(signal.SIGKILL) == -signal.SIGKILL  # no graceful stop: the commit alone keeps it
    finally:
        runtime.stop()
    store = SqliteStore(db)
    try:
        assert execute(store, "kv", {"op": "get", "key": "city"}, session="durable-1").result["value"] == "Lisbon"
    finally:
        store.close()


def test_a_store_that_cannot_open_fails_the_start_with_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = subprocess.run([sys.executable, "-m", "inloop.services.cli", "runtime", "serve", "--port", "0",
                           "--http-port", "-1", "--metrics-port", "-1",
                           "--tool-state-db", str(blocker / "kv.sqlite3")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "cannot open the internal route's kv state (--tool-state-db" in proc.stderr, proc.stderr[-2000:]

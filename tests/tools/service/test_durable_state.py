"""kv state that outlives the tools process, and that several tools replicas share.

- SQLite (the default): a keyed write, the tools service killed (SIGKILL) and restarted on the
  same file, then the retry of that write: answered from the record, applied once.
- Redis (--state-redis, a real redis-server): two tools replicas behind one controller that
  balances its calls over both (round_robin); what tasks wrote through the controller reads the
  same from either replica, and increments sent to both at once add up exactly.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid

import pytest

from inloop.services.common.grpc_client import insecure_channel
from inloop.services.runtime.model.tiny import make_tiny
from inloop.v1 import controller_pb2_grpc, tools_pb2, tools_pb2_grpc
from inloop.v1 import runtime_pb2 as rpb
from tests.service_procs import controller_process, runtime_process, tools_process
from tests.tools.redis_server import free_port, redis_server

pytestmark = pytest.mark.timeout(180)


def call(target: str, args: dict, session: str, key: str = "") -> tools_pb2.ToolCallResponse:
    with insecure_channel(target) as channel:
        request = tools_pb2.ToolCallRequest(name="kv", arguments_json=json.dumps(args), session=session,
                                            idempotency_key=key)
        return tools_pb2_grpc.ToolsStub(channel).Call(request, timeout=10)


def kv_get(target: str, session: str, key: str) -> dict:
    return json.loads(call(target, {"op": "get", "key": key}, session).result_json)


def test_a_write_retried_after_a_tools_restart_is_applied_once(tmp_path):
    db = tmp_path / "state" / "kv.sqlite3"
    tools = tools_process(tmp_path / "tools-1.jsonl", 0, "--state-db", str(db))
    try:
        increment = {"op": "increment", "key": "visits", "amount": 3}
        first = call(tools.target, increment, "task-1", key="write-1")
        assert not first.replayed
        assert json.loads(first.result_json) == {"op": "increment", "key": "visits", "value": 3, "version": 1,
                                                 "previous": 0}
        call(tools.target, {"op": "put", "key": "note", "value": "kept"}, "task-1")
        assert tools.kill(signal.SIGKILL) == -signal.SIGKILL  # no graceful stop: the commit alone keeps it
    finally:
        tools.stop()
    tools = tools_process(tmp_path / "tools-2.jsonl", 0, "--state-db", str(db))
    try:
        retry = call(tools.target, increment, "task-1", key="write-1")
        assert retry.replayed and json.loads(retry.result_json) == json.loads(first.result_json)
        assert kv_get(tools.target, "task-1", "visits") == {"op": "get", "key": "visits", "value": 3,
                                                            "version": 1, "found": True}
        assert kv_get(tools.target, "task-1", "note")["value"] == "kept"
        opened = tools.wait_log("state_opened")
        assert opened["state"] == f"sqlite:{db}" and opened["sessions"] == 1
    finally:
        assert tools.stop() == 0


def test_two_tools_replicas_on_redis_behind_one_controller_agree(tmp_path):
    model = make_tiny("llama", tmp_path / "tiny-llama")
    with redis_server(tmp_path) as url:
        procs = []
        try:
            procs.append(runtime_process(model, tmp_path / "runtime.jsonl"))
            for i in (1, 2):
                procs.append(tools_process(tmp_path / f"tools-{i}.jsonl", 0, "--state-redis", url))
            a, b = procs[1], procs[2]
            # One gRPC target naming both replicas; the controller's channels balance round_robin,
            # as over a Kubernetes headless service's addresses.
            both = f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}"
            procs.append(controller_process(procs[0].target, both, tmp_path / "controller.jsonl"))
            controller = controller_pb2_grpc.ControllerStub(insecure_channel(procs[3].target))
            written = {}
            for n in range(4):
                req = rpb.TaskRequest(task_id=f"task-{uuid.uuid4().hex[:8]}", max_steps=1, deadline_ms=20_000,
                                      sampling=rpb.SamplingParams(max_tokens=4))
                req.messages.add(role="user", content="hi")
                setup = {f"k{i}": n * 10 + i for i in range(3)}
                req.setup_json = json.dumps({"kv": setup})
                result = controller.RunTask(req, timeout=30)
                assert not result.error_type.startswith("tool"), result  # the setup writes landed
                written[req.task_id] = setup
            # The controller's 12 writes went to both replicas, and either replica reads them all.
            served = [len(p.logs("tool_call")) for p in (a, b)]
            assert min(served) >= 3, served
            for session, setup in written.items():
                for key, value in setup.items():
                    for replica in (a, b):
                        assert kv_get(replica.target, session, key)["value"] == value, (session, key, replica.target)

            def hammer(target: str) -> None:
                for _ in range(10):
                    call(target, {"op": "increment", "key": "hits"}, "shared")
                call(target, {"op": "increment", "key": "once"}, "shared", key="same-retry")

            threads = [threading.Thread(target=hammer, args=(p.target,)) for p in (a, b, a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert kv_get(a.target, "shared", "hits") == {"op": "get", "key": "hits", "value": 40, "version": 40,
                                                          "found": True}
            assert kv_get(b.target, "shared", "once")["value"] == 1
        finally:
            for proc in reversed(procs):
                proc.stop()


def test_a_store_that_cannot_be_reached_fails_the_start_naming_the_flag(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "inloop.services.cli", "tools", "serve", "--port", "0",
                           "--metrics-port", "-1", "--state-redis", url], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert f"cannot open the kv state (--state-redis {url})" in done.stderr

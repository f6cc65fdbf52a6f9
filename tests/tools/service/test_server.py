"""The real tools server, as a subprocess, over real gRPC, through the generated stub.

`python -m inloop.services.cli tools serve --port 0` prints the bound address; the tests
wait for the standard health service to say SERVING. Each fault test uses its own fault
key, so the every-Nth counters of one test never shift another's.
"""
from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from inloop.services.common.grpc_client import insecure_channel, wait_for_serving
from inloop.services.contract.faults import HEADER_ABORT, HEADER_DELAY, HEADER_KEY
from inloop.v1 import tools_pb2 as pb
from inloop.v1 import tools_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
INVALID = grpc.StatusCode.INVALID_ARGUMENT


class ToolsServer:
    """`tools serve` in a subprocess; its JSON logs go to a file the tests can read."""

    def __init__(self, log_path: Path, *extra: str):
        self.log_path = log_path
        self._log_file = open(log_path, "w")
        if not {"--state-db", "--state-redis"} & set(extra):  # this test's kv state, in its own file
            extra = (*extra, "--state-db", str(log_path.with_suffix(".kv.sqlite3")))
        cmd = [sys.executable, "-m", "inloop.services.cli", "tools", "serve", "--port", "0", *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=self._log_file, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=20)
        except queue.Empty:
            line = ""
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"tools server did not start: {line!r}\n{log_path.read_text()}")
        self.target = line.rsplit(" ", 1)[-1].strip()
        wait_for_serving(self.target, timeout_s=10)
        self.channel = insecure_channel(self.target)
        self.stub = tools_pb2_grpc.ToolsStub(self.channel)

    def call(self, name: str, args=None, *, timeout: float = 5.0, metadata=(), raw: str | None = None, **fields):
        request = pb.ToolCallRequest(name=name, arguments_json=raw if raw is not None else json.dumps(args or {}),
                                     **fields)
        return self.stub.Call(request, timeout=timeout, metadata=list(metadata))

    def result(self, name: str, args=None, **kw) -> dict:
        return json.loads(self.call(name, args, **kw).result_json)

    def wait_log(self, timeout_s: float = 5.0, **match) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.log_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if all(rec.get(k) == v for k, v in match.items()):
                    return rec
            time.sleep(0.02)
        raise AssertionError(f"no log line with {match}:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ToolsServer(tmp_path_factory.mktemp("tools") / "tools.jsonl", "--max-concurrency", "3")
    yield srv
    assert srv.stop() == 0


def faults(abort: str | None = None, delay: str | None = None) -> list[tuple[str, str]]:
    """Headers for a fault spec under a fresh key (so counters start at 1)."""
    headers = [(HEADER_KEY, uuid.uuid4().hex)]
    if abort:
        headers.append((HEADER_ABORT, abort))
    if delay:
        headers.append((HEADER_DELAY, delay))
    return headers


def code_of(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value.code()


# ---- the contract -------------------------------------------------------------------
def test_health_reflection_and_list(server):
    health = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", "inloop.v1.Tools"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    (answer,) = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=5)
    assert {"inloop.v1.Tools", "grpc.health.v1.Health"} <= {s.name for s in answer.list_services_response.service}
    tools = server.stub.List(pb.ListToolsRequest(), timeout=5).tools
    assert [t.name for t in tools] == ["search", "extract_receipt", "summarize", "calculator", "kv"]
    for tool in tools:
        assert tool.description and json.loads(tool.parameters_json)["type"] == "object"


def test_call_runs_tools_and_echoes_call_id(server):
    reply = server.call("calculator", {"expression": "17 * 23"}, call_id="c-1")
    assert reply.call_id == "c-1" and not reply.replayed
    assert json.loads(reply.result_json) == {"expression": "17 * 23", "result": 391}
    assert server.call("calculator", {"expression": "1"}).call_id  # made when empty
    hits = server.result("search", {"query": "highest mountain", "k": 2})["results"]
    assert 1 <= len(hits) <= 2 and {"id", "title", "text", "score"} <= set(hits[0])
    receipt = server.result("extract_receipt", {"text": "Cafe Luna\n2024-03-07\nLatte 4.50\nTotal 4.50"})
    assert receipt == {"merchant": "Cafe Luna", "date": "2024-03-07", "total": 4.5,
                       "items": [{"name": "Latte", "price": 4.5}]}


@pytest.mark.parametrize("name, raw, message", [
    ("", "{}", "tool name is empty"),
    ("teleport", "{}", "unknown tool 'teleport'"),
    ("calculator", "{expression: 1+1}", "arguments_json: not JSON"),
    ("calculator", '{"expression": NaN}', "NaN is not JSON"),
    ("calculator", "[1]", "must be a JSON object"),
    ("calculator", '{"expr": "1+1"}', "missing required argument"),
    ("calculator", '{"expression": "__import__(\'os\')"}', "function calls are not allowed"),
    ("calculator", '{"expression": "1/0"}', "division by zero"),
    ("calculator", '{"expression": ' + "[" * 1000 + "]" * 1000 + "}", "nests deeper than"),
    ("kv", '{"op": "put", "key": "n", "value": 1' + "0" * 400 + "}", "integer beyond the range of a float"),
    ("teleport" * 200, "{}", "unknown tool 'teleportteleport"),  # echoed cut short
])
def test_bad_input_is_invalid_argument_and_the_server_keeps_serving(server, name, raw, message):
    with pytest.raises(grpc.RpcError) as info:
        server.call(name, raw=raw)
    assert info.value.code() == INVALID and message in info.value.details()
    assert server.result("calculator", {"expression": "2+2"})["result"] == 4


def test_bad_fault_header_is_invalid_argument(server):
    with pytest.raises(grpc.RpcError) as info:
        server.call("calculator", {"expression": "1"}, metadata=[(HEADER_ABORT, "every=2;status=NOPE")])
    assert info.value.code() == INVALID and HEADER_ABORT in info.value.details()


def test_oversized_payload_is_resource_exhausted(server):
    huge = {"text": "x" * (2 * 1024 * 1024)}
    assert code_of(lambda: server.call("summarize", huge)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.result("calculator", {"expression": "3*3"})["result"] == 9


# ---- faults -------------------------------------------------------------------------
def test_every_second_call_is_aborted_with_the_given_status(server):
    headers = faults(abort="every=2;status=UNAVAILABLE")
    outcomes = []
    for _ in range(4):
        try:
            server.call("calculator", {"expression": "1+1"}, metadata=headers)
            outcomes.append("OK")
        except grpc.RpcError as exc:
            outcomes.append(exc.code().name)
            assert "injected fault" in exc.details()
    assert outcomes == ["OK", "UNAVAILABLE", "OK", "UNAVAILABLE"]
    other = faults(abort="every=1;status=INTERNAL")
    assert code_of(lambda: server.call("calculator", {"expression": "1"}, metadata=other)) == grpc.StatusCode.INTERNAL


def test_injected_delay_is_observed(server):
    headers = faults(delay="every=2;ms=300")
    timings = []
    for _ in range(2):
        start = time.monotonic()
        server.call("calculator", {"expression": "1"}, metadata=headers)
        timings.append(time.monotonic() - start)
    assert timings[0] < 0.2 and timings[1] >= 0.3


def test_deadline_shorter_than_the_delay_does_not_run_the_tool(server):
    session = uuid.uuid4().hex
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        server.call("kv", {"op": "increment", "key": "n"}, session=session, call_id=session,
                    timeout=0.3, metadata=faults(delay="every=1;ms=900"))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 0.8
    server.wait_log(event="tool_call", call_id=session, code="DEADLINE_EXCEEDED")
    assert server.result("kv", {"op": "get", "key": "n"}, session=session)["version"] == 0


def test_retried_increment_with_one_idempotency_key_applies_once(server):
    session = uuid.uuid4().hex
    # Attempt 1 is applied, attempt 2 (the retry) is aborted by a fault, attempt 3 replays.
    headers = faults(abort="every=2;status=UNAVAILABLE")
    args = {"op": "increment", "key": "visits"}
    first = server.call("kv", args, session=session, idempotency_key="inc-1", metadata=headers)
    assert code_of(lambda: server.call("kv", args, session=session, idempotency_key="inc-1",
                                       metadata=headers)) == grpc.StatusCode.UNAVAILABLE
    third = server.call("kv", args, session=session, idempotency_key="inc-1", metadata=headers)
    assert (first.replayed, third.replayed) == (False, True)
    assert json.loads(first.result_json) == json.loads(third.result_json)
    assert server.result("kv", {"op": "get", "key": "visits"}, session=session)["value"] == 1
    assert server.result("kv", args, session=session, idempotency_key="inc-2")["value"] == 2


def test_full_server_answers_resource_exhausted(server):
    headers = faults(delay="every=1;ms=500")  # the server was started with --max-concurrency 3
    request = pb.ToolCallRequest(name="calculator", arguments_json='{"expression": "1"}')
    futures = [server.stub.Call.future(request, timeout=5, metadata=headers) for _ in range(5)]
    codes = []
    for f in futures:
        try:
            f.result()
            codes.append("OK")
        except grpc.RpcError as exc:
            codes.append(exc.code().name)
    assert sorted(codes) == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 2
    assert server.result("calculator", {"expression": "5"})["result"] == 5


# ---- lifecycle ----------------------------------------------------------------------
def test_sigterm_lets_a_running_call_finish_and_exits_zero(tmp_path):
    srv = ToolsServer(tmp_path / "tools.jsonl", "--fault-delay", "every=1;ms=400", "--grace-s", "3")
    try:
        start = time.monotonic()  # a header overrides the service default (--fault-delay)
        srv.call("calculator", {"expression": "1"}, metadata=[(HEADER_DELAY, "off")])
        assert time.monotonic() - start < 0.3
        request = pb.ToolCallRequest(name="calculator", arguments_json='{"expression": "6*7"}')
        pending = srv.stub.Call.future(request, timeout=5)
        time.sleep(0.15)  # the call is now sleeping in its default injected delay
        srv.proc.send_signal(signal.SIGTERM)
        assert json.loads(pending.result().result_json)["result"] == 42
        assert srv.proc.wait(timeout=10) == 0
    finally:
        srv.stop()
    srv.wait_log(event="stopped", reason="SIGTERM")

"""The two routes end to end: three real processes on loopback, real gRPC between them.

    runtime (tiny llama, cpu)  <-- Generate --  controller  -- Call -->  tools
         ^ RunTask (internal route)                 ^ RunTask (external route)

The same TaskRequests go to Runtime.RunTask and Controller.RunTask. With no fault they give
the same answers and steps (one loop, two transports). With the tools service's faults
(every 2nd attempt aborted, every 3rd delayed 900 ms) and a per-try timeout of 250 ms with
one retry, the external route shows retries and typed errors and the internal route does not
notice. Bad input is INVALID_ARGUMENT on every RPC, and a tools service killed mid-run fails
the running tasks with a typed error, none hangs, and the route recovers once it is back.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from inloop.services.common.grpc_client import insecure_channel
from inloop.services.contract.faults import HEADER_ABORT, HEADER_DELAY
from inloop.services.runtime.model.tiny import make_tiny
from inloop.v1 import controller_pb2_grpc, runtime_pb2_grpc, tools_pb2, tools_pb2_grpc
from inloop.v1 import runtime_pb2 as pb
from tests.service_procs import ServiceProcess, controller_process, runtime_process, tools_process

INVALID = grpc.StatusCode.INVALID_ARGUMENT
HOP_FAULT_ERRORS = ("tool_hop_failed", "tool_timeout")
NO_FAULT_HEADERS = [(HEADER_ABORT, "off"), (HEADER_DELAY, "off")]
ABORT_EVERY_2 = "every=2;status=UNAVAILABLE"
DELAY_EVERY_3 = "every=3;ms=900"
PER_TRY_MS = 250.0
SLACK_S = 0.75  # what a task may take past its deadline_ms: loopback, scheduling, a busy 2-core box

pytestmark = pytest.mark.timeout(120)


# ---- the mesh ---------------------------------------------------------------------------
@dataclass
class Mesh:
    runtime: ServiceProcess
    tools: ServiceProcess
    controller: ServiceProcess
    log_dir: Path
    http_controller: ServiceProcess | None = None  # its model hop: the runtime's OpenAI HTTP API

    def __post_init__(self):
        self.internal = runtime_pb2_grpc.RuntimeStub(insecure_channel(self.runtime.target))
        self.external = controller_pb2_grpc.ControllerStub(insecure_channel(self.controller.target))
        self.external_http = controller_pb2_grpc.ControllerStub(insecure_channel(self.http_controller.target))
        self.connect_tools()

    def connect_tools(self) -> None:
        self.tools_stub = tools_pb2_grpc.ToolsStub(insecure_channel(self.tools.target))

    def route(self, name: str):
        return self.internal if name == "internal" else self.external

    def kv_get(self, session: str, key: str) -> dict:
        """Read a counter straight from the tools service, with faults switched off."""
        req = tools_pb2.ToolCallRequest(name="kv", arguments_json=json.dumps({"op": "get", "key": key}),
                                        session=session)
        return json.loads(self.tools_stub.Call(req, timeout=5, metadata=NO_FAULT_HEADERS).result_json)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("mesh")
    model = make_tiny("llama", root / "tiny-llama")
    started: list[ServiceProcess] = []
    try:
        started.append(runtime_process(model, root / "runtime.jsonl", "--http-port", "0"))
        started.append(tools_process(root / "tools.jsonl"))
        started.append(controller_process(started[0].target, started[1].target, root / "controller.jsonl"))
        http = f"http://127.0.0.1:{started[0].wait_log('http_listening', timeout_s=30)['port']}/v1"
        started.append(controller_process(started[0].target, started[1].target, root / "controller-http.jsonl",
                                          "--model-endpoint", http))
        m = Mesh(*started[:3], log_dir=root, http_controller=started[3])
        yield m
        started[1] = m.tools  # test_tools_service_killed... restarts it
    finally:
        for proc in reversed(started):
            proc.stop()


# ---- building tasks ---------------------------------------------------------------------
def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def task(question: str, tools=(), tool_choice: str = "", *, max_tokens: int = 96, max_steps: int = 2,
         deadline_ms: float = 20_000, system: str = "Answer briefly.", **fields) -> pb.TaskRequest:
    req = pb.TaskRequest(task_id=new_id(), tools=list(tools), tool_choice=tool_choice, max_steps=max_steps,
                         deadline_ms=deadline_ms, sampling=pb.SamplingParams(max_tokens=max_tokens), **fields)
    req.messages.add(role="system", content=system)
    req.messages.add(role="user", content=question)
    return req


def hand_built_tasks() -> list[pb.TaskRequest]:
    return [
        task("What is 17 * 23?", ["calculator"], "required"),
        task("Add one visit to the counter `visits`.", ["kv"], "required"),
        task("Who founded Lumen Arc?", ["search"], "required"),
        task("Summarize: the runtime owns the GPU. The controller calls tools. Both routes agree.",
             ["summarize"], "summarize"),
        task("Corner Market\n2026-03-14\nBread 2.50\nMilk 1.20\nTotal 3.70\nRead this receipt.",
             ["extract_receipt", "calculator"], "extract_receipt"),
        task("What is the capital of France?"),                              # no tool at all
        task("What is 2 + 3?", ["calculator", "kv", "search"], "auto"),      # the model may answer freely
        # The gate branches to search: no mean logprob reaches 0.5 (0 would mean "the calibrated default").
        task("Where is Haddow?", ["search"], "auto",
             gate=pb.GateConfig(enabled=True, statistic="mean_logprob", threshold=0.5, tool="search")),
    ]


def case_tasks() -> list[pb.TaskRequest]:
    """One case of each task family and scenario (loadgen/tasks), when the data files are there."""
    try:
        from inloop.loadgen.tasks.model import load_cases
        cases = load_cases(limit_per_family=1)
    except (ImportError, OSError, ValueError):
        return []
    out = []
    for case in cases:
        req = pb.TaskRequest(task_id=new_id(case.id), tools=case.tools, tool_choice=case.tool_choice,
                             max_steps=min(case.max_steps, 3), deadline_ms=20_000, family=case.family,
                             setup_json=json.dumps(case.setup) if case.setup else "",
                             sampling=pb.SamplingParams(max_tokens=96))
        for m in case.messages:
            req.messages.add(role=m["role"], content=m["content"])
        out.append(req)
    return out


def faulted(req: pb.TaskRequest, key: str, abort: str = ABORT_EVERY_2, delay: str = DELAY_EVERY_3,
            attempts: int = 2, per_try_ms: float = PER_TRY_MS, deadline_ms: float = 4_000) -> pb.TaskRequest:
    out = pb.TaskRequest()
    out.CopyFrom(req)
    out.task_id = new_id("f")
    out.deadline_ms = deadline_ms
    out.policy.CopyFrom(pb.RoutePolicy(per_try_timeout_ms=per_try_ms, attempts=attempts,
                                       backoff_base_ms=10, backoff_max_ms=50))
    out.fault.CopyFrom(pb.FaultSpec(abort=abort, delay=delay, key=key))
    return out


def run_task(stub, req: pb.TaskRequest, slack_s: float = 10.0) -> tuple[pb.TaskResult, float]:
    started = time.monotonic()
    result = stub.RunTask(req, timeout=req.deadline_ms / 1e3 + slack_s)
    return result, time.monotonic() - started


def signature(result: pb.TaskResult) -> list[tuple]:
    return [(s.kind, s.name, s.status, s.error_type, s.arguments_json, s.text) for s in result.steps]


def tool_steps(result: pb.TaskResult) -> list[pb.TaskStep]:
    return [s for s in result.steps if s.kind == "tool"]


def describe(result: pb.TaskResult) -> str:
    lines = [f"{result.route} ok={result.ok} error={result.error_type} {result.error_message[:120]}"]
    lines += [f"  {s.kind} {s.name} {s.status} {s.error_type} x{s.attempts} {s.latency_ms:.0f}ms "
              f"{(s.arguments_json or s.detail)[:80]}" for s in result.steps]
    return "\n".join(lines)


# ---- (a) no fault: the same task, the same answer, on either route ------------------------
def test_both_routes_give_the_same_answers_and_steps(mesh):
    requests = hand_built_tasks() + case_tasks()
    with_tools = 0
    for req in requests:
        internal, _ = run_task(mesh.internal, req)
        external, _ = run_task(mesh.external, req)
        assert (internal.route, external.route) == ("internal", "external")
        where = f"task {req.task_id} ({req.family or req.messages[-1].content[:40]!r})"
        assert internal.task_id == external.task_id == req.task_id
        assert (external.ok, external.error_type, external.answer) == \
            (internal.ok, internal.error_type, internal.answer), f"{where}\n{describe(internal)}\n{describe(external)}"
        assert signature(external) == signature(internal), f"{where}\n{describe(internal)}\n{describe(external)}"
        assert all(s.attempts == 1 for s in external.steps) and external.retries == 0
        assert not {internal.error_type, external.error_type} & set(HOP_FAULT_ERRORS)
        with_tools += bool(tool_steps(internal))
        if not req.tools:
            assert [s.kind for s in internal.steps] == ["model"] and internal.ok
    assert with_tools >= 5, "too few tasks reached a tool for the comparison to mean much"
    gated = next(r for r in requests if r.gate.enabled)
    steps = [s.kind for s in run_task(mesh.external, gated)[0].steps]
    assert steps[:4] == ["model", "gate", "model", "tool"]


def test_the_external_route_over_openai_http_takes_the_same_steps(mesh):
    """The controller's model hop over the OpenAI HTTP API (--model-endpoint http://...), to the
    runtime's own HTTP front: the same task cases, the same steps and answers as the internal
    route and the gRPC hop (greedy; a tool call goes up as tool_calls and comes back as the
    same text)."""
    requests = hand_built_tasks() + case_tasks()
    with_tools = 0
    for req in requests:
        internal, _ = run_task(mesh.internal, req)
        over_http, _ = run_task(mesh.external_http, req)
        where = f"task {req.task_id} ({req.family or req.messages[-1].content[:40]!r})"
        assert over_http.route == "external" and over_http.task_id == req.task_id
        assert (over_http.ok, over_http.error_type, over_http.answer) == \
            (internal.ok, internal.error_type, internal.answer), f"{where}\n{describe(internal)}\n{describe(over_http)}"
        assert signature(over_http) == signature(internal), f"{where}\n{describe(internal)}\n{describe(over_http)}"
        with_tools += bool(tool_steps(internal))
    assert with_tools >= 5


# ---- (b) faults: retries and typed errors outside, nothing inside ------------------------
def expected_outcomes(results: list[pb.TaskResult]) -> tuple[list[tuple], int]:
    """What every-2nd-abort + every-3rd-delay must do to these tool steps, run one after the other.

    Attempts are counted per fault key on the tools service, retries included; attempt n fails
    when n is even (aborted UNAVAILABLE) or a multiple of 3 (delayed 900 ms > the 250 ms per-try
    timeout). Returns, per tool step, (attempts, failed, error type if failed), and the count.
    """
    n, out = 0, []

    def fails(k: int) -> bool:
        return k % 2 == 0 or k % 3 == 0

    for result in results:
        for step in tool_steps(result):
            if not fails(n + 1):
                out.append((1, False, None))
                n += 1
            elif not fails(n + 2):
                out.append((2, False, None))
                n += 2
            else:  # a delayed try ends at the per-try deadline (DEADLINE_EXCEEDED) even when also aborted
                out.append((2, True, "tool_timeout" if (n + 2) % 3 == 0 else "tool_hop_failed"))
                n += 2
    return out, n


def test_faults_show_retries_and_typed_errors_outside_and_nothing_inside(mesh):
    key = new_id("faults")
    base = [task("What is 17 * 23?", ["calculator"], "required"),
            task("Who founded Lumen Arc?", ["search"], "required"),
            task("Summarize: tools run on the CPU host. The model runs on the GPU host.",
                 ["summarize"], "summarize"),
            task("Look up the Beacon 5 printer.", ["search"], "search"),
            task("Cafe Luna\n2024-03-07\nLatte 4.50\nTotal 4.50", ["extract_receipt"], "extract_receipt"),
            task("What is 6 * 7?", ["calculator"], "calculator"),
            task("Find the Veyra X2 battery.", ["search"], "required")]
    requests = [faulted(r, key) for r in base]
    external = []
    for req in requests:  # one at a time, so the fault counter's sequence is known
        result, took = run_task(mesh.external, req)
        assert took <= req.deadline_ms / 1e3 + SLACK_S, describe(result)
        assert result.latency_ms <= req.deadline_ms + SLACK_S * 1e3
        external.append(result)

    expected, attempts_seen = expected_outcomes(external)
    steps = [s for r in external for s in tool_steps(r)]
    report = "\n".join(map(describe, external))
    assert [(s.attempts, s.status == "error" and s.error_type in HOP_FAULT_ERRORS,
             s.error_type if s.error_type in HOP_FAULT_ERRORS else None) for s in steps] == expected, report
    assert any(s.attempts == 2 and s.status == "ok" for s in steps), report           # retried, then fine
    failed = [r for r in external if r.error_type in HOP_FAULT_ERRORS]
    assert failed, report                                                               # both tries failed
    for r in failed:
        last = r.steps[-1]
        assert (last.kind, last.status, last.error_type) == ("tool", "error", r.error_type) and not r.ok
        assert r.retries >= 1 and "after 2 attempt(s)" in r.error_message
    assert sum(r.retries for r in external) == sum(a - 1 for a, _, _ in expected)
    # the tools service counted exactly these attempts under the key (retries included)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        lines = [rec for rec in mesh.tools.logs("tool_call") if rec.get("fault_key") == key]
        if len(lines) >= attempts_seen:
            break
        time.sleep(0.05)
    assert sorted(rec["attempt"] for rec in lines) == list(range(1, attempts_seen + 1))
    for rec in lines:
        assert (rec["injected_abort"] == "UNAVAILABLE") == (rec["attempt"] % 2 == 0)
        assert (rec["injected_delay_ms"] == 900) == (rec["attempt"] % 3 == 0)

    # the internal route ignores the fault spec and the policy: no retries, no hop errors
    for req in requests:
        result, took = run_task(mesh.internal, req)
        assert result.route == "internal" and took <= req.deadline_ms / 1e3 + SLACK_S
        assert result.error_type not in HOP_FAULT_ERRORS, describe(result)
        assert result.retries == 0 and all(s.attempts == 1 for s in result.steps)
        assert all(s.error_type not in HOP_FAULT_ERRORS for s in result.steps), describe(result)
        assert tool_steps(result), describe(result)


def test_a_tool_call_never_waits_past_the_tasks_deadline(mesh):
    # every attempt delayed 5 s, no per-try timeout (= the task's remaining time), 3 attempts
    req = faulted(task("Who founded Lumen Arc?", ["search"], "required"), new_id("slow"),
                  abort="off", delay="every=1;ms=5000", attempts=3, per_try_ms=0, deadline_ms=1_200)
    result, took = run_task(mesh.external, req)
    assert took <= 1.2 + SLACK_S, describe(result)
    assert not result.ok and result.error_type in ("tool_timeout", "deadline_exceeded"), describe(result)
    if result.error_type == "tool_timeout":
        assert tool_steps(result)[-1].error_type == "tool_timeout"


def test_every_try_aborted_is_tool_hop_failed_after_the_retries(mesh):
    # (With every-2nd/every-3rd and one retry, tasks run one after another only ever lose both
    # tries to a delay; an abort on every attempt shows the other kind.)
    req = faulted(task("Who founded Lumen Arc?", ["search"], "required"), new_id("abort"),
                  abort="every=1;status=UNAVAILABLE", delay="off", attempts=3)
    result, took = run_task(mesh.external, req)
    assert not result.ok and result.error_type == "tool_hop_failed", describe(result)
    step = tool_steps(result)[-1]
    assert (step.status, step.attempts, result.retries) == ("error", 3, 2)
    assert "UNAVAILABLE" in result.error_message and "injected fault" in result.error_message
    assert took <= req.deadline_ms / 1e3 + SLACK_S
    internal, _ = run_task(mesh.internal, req)
    assert internal.error_type not in HOP_FAULT_ERRORS and tool_steps(internal)[0].attempts == 1


def find_increment_request(mesh) -> pb.TaskRequest:
    """A kv task whose first tool call is an increment: the tiny model picks the op, so look for
    a sampling seed that makes it pick increment (on the internal route, where no fault is)."""
    for seed in range(80):
        req = task("Count one more visit.", ["kv"], "kv", max_steps=2)
        req.sampling.temperature, req.sampling.seed = 1.0, seed
        result, _ = run_task(mesh.internal, req)
        calls = tool_steps(result)
        if calls and calls[0].status == "ok" and json.loads(calls[0].arguments_json)["op"] == "increment":
            return req
    pytest.skip("no seed in 0..79 makes the tiny model call kv increment")


def test_a_retried_kv_increment_is_applied_once(mesh):
    key = new_id("kv")
    req = faulted(find_increment_request(mesh), key)
    # Use up attempts 1-3 under the key, so the task's increment is attempt 4 (aborted, not
    # delayed) and its retry attempt 5 (clean): the first try fails, the retry lands.
    headers = [("x-inloop-fault-abort", ABORT_EVERY_2), ("x-inloop-fault-delay", DELAY_EVERY_3),
               ("x-inloop-fault-key", key)]
    probe = tools_pb2.ToolCallRequest(name="calculator", arguments_json='{"expression": "1+1"}')
    mesh.tools_stub.Call(probe, timeout=5, metadata=headers)                    # attempt 1: fine
    for code, timeout in ((grpc.StatusCode.UNAVAILABLE, 5), (grpc.StatusCode.DEADLINE_EXCEEDED, 0.1)):
        with pytest.raises(grpc.RpcError) as err:                               # 2: aborted, 3: delayed
            mesh.tools_stub.Call(probe, timeout=timeout, metadata=headers)
        assert err.value.code() == code

    result, took = run_task(mesh.external, req)
    assert took <= req.deadline_ms / 1e3 + SLACK_S
    first = tool_steps(result)[0]
    args = json.loads(first.arguments_json)
    assert args["op"] == "increment", describe(result)
    assert (first.attempts, first.status) == (2, "ok"), describe(result)
    # Every increment step that succeeded was applied exactly once, retries or not.
    applied = [json.loads(s.arguments_json) for s in tool_steps(result) if s.status == "ok"]
    applied = [a for a in applied if a["op"] == "increment" and a["key"] == args["key"]]
    stored = mesh.kv_get(req.task_id, args["key"])
    assert stored["found"] and stored["version"] == len(applied), (stored, describe(result))
    assert stored["value"] == pytest.approx(sum(a.get("amount", 1) for a in applied))


# ---- (c) bad input: INVALID_ARGUMENT with a clear message, and the service goes on --------
def bad_tasks() -> list:
    empty = pb.TaskRequest(task_id=new_id(), sampling=pb.SamplingParams(max_tokens=8))
    unknown_tool = task("hi", ["teleport"], "auto")
    not_offered = task("hi", ["search"], "calculator")
    required_without_tools = task("hi", [], "required")
    bad_role = task("hi")
    bad_role.messages[0].role = "wizard"
    return [
        pytest.param(empty, "messages: an empty task", id="empty-task"),
        pytest.param(unknown_tool, "tools: unknown tool(s) teleport", id="unknown-tool"),
        pytest.param(not_offered, "tool_choice: 'calculator' is not", id="tool-choice-not-offered"),
        pytest.param(required_without_tools, "tool_choice: 'required' needs", id="required-without-tools"),
        pytest.param(bad_role, "messages[0].role: unknown role 'wizard'", id="unknown-role"),
    ]


def assert_still_serving(mesh, route: str) -> None:
    result, _ = run_task(mesh.route(route), task("What is 2 + 3?", max_tokens=4))
    assert result.ok and result.route == route


@pytest.mark.parametrize("route", ["internal", "external"])
@pytest.mark.parametrize("req, message", bad_tasks())
def test_bad_task_is_invalid_argument_on_both_routes(mesh, route, req, message):
    with pytest.raises(grpc.RpcError) as err:
        mesh.route(route).RunTask(req, timeout=10)
    assert err.value.code() == INVALID, err.value.details()
    assert err.value.details().startswith(message), err.value.details()
    assert_still_serving(mesh, route)


@pytest.mark.parametrize("name, arguments, message", [
    ("teleport", {"to": "mars"}, "unknown tool 'teleport'; offered tools: search"),
    ("", {}, "the tool name is empty"),
    ("calculator", {"expression": 5}, "calculator.expression must be string, not integer"),
    ("calculator", {}, "calculator: missing required argument(s): expression"),
    ("search", {"query": "x", "colour": "red"}, "search: unknown argument(s): colour"),
    ("kv", {"op": "delete", "key": "a"}, "kv.op must be one of"),
])
def test_bad_tool_call_is_invalid_argument(mesh, name, arguments, message):
    req = tools_pb2.ToolCallRequest(name=name, arguments_json=json.dumps(arguments), session=new_id())
    with pytest.raises(grpc.RpcError) as err:
        mesh.tools_stub.Call(req, timeout=5, metadata=NO_FAULT_HEADERS)
    assert err.value.code() == INVALID and message in err.value.details(), err.value.details()
    ok = mesh.tools_stub.Call(tools_pb2.ToolCallRequest(name="calculator", arguments_json='{"expression": "2+3"}'),
                              timeout=5, metadata=NO_FAULT_HEADERS)
    assert json.loads(ok.result_json)["result"] == 5


def test_oversized_tool_call_is_refused_and_the_service_goes_on(mesh):
    req = tools_pb2.ToolCallRequest(name="summarize", arguments_json=json.dumps({"text": "x" * 5_000_000}))
    with pytest.raises(grpc.RpcError) as err:
        mesh.tools_stub.Call(req, timeout=10, metadata=NO_FAULT_HEADERS)
    assert err.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, INVALID), err.value.details()
    ok = mesh.tools_stub.Call(tools_pb2.ToolCallRequest(name="calculator", arguments_json='{"expression": "1"}'),
                              timeout=5, metadata=NO_FAULT_HEADERS)
    assert json.loads(ok.result_json)["result"] == 1


def test_malformed_fault_spec_is_invalid_argument(mesh):
    req = task("Who founded Lumen Arc?", ["search"], "required")
    req.fault.CopyFrom(pb.FaultSpec(abort="every=banana", key=new_id()))
    with pytest.raises(grpc.RpcError) as err:
        mesh.external.RunTask(req, timeout=10)
    assert err.value.code() == INVALID and "fault" in err.value.details()


# ---- (d) the tools service dies mid-run, then comes back ---------------------------------
def wait_model_steps(mesh, task_ids: list[str], timeout_s: float = 10.0) -> None:
    """Until the runtime has answered each task's first model step (its tool call comes next)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = {rec.get("request_id", "") for rec in mesh.runtime.logs("request_done")}
        if all(any(r.startswith(t + "-") for r in done) for t in task_ids):
            return
        time.sleep(0.05)
    raise AssertionError(f"model steps of {task_ids} not done in {timeout_s} s")


def test_tools_service_killed_mid_run_then_back_on_the_same_port(mesh):
    key = new_id("kill")
    requests = [faulted(task(q, ["search"], "required"), key, abort="off", delay="every=1;ms=4000",
                        per_try_ms=0, deadline_ms=8_000)
                for q in ("Who founded Lumen Arc?", "Where is Haddow?", "Beacon 5 price?", "Veyra X2 battery?")]
    started = time.monotonic()
    calls = [mesh.external.RunTask.future(r, timeout=r.deadline_ms / 1e3 + 10) for r in requests]
    try:
        wait_model_steps(mesh, [r.task_id for r in requests])
        time.sleep(0.3)  # the tool calls reach the tools service and sit in their 4 s delay
        assert not any(c.done() for c in calls)
        port = mesh.tools.port
        mesh.tools.kill()  # SIGKILL: a crash, no graceful stop
        killed = time.monotonic()
        results = [c.result(timeout=15) for c in calls]
    finally:
        for c in calls:
            c.cancel()
    ended = time.monotonic()
    for r in results:
        assert not r.ok and r.error_type in HOP_FAULT_ERRORS, describe(r)
        last = r.steps[-1]
        assert (last.kind, last.name, last.status) == ("tool", "search", "error"), describe(r)
        assert r.latency_ms <= 8_000 + SLACK_S * 1e3
    assert [r.error_type for r in results].count("tool_hop_failed") >= 1
    assert ended - killed < 3.0, "in-flight tasks waited for the dead service instead of failing"
    assert ended - started < 8.0 + SLACK_S

    # while it is down, new tasks fail fast with tool_hop_failed
    down, took = run_task(mesh.external, task("Who founded Lumen Arc?", ["search"], "required"))
    assert down.error_type == "tool_hop_failed" and took < 5, describe(down)

    mesh.tools = tools_process(mesh.log_dir / "tools-restarted.jsonl", port)
    mesh.connect_tools()
    assert mesh.tools.port == port
    deadline, result = time.monotonic() + 20, None
    while time.monotonic() < deadline:  # the controller's channel reconnects on its own
        result, _ = run_task(mesh.external, task("Who founded Lumen Arc?", ["search"], "required"))
        if result.ok:
            break
        time.sleep(0.2)
    assert result is not None and result.ok, describe(result)
    for q in ("What is 17 * 23?", "Where is Haddow?"):
        again, _ = run_task(mesh.external, task(q, ["calculator", "search"], "required"))
        assert again.error_type not in HOP_FAULT_ERRORS and tool_steps(again)[0].status in ("ok", "error")
        assert tool_steps(again)[0].error_type in ("", "tool_error"), describe(again)


def test_setup_write_with_the_tools_service_down_is_a_typed_error(mesh, tmp_path):
    """A task with preloaded kv state whose setup write cannot reach the tools service."""
    dead = tools_process(tmp_path / "dead-tools.jsonl")
    dead.kill()
    # A second controller pointed at the dead tools service, so the shared one stays healthy.
    ctl = controller_process(mesh.runtime.target, dead.target, tmp_path / "ctl.jsonl")
    try:
        stub = controller_pb2_grpc.ControllerStub(insecure_channel(ctl.target))
        req = task("Read the counter `visits`.", ["kv"], "kv", setup_json=json.dumps({"kv": {"visits": 41}}))
        result = stub.RunTask(req, timeout=10)
        assert not result.ok and result.error_type == "tool_hop_failed", describe(result)
    finally:
        ctl.stop()


# ---- last: a payload far over any sane task size (it may keep the runtime busy a while) --
@pytest.mark.parametrize("route", ["internal", "external"])
def test_oversized_task_is_refused(mesh, route):
    req = task("x" * 5_000_000, max_tokens=4)
    started = time.monotonic()
    try:
        result = mesh.route(route).RunTask(req, timeout=3)
    except grpc.RpcError as exc:
        assert exc.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, INVALID), exc.details()
        assert time.monotonic() - started < 2.0
    else:
        pytest.fail(f"accepted: {describe(result)}")

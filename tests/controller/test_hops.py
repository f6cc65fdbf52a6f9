"""The external route's hops (services/controller/hops.py) against tiny in-test gRPC servers.

The servers fail their first N calls with a chosen status (or stall past the per-try
deadline), so each test pins one rule: which statuses are retried, how many attempts a
hop makes, and which typed error a hop that fails for good becomes.
"""
from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

from inloop.services.contract.errors import HopError
from inloop.services.contract.faults import HEADER_ABORT, HEADER_DELAY, HEADER_KEY
from inloop.services.contract.generation import SamplingParams
from inloop.services.contract.task import TaskSpec
from inloop.services.controller.hops import DEFAULT_RETRY_ON, NO_FAULTS, Faults, Policy, RuntimeHop, ToolsHop
from inloop.v1 import runtime_pb2 as pb
from inloop.v1 import runtime_pb2_grpc, tools_pb2, tools_pb2_grpc

FAST = dict(backoff_base_s=0.001, backoff_max_s=0.005)


# ---- Policy / Faults from the wire ---------------------------------------------------
def test_policy_defaults_from_an_empty_route_policy():
    for hop in ("tools", "runtime"):
        p = Policy.from_proto(pb.RoutePolicy(), hop)
        assert p == Policy(0.0, 1, 0.025, 0.25, DEFAULT_RETRY_ON)
    assert DEFAULT_RETRY_ON == ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


def test_policy_reads_each_hops_own_per_try_timeout():
    msg = pb.RoutePolicy(per_try_timeout_ms=250, runtime_per_try_timeout_ms=4000, attempts=3,
                         backoff_base_ms=10, backoff_max_ms=80, retry_on=["UNAVAILABLE"])
    tools, runtime = Policy.from_proto(msg, "tools"), Policy.from_proto(msg, "runtime")
    assert tools == Policy(0.25, 3, 0.01, 0.08, ("UNAVAILABLE",))
    assert runtime == Policy(4.0, 3, 0.01, 0.08, ("UNAVAILABLE",))
    assert Policy.from_proto(msg) == tools  # the default hop is the tools hop


@pytest.mark.parametrize("attempts", [0, -5])
def test_policy_attempts_are_at_least_one(attempts):
    assert Policy.from_proto(pb.RoutePolicy(attempts=attempts)).attempts == 1


def test_faults_from_proto_forward_only_what_is_set():
    assert Faults.from_proto(pb.FaultSpec()).headers == ()
    spec = pb.FaultSpec(abort="every=2;status=UNAVAILABLE", delay="every=3;ms=900", key="run-1")
    assert Faults.from_proto(spec).headers == ((HEADER_ABORT, "every=2;status=UNAVAILABLE"),
                                              (HEADER_DELAY, "every=3;ms=900"), (HEADER_KEY, "run-1"))
    assert Faults.from_proto(pb.FaultSpec(key="k")).headers == ((HEADER_KEY, "k"),)
    assert dict(NO_FAULTS) == {HEADER_ABORT: "off", HEADER_DELAY: "off"}


# ---- tiny servers that fail their first N calls -------------------------------------
class FlakyTools(tools_pb2_grpc.ToolsServicer):
    """Fails the first `fail_first` calls with `status` (or stalls them `stall_s`), then answers."""

    def __init__(self, fail_first: int = 0, status: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
                 stall_s: float = 0.0, result: dict | None = None):
        self.fail_first, self.status, self.stall_s = fail_first, status, stall_s
        self.result = result if result is not None else {"ok": True}
        self.requests: list[tools_pb2.ToolCallRequest] = []
        self.metadata: list[dict] = []
        self.arrivals: list[float] = []

    async def Call(self, request, context):
        self.requests.append(request)
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        self.arrivals.append(time.monotonic())
        if len(self.requests) <= self.fail_first:
            if self.stall_s:
                await asyncio.sleep(self.stall_s)
            else:
                await context.abort(self.status, f"scripted failure {len(self.requests)}")
        return tools_pb2.ToolCallResponse(result_json=json.dumps(self.result), call_id=request.call_id)


class FlakyRuntime(runtime_pb2_grpc.RuntimeServicer):
    def __init__(self, fail_first: int = 0, status: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
                 stall_s: float = 0.0):
        self.fail_first, self.status, self.stall_s = fail_first, status, stall_s
        self.requests: list[pb.GenerateRequest] = []

    async def Generate(self, request, context):
        self.requests.append(request)
        if len(self.requests) <= self.fail_first:
            if self.stall_s:
                await asyncio.sleep(self.stall_s)
            else:
                await context.abort(self.status, f"scripted failure {len(self.requests)}")
        return pb.GenerateResponse(text="Five.", finish_reason="stop", usage=pb.Usage(prompt_tokens=7,
                                   completion_tokens=2), uncertainty=pb.UncertaintySummary(mean_logprob=-0.5))


async def with_server(servicer, body):
    """Serve `servicer` on a free loopback port and run body(channel)."""
    server = grpc.aio.server()
    if isinstance(servicer, tools_pb2_grpc.ToolsServicer):
        tools_pb2_grpc.add_ToolsServicer_to_server(servicer, server)
    else:
        runtime_pb2_grpc.add_RuntimeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            return await body(channel)
    finally:
        await server.stop(0)


def task(deadline_s: float = 10.0) -> TaskSpec:
    return TaskSpec(task_id="task-7", messages=[{"role": "user", "content": "2+3?"}], tools=[],
                    sampling=SamplingParams(max_tokens=8),
                    deadline=time.monotonic() + deadline_s)


def call_tool(servicer, policy: Policy, faults: Faults = Faults(), spec: TaskSpec | None = None):
    """Run one ToolsHop.call; returns (ToolReply or HopError, seconds it took)."""
    async def body(channel):
        hop = ToolsHop(channel, policy, faults)
        started = time.monotonic()
        try:
            out = await hop.call(spec or task(), "calculator", {"expression": "2+3"}, "task-7-1")
        except HopError as exc:
            out = exc
        return out, time.monotonic() - started
    return asyncio.run(with_server(servicer, body))


# ---- ToolsHop ------------------------------------------------------------------------
def test_success_on_the_first_try_sends_the_call_with_its_keys_and_fault_headers():
    server = FlakyTools(result={"expression": "2+3", "result": 5})
    faults = Faults.from_proto(pb.FaultSpec(abort="every=2;status=UNAVAILABLE", key="run-9"))
    reply, _ = call_tool(server, Policy(attempts=3, **FAST), faults)
    assert reply.result == {"expression": "2+3", "result": 5} and reply.attempts == 1
    (req,) = server.requests
    assert (req.name, json.loads(req.arguments_json)) == ("calculator", {"expression": "2+3"})
    # the call id doubles as the idempotency key; the task id is the state namespace
    assert (req.call_id, req.idempotency_key, req.session) == ("task-7-1", "task-7-1", "task-7")
    md = server.metadata[0]
    assert md[HEADER_ABORT] == "every=2;status=UNAVAILABLE" and md[HEADER_KEY] == "run-9"
    assert HEADER_DELAY not in md


@pytest.mark.parametrize("status", ["UNAVAILABLE", "RESOURCE_EXHAUSTED"])
def test_retryable_status_is_retried_until_success(status):
    server = FlakyTools(fail_first=2, status=grpc.StatusCode[status])
    reply, _ = call_tool(server, Policy(attempts=3, **FAST))
    assert reply.attempts == 3 and len(server.requests) == 3
    # every retry carries the same call: same idempotency key, same session, same headers
    assert {(r.idempotency_key, r.session, r.arguments_json) for r in server.requests} == \
        {("task-7-1", "task-7", json.dumps({"expression": "2+3"}))}


def test_attempts_run_out_and_the_hop_fails_with_tool_hop_failed():
    server = FlakyTools(fail_first=10, status=grpc.StatusCode.UNAVAILABLE)
    err, _ = call_tool(server, Policy(attempts=3, **FAST))
    assert isinstance(err, HopError) and err.error_type == "tool_hop_failed" and err.attempts == 3
    assert "UNAVAILABLE" in str(err) and "scripted failure 3" in str(err) and "3 attempt" in str(err)
    assert len(server.requests) == 3


def test_one_attempt_means_no_retry():
    server = FlakyTools(fail_first=1)
    err, _ = call_tool(server, Policy(attempts=1, **FAST))
    assert err.error_type == "tool_hop_failed" and err.attempts == 1 and len(server.requests) == 1


def test_invalid_argument_is_a_tool_error_and_not_retried():
    server = FlakyTools(fail_first=1, status=grpc.StatusCode.INVALID_ARGUMENT)
    err, _ = call_tool(server, Policy(attempts=3, **FAST))
    assert isinstance(err, HopError) and err.error_type == "tool_error" and err.attempts == 1
    assert str(err) == "scripted failure 1"  # the tool's own words go back to the model
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", ["INTERNAL", "PERMISSION_DENIED", "UNKNOWN"])
def test_status_not_in_retry_on_fails_at_once(status):
    server = FlakyTools(fail_first=1, status=grpc.StatusCode[status])
    err, _ = call_tool(server, Policy(attempts=3, **FAST))
    assert err.error_type == "tool_hop_failed" and err.attempts == 1 and status in str(err)
    assert len(server.requests) == 1


def test_retry_on_is_the_policys_list():
    server = FlakyTools(fail_first=1, status=grpc.StatusCode.INTERNAL)
    reply, _ = call_tool(server, Policy(attempts=2, retry_on=("INTERNAL",), **FAST))
    assert reply.attempts == 2
    server = FlakyTools(fail_first=1, status=grpc.StatusCode.UNAVAILABLE)
    err, _ = call_tool(server, Policy(attempts=2, retry_on=("INTERNAL",), **FAST))
    assert err.error_type == "tool_hop_failed" and err.attempts == 1


def test_deadline_exceeded_status_from_the_server_is_retried_then_tool_timeout():
    server = FlakyTools(fail_first=5, status=grpc.StatusCode.DEADLINE_EXCEEDED)
    err, _ = call_tool(server, Policy(attempts=2, **FAST))
    assert err.error_type == "tool_timeout" and err.attempts == 2 and len(server.requests) == 2


def test_per_try_timeout_cuts_a_stalled_try_and_the_retry_succeeds():
    server = FlakyTools(fail_first=1, stall_s=2.0)
    reply, took = call_tool(server, Policy(per_try_timeout_s=0.1, attempts=2, **FAST))
    assert reply.attempts == 2 and len(server.requests) == 2
    assert took < 1.0  # the stalled try was cut at 0.1 s, not waited for
    assert server.arrivals[1] - server.arrivals[0] >= 0.09


def test_every_try_stalled_is_tool_timeout_with_the_attempts_counted():
    server = FlakyTools(fail_first=10, stall_s=2.0)
    err, took = call_tool(server, Policy(per_try_timeout_s=0.1, attempts=3, **FAST))
    assert err.error_type == "tool_timeout" and err.attempts == 3 and "DEADLINE_EXCEEDED" in str(err)
    assert len(server.requests) == 3 and took < 1.5


def call_kv(servicer, policy: Policy, op: str):
    async def body(channel):
        try:
            return await ToolsHop(channel, policy, Faults()).call(task(), "kv", {"op": op, "key": "visits"}, "t-7-1")
        except HopError as exc:
            return exc
    return asyncio.run(with_server(servicer, body))


@pytest.mark.parametrize("op, stall_s, expected", [
    ("increment", 2.0, "tool_outcome_unknown"),  # the write may have landed: say so
    ("get", 2.0, "tool_timeout"),                # a read: nothing to be unsure about
    ("put", 0.0, "tool_hop_failed"),             # refused outright (UNAVAILABLE): not applied
])
def test_a_write_that_ran_out_of_time_has_an_unknown_outcome(op, stall_s, expected):
    err = call_kv(FlakyTools(fail_first=10, stall_s=stall_s), Policy(per_try_timeout_s=0.1, attempts=2, **FAST), op)
    assert isinstance(err, HopError) and err.error_type == expected, err
    if expected == "tool_outcome_unknown":
        assert "idempotency key t-7-1" in str(err) and "may have been applied" in str(err)


def test_no_try_outlives_the_tasks_deadline():
    server = FlakyTools(fail_first=10, stall_s=3.0)
    err, took = call_tool(server, Policy(per_try_timeout_s=5.0, attempts=5, **FAST), spec=task(deadline_s=0.3))
    assert err.error_type == "tool_timeout"
    assert took < 1.0, took  # the per-try timeout (5 s) is capped by the task's remaining 0.3 s


def test_backoff_never_sleeps_past_the_tasks_deadline():
    """With a backoff of 1e6 s, the task still ends at its own deadline (issue: 18 s for a
    1 s deadline, or until the client gave up)."""
    policy = Policy(attempts=3, backoff_base_s=1e6, backoff_max_s=1e6)
    out, took = call_tool(FlakyTools(fail_first=5), policy, spec=task(deadline_s=0.5))
    assert isinstance(out, HopError) and out.error_type == "tool_timeout" and took < 1.5, (out, took)


def test_a_call_the_transport_never_ends_is_cut_at_its_deadline(monkeypatch):
    """Whatever gRPC does (an unsendable header once hung Tools.Call forever), a try ends
    shortly after its deadline and the hop fails typed."""
    class Never:
        def Call(self, req, timeout, metadata):
            return asyncio.get_running_loop().create_future()  # never done: ignores its timeout

    async def run():
        async with grpc.aio.insecure_channel("127.0.0.1:9") as channel:
            hop = ToolsHop(channel, Policy(attempts=2, backoff_base_s=0.01, backoff_max_s=0.01), Faults())
            hop.stub = Never()
            await hop.call(task(deadline_s=0.3), "calculator", {"expression": "1"}, "id")

    started = time.monotonic()
    with pytest.raises(HopError) as err:
        asyncio.run(run())
    assert err.value.error_type == "tool_timeout" and time.monotonic() - started < 0.3 + 2 * 0.25 + 0.5


def test_a_task_already_past_its_deadline_makes_no_call():
    server = FlakyTools()
    err, _ = call_tool(server, Policy(attempts=3, **FAST), spec=task(deadline_s=-1.0))
    assert err.error_type == "tool_timeout" and err.attempts == 0 and server.requests == []


def test_setup_writes_carry_no_faults_and_no_idempotency_key():
    server = FlakyTools()

    async def body(channel):
        hop = ToolsHop(channel, Policy(attempts=3, **FAST),
                       Faults.from_proto(pb.FaultSpec(abort="every=1;status=UNAVAILABLE", key="k")))
        await hop.setup(task(), "kv", {"op": "put", "key": "a", "value": 1})
    asyncio.run(with_server(server, body))
    (req,) = server.requests
    assert (req.name, req.session, req.idempotency_key) == ("kv", "task-7", "")
    assert json.loads(req.arguments_json) == {"op": "put", "key": "a", "value": 1}
    md = server.metadata[0]
    assert md[HEADER_ABORT] == "off" and md[HEADER_DELAY] == "off" and HEADER_KEY not in md


# ---- RuntimeHop: the same rules with the runtime's error names ------------------------
def model_step(servicer, policy: Policy, spec: TaskSpec | None = None):
    async def body(channel):
        hop = RuntimeHop(channel, policy, "tiny")
        try:
            return await hop.step(spec or task(), [{"role": "user", "content": "2+3?"}], "auto")
        except HopError as exc:
            return exc
    return asyncio.run(with_server(servicer, body))


def test_runtime_hop_retries_and_converts_the_reply():
    server = FlakyRuntime(fail_first=1)
    reply = model_step(server, Policy(attempts=2, **FAST))
    assert (reply.text, reply.finish_reason, reply.prompt_tokens, reply.completion_tokens, reply.attempts) == \
        ("Five.", "stop", 7, 2, 2)
    assert reply.uncertainty.mean_logprob == -0.5 and reply.uncertainty.min_margin == 0.0
    req = server.requests[0]
    assert req.tool_choice == "auto" and req.sampling.max_tokens == 8 and req.sampling.return_uncertainty
    assert not req.sampling.HasField("seed") and req.request_id.startswith("task-7-")


@pytest.mark.parametrize("status, stall_s, error_type, attempts", [
    (grpc.StatusCode.UNAVAILABLE, 0.0, "runtime_hop_failed", 2),
    (grpc.StatusCode.INVALID_ARGUMENT, 0.0, "runtime_hop_failed", 1),
    (grpc.StatusCode.OK, 2.0, "runtime_timeout", 2),
])
def test_runtime_hop_failures_are_typed(status, stall_s, error_type, attempts):
    server = FlakyRuntime(fail_first=10, status=status, stall_s=stall_s)
    err = model_step(server, Policy(per_try_timeout_s=0.1, attempts=2, **FAST))
    assert isinstance(err, HopError) and err.error_type == error_type and err.attempts == attempts

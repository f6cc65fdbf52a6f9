"""The external route's ports: gRPC clients with a deadline per try and retries (tenacity).

Vocabulary as Envoy/Istio use it: `attempts` total tries, `per_try_timeout`, `retry_on`
status names, exponential backoff with full jitter between `backoff_base` and
`backoff_max`. No try outlives the task's own deadline. The task's fault spec goes to the
tools service in metadata headers (services/contract/faults.py names them), so a caller
switches fault profiles per request without restarting anything.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import grpc
from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt, wait_random_exponential

from inloop.services.common import metrics
from inloop.services.common.generate_convert import sampling_to_proto, summary_from_proto, tool_to_proto
from inloop.services.contract.errors import HopError, TaskError
from inloop.services.contract.faults import HEADER_ABORT, HEADER_DELAY, HEADER_KEY
from inloop.services.contract.task import ModelReply, TaskSpec, ToolReply
from inloop.services.contract.tool_schema import TOOL_SCHEMAS
from inloop.v1 import runtime_pb2 as pb
from inloop.v1 import runtime_pb2_grpc, tools_pb2, tools_pb2_grpc

DEFAULT_RETRY_ON = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
TRANSPORT_GRACE_S = 0.25  # past a try's deadline, how long we wait for gRPC to end it itself


@dataclass(frozen=True)
class Policy:
    per_try_timeout_s: float = 0.0     # 0 = the task's remaining time
    attempts: int = 1
    backoff_base_s: float = 0.025
    backoff_max_s: float = 0.25
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON

    @classmethod
    def from_proto(cls, p: pb.RoutePolicy, hop: str = "tools") -> "Policy":
        per_try = p.per_try_timeout_ms if hop == "tools" else p.runtime_per_try_timeout_ms
        return cls(per_try / 1e3, max(p.attempts, 1),
                   (p.backoff_base_ms or 25.0) / 1e3, (p.backoff_max_ms or 250.0) / 1e3,
                   tuple(p.retry_on) or DEFAULT_RETRY_ON)


@dataclass(frozen=True)
class Faults:
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @classmethod
    def from_proto(cls, f: pb.FaultSpec) -> "Faults":
        pairs = ((HEADER_ABORT, f.abort), (HEADER_DELAY, f.delay), (HEADER_KEY, f.key))
        return cls(tuple((k, v) for k, v in pairs if v))


NO_FAULTS = ((HEADER_ABORT, "off"), (HEADER_DELAY, "off"))  # environment writes are not under test


class CallFailed(Exception):
    """A call over a non-gRPC transport (OpenAI HTTP) that failed, with the gRPC status it
    amounts to, so one retry policy (`retry_on` status names) serves every transport."""

    def __init__(self, code: grpc.StatusCode, detail: str):
        super().__init__(detail)
        self._code, self._detail = code, detail

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._detail


class _Hop:
    """Retry one call per the policy; returns (response, attempts) or raises HopError."""

    hop = "hop"  # the `hop` label of inloop_hop_duration_seconds / inloop_hop_retries_total
    # what a hop's failure is called in the task result (each hop sets its own)
    timeout_type: TaskError
    failed_type: TaskError
    invalid_type: TaskError  # INVALID_ARGUMENT: the far side refused the request itself

    def __init__(self, policy: Policy):
        self.policy = policy

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, (grpc.RpcError, CallFailed)) and exc.code().name in self.policy.retry_on

    async def run(self, task: TaskSpec, call):
        attempts = 0
        last: grpc.RpcError | None = None
        self.unsure = False  # some try ended by a deadline: the far side may have done the work
        p = self.policy
        backoff = wait_random_exponential(multiplier=p.backoff_base_s, max=p.backoff_max_s)
        retrying = AsyncRetrying(stop=stop_after_attempt(p.attempts), reraise=True,
                                 # no sleep outlives the task: the next try then finds no time left
                                 wait=lambda state: min(backoff(state), max(task.remaining_s(), 0.0)),
                                 retry=retry_if_exception(self._retryable))
        try:
            async for attempt in retrying:
                with attempt:
                    remaining = task.remaining_s()
                    if remaining <= 0:
                        raise HopError(self.timeout_type, "the task's deadline passed", attempts)
                    attempts += 1
                    timeout = min(p.per_try_timeout_s, remaining) if p.per_try_timeout_s > 0 else remaining
                    try:
                        return await self._bounded(call(timeout), timeout, attempts), attempts
                    except (grpc.RpcError, CallFailed) as exc:
                        last = exc
                        self.unsure |= exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
                        raise
        except (grpc.RpcError, CallFailed) as exc:
            raise self._hop_error(exc, attempts) from None
        except RetryError:  # not raised with reraise=True, kept for safety
            raise self._hop_error(last, attempts) from None

    async def _bounded(self, pending, timeout: float, attempts: int):
        """One try, ended by us when the transport has not ended it shortly after its own
        deadline (a call that never completes must not hold the task past its deadline)."""
        try:
            return await asyncio.wait_for(self._timed(pending, retry=attempts > 1), timeout + TRANSPORT_GRACE_S)
        except asyncio.TimeoutError:
            self.unsure = True
            raise HopError(self.timeout_type, f"no answer within {timeout:.3f} s (the try's deadline); the "
                                              "call was abandoned", attempts) from None

    async def _timed(self, pending, retry: bool = False):
        """Await one call over the hop, recording its duration and outcome (a cancel is an error)."""
        started, ok = time.perf_counter(), False
        try:
            response = await pending
            ok = True
            return response
        finally:
            metrics.observe_hop_call(self.hop, time.perf_counter() - started, ok, retry)

    def _hop_error(self, exc: grpc.RpcError | None, attempts: int) -> HopError:
        code = exc.code() if exc is not None else grpc.StatusCode.UNKNOWN
        detail = f"{code.name}: {exc.details() if exc is not None else ''} (after {attempts} attempt(s))"
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return HopError(self.invalid_type, exc.details(), attempts)
        kind = self.timeout_type if code == grpc.StatusCode.DEADLINE_EXCEEDED else self.failed_type
        return HopError(kind, detail, attempts)


class RuntimeHop(_Hop):
    provider = "inloop"  # an OpenAI-compatible upstream would name its own
    hop = "runtime"
    timeout_type, failed_type = TaskError.RUNTIME_TIMEOUT, TaskError.RUNTIME_HOP_FAILED
    invalid_type = TaskError.RUNTIME_HOP_FAILED

    def __init__(self, channel: grpc.aio.Channel, policy: Policy, model_name: str = "model"):
        super().__init__(policy)
        self.stub = runtime_pb2_grpc.RuntimeStub(channel)
        self.name = model_name

    async def step(self, task: TaskSpec, messages: list[dict], tool_choice: str) -> ModelReply:
        sampling = sampling_to_proto(task.sampling)
        sampling.return_uncertainty = True  # the gate and the reports read it on every step
        req = pb.GenerateRequest(messages=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in messages],
                                 sampling=sampling, tools=[tool_to_proto(t) for t in task.tools],
                                 tool_choice=tool_choice, request_id=f"{task.task_id}-{time.monotonic_ns()}")
        resp, attempts = await self.run(task, lambda timeout: self.stub.Generate(req, timeout=timeout))
        summary = summary_from_proto(resp.uncertainty) if resp.HasField("uncertainty") else None
        return ModelReply(resp.text, resp.finish_reason, resp.usage.prompt_tokens, resp.usage.completion_tokens,
                          summary, attempts)


def writes(name: str, arguments: dict) -> bool:
    """Whether this call may change state (a kv put or increment)."""
    schema = TOOL_SCHEMAS.get(name)
    return bool(schema and schema.writes and arguments.get("op") != "get")


class ToolsHop(_Hop):
    # tool_error: the tool refused the call (bad arguments...); the loop tells the model why
    hop = "tools"
    timeout_type, failed_type, invalid_type = TaskError.TOOL_TIMEOUT, TaskError.TOOL_HOP_FAILED, TaskError.TOOL_ERROR

    def __init__(self, channel: grpc.aio.Channel, policy: Policy, faults: Faults):
        super().__init__(policy)
        self.stub = tools_pb2_grpc.ToolsStub(channel)
        self.faults = faults

    async def call(self, task: TaskSpec, name: str, arguments: dict, call_id: str) -> ToolReply:
        # The call id doubles as the idempotency key: every retry of this call carries it,
        # so a write the tools service already applied is answered from its log, not redone.
        req = tools_pb2.ToolCallRequest(name=name, arguments_json=json.dumps(arguments), call_id=call_id,
                                        idempotency_key=call_id, session=task.task_id)
        try:
            resp, attempts = await self.run(
                task, lambda timeout: self.stub.Call(req, timeout=timeout, metadata=self.faults.headers))
        except HopError as exc:
            if self.unsure and exc.error_type != TaskError.TOOL_ERROR and writes(name, arguments):
                # A write whose try ran out of time may have been applied (the tools service keeps
                # its result under the idempotency key): say so, rather than "not applied".
                what = f"{name} {arguments.get('op')} of {str(arguments.get('key'))[:60]!r}"
                raise HopError(TaskError.TOOL_OUTCOME_UNKNOWN,
                               f"{what}: no answer in time; it may have been applied (idempotency key {call_id}); "
                               f"{exc}", exc.attempts) from None
            raise
        return ToolReply(json.loads(resp.result_json), attempts)

    async def setup(self, task: TaskSpec, name: str, arguments: dict) -> None:
        req = tools_pb2.ToolCallRequest(name=name, arguments_json=json.dumps(arguments), session=task.task_id)
        timeout = max(task.remaining_s(), 0.001)
        try:
            await self._bounded(self.stub.Call(req, timeout=timeout, metadata=NO_FAULTS), timeout, 1)
        except grpc.RpcError as exc:
            raise self._hop_error(exc, 1) from None

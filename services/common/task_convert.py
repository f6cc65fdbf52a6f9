"""TaskRequest/TaskResult (wire) <-> the agent loop's TaskSpec/TaskOutcome.

Both servers (Runtime.RunTask, Controller.RunTask) validate and convert with these same
functions, so a task means the same thing on either route and bad input gets the same
INVALID_ARGUMENT message on both.
"""
from __future__ import annotations

import json
import math
import time

from inloop.services.common.gate_defaults import default_gate
from inloop.services.common.generate_convert import summary_to_proto
from inloop.services.contract import validation
from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.faults import parse_abort, parse_delay
from inloop.services.contract.generation import ChatMessage, SamplingParams, check_messages
from inloop.services.contract.task import GateConfig, TaskOutcome, TaskSpec, new_task_id
from inloop.services.contract.tool_schema import TOOL_SCHEMAS
from inloop.v1 import runtime_pb2 as pb

DEFAULT_MAX_STEPS = 4
MAX_STEPS_LIMIT = 16
DEFAULT_DEADLINE_MS = 60_000.0
MAX_SETUP_CHARS = 16_384
MAX_TASK_ID_CHARS = 128  # it names the task's KV session, tool namespace and idempotency keys


def _sampling(msg: pb.SamplingParams) -> SamplingParams:
    sp = SamplingParams(
        max_tokens=msg.max_tokens if msg.HasField("max_tokens") else 96,
        temperature=msg.temperature, top_k=msg.top_k,
        top_p=msg.top_p if msg.HasField("top_p") else 1.0,
        seed=msg.seed if msg.HasField("seed") else None, stop=tuple(msg.stop),
        return_uncertainty=True,  # the gate and the reports read it on every step
    )
    sp.validate()
    return sp


def _gate(gate: pb.GateConfig) -> GateConfig:
    """Threshold 0 means "the calibrated default" (services/common/gate_defaults.py): neither
    statistic has a useful gate at exactly 0 (every logprob is <= 0; a margin of 0 never gates)."""
    statistic, threshold = gate.statistic, gate.threshold
    if gate.enabled and threshold == 0:
        statistic, threshold, _ = default_gate(statistic)
    return GateConfig(gate.enabled, statistic or "mean_logprob", threshold, gate.tool or "search")


def _check_fault(fault: pb.FaultSpec) -> None:
    validation.header_text("fault.key", fault.key)
    for name, value, parse in (("abort", fault.abort, parse_abort), ("delay", fault.delay, parse_delay)):
        if value:
            validation.header_text(f"fault.{name}", value)
            try:
                parse(value, where=f"fault.{name}")
            except ValueError as exc:
                raise InvalidRequest(f"fault.{name}", str(exc)) from None


def _check_policy(policy: pb.RoutePolicy) -> None:
    """The external route's hop policy; checked on both routes, so a task is valid or not
    whichever route it is sent to."""
    for name in ("per_try_timeout_ms", "runtime_per_try_timeout_ms", "backoff_base_ms", "backoff_max_ms"):
        validation.milliseconds(f"policy.{name}", getattr(policy, name))
    if not 0 <= policy.attempts <= validation.MAX_ATTEMPTS:
        raise InvalidRequest("policy.attempts", f"must be in [1, {validation.MAX_ATTEMPTS}] (0 = 1)")
    validation.retry_on("policy.retry_on", list(policy.retry_on))


def task_from_proto(req: pb.TaskRequest, route_deadline_s: float | None = None) -> TaskSpec:
    """Validate and convert; raises InvalidRequest naming the field."""
    if not req.messages:
        raise InvalidRequest("messages", "an empty task: give at least one user message")
    check_messages([ChatMessage(m.role, m.content) for m in req.messages])
    if req.messages[-1].role != "user":
        raise InvalidRequest("messages", "a task's messages must end with a user message")
    unknown = [t for t in req.tools if t not in TOOL_SCHEMAS]
    if unknown:
        raise InvalidRequest("tools", f"unknown tool(s) {', '.join(unknown)}; offered: {', '.join(TOOL_SCHEMAS)}")
    choice = req.tool_choice or ("auto" if req.tools else "none")
    if choice not in ("none", "auto", "required") and choice not in req.tools:
        raise InvalidRequest("tool_choice", f"{choice!r} is not none, auto, required or an offered tool")
    if choice == "required" and not req.tools:
        raise InvalidRequest("tool_choice", "'required' needs at least one tool in `tools`")
    if not 0 <= req.max_steps <= MAX_STEPS_LIMIT:
        raise InvalidRequest("max_steps", f"must be in [1, {MAX_STEPS_LIMIT}] (0 = {DEFAULT_MAX_STEPS})")
    validation.milliseconds("deadline_ms", req.deadline_ms)
    validation.header_text("task_id", req.task_id, MAX_TASK_ID_CHARS)
    if len(req.setup_json) > MAX_SETUP_CHARS:
        raise InvalidRequest("setup_json", f"over {MAX_SETUP_CHARS} characters")
    setup = validation.task_setup("setup_json", validation.parse_json("setup_json", req.setup_json)) \
        if req.setup_json else {}
    _check_fault(req.fault)
    _check_policy(req.policy)
    gate = req.gate
    if gate.enabled and gate.statistic not in ("", "mean_logprob", "min_margin"):
        raise InvalidRequest("gate.statistic", "use mean_logprob or min_margin")
    if not math.isfinite(gate.threshold):
        raise InvalidRequest("gate.threshold", f"must be a finite number, got {gate.threshold}")
    try:
        sampling = _sampling(req.sampling)
    except InvalidRequest as exc:
        raise exc.within("sampling") from None
    budget_s = (req.deadline_ms or DEFAULT_DEADLINE_MS) / 1e3
    if route_deadline_s is not None:  # the caller's gRPC deadline bounds the task too
        budget_s = min(budget_s, route_deadline_s)
    return TaskSpec(
        task_id=req.task_id or new_task_id(),
        messages=[{"role": m.role, "content": m.content} for m in req.messages],
        tools=[TOOL_SCHEMAS[name].openai() for name in req.tools],
        tool_choice=choice, max_steps=req.max_steps or DEFAULT_MAX_STEPS, sampling=sampling,
        deadline=time.monotonic() + budget_s,
        gate=_gate(gate),
        setup=setup, family=req.family,
    )


def outcome_to_proto(outcome: TaskOutcome, route: str, family: str = "", trace_id: str = "") -> pb.TaskResult:
    steps = []
    for s in outcome.steps:
        step = pb.TaskStep(kind=s.kind, name=s.name, attempts=s.attempts, latency_ms=s.latency_ms,
                           status=s.status, error_type=s.error_type, detail=s.detail, text=s.text,
                           start_ms=s.start_ms,
                           arguments_json=json.dumps(s.arguments) if s.arguments is not None else "")
        if s.kind == "model":
            step.usage.CopyFrom(pb.Usage(prompt_tokens=s.prompt_tokens, completion_tokens=s.completion_tokens))
            if s.uncertainty is not None:
                step.uncertainty.CopyFrom(summary_to_proto(s.uncertainty))
        steps.append(step)
    result = pb.TaskResult(task_id=outcome.task_id, route=route, ok=outcome.ok, answer=outcome.answer,
                           steps=steps, trace_id=trace_id, error_type=outcome.error_type,
                           error_message=outcome.error_message, latency_ms=outcome.latency_ms,
                           retries=outcome.retries, family=family, finish_reason=outcome.finish_reason)
    summary = outcome.uncertainty
    if summary is not None:
        result.uncertainty.CopyFrom(summary_to_proto(summary))
    return result

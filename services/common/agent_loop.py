"""The agent loop, written once for both routes, against two ports.

    model step -> parse <tool_call> -> call the tool -> append its result -> model step ...

until the model answers in text or the step limit is reached. The internal route plugs in
in-process adapters (the runtime's engine, tools as function calls); the external route
plugs in gRPC clients with deadlines and retries (the controller). Any difference the
loadgen measures between the routes then comes from the transport, never from the loop.

Spans follow the OpenTelemetry GenAI conventions: `invoke_agent {route}` for the task,
`chat {model}` for each model step and `execute_tool {tool}` for each tool call (and for
environment writes to tool state). On the external route the gRPC client spans of each
attempt (and the runtime's and tools service's server spans) nest under them, which is what
the loadgen's hop analysis reads.
"""
from __future__ import annotations

import json
import time
import uuid

from opentelemetry import trace

from inloop.services.common.telemetry import tracer
from inloop.services.contract.errors import HopError, TaskError, ToolCallParseError
from inloop.services.contract.ports import ModelPort, ToolPort
from inloop.services.contract.task import Step, TaskOutcome, TaskSpec, ToolReply
from inloop.services.contract.tool_calls import parse_tool_call, tool_result_content


class _Run:
    """Bookkeeping of one task run: steps with their offsets and latencies."""

    def __init__(self, task: TaskSpec):
        self.task = task
        self.t0 = time.monotonic()
        self.steps: list[Step] = []
        self.finish_reason = ""  # the last model step's
        # Part of every call id, which is the call's idempotency key: two runs that share a
        # task_id must not share keys (the second run's writes would be answered as replays).
        self.run_id = uuid.uuid4().hex[:8]

    def begin(self) -> float:
        return time.monotonic()

    def add(self, started: float, step: Step) -> Step:
        step.start_ms = (started - self.t0) * 1e3
        step.latency_ms = (time.monotonic() - started) * 1e3
        self.steps.append(step)
        return step

    def done(self, ok: bool, answer: str = "", error_type: str = "", message: str = "") -> TaskOutcome:
        return TaskOutcome(self.task.task_id, ok, answer, self.steps, error_type, message,
                           (time.monotonic() - self.t0) * 1e3, self.finish_reason)


def _tool_span(name: str, call_id: str = "", scripted: bool = False):
    attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name, "gen_ai.tool.type": "function"}
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    if scripted:  # an environment write (preloaded state, another writer), not the model's call
        attributes["inloop.scripted"] = True
    return tracer().start_as_current_span(f"execute_tool {name}", attributes=attributes)


async def _scripted_write(task: TaskSpec, tools: ToolPort, args: dict) -> None:
    with _tool_span("kv", scripted=True) as span:
        try:
            await tools.setup(task, "kv", args)
        except HopError as exc:
            _failed(span, exc.error_type)
            raise


async def apply_initial_state(task: TaskSpec, tools: ToolPort) -> None:
    for key, value in (task.setup.get("kv") or {}).items():
        await _scripted_write(task, tools, {"op": "put", "key": key, "value": value})


async def _apply_changes(task: TaskSpec, tools: ToolPort, tool_call_number: int) -> None:
    for change in task.setup.get("changes") or []:
        if change.get("before_tool_call") == tool_call_number:
            await _scripted_write(task, tools, {k: change[k] for k in ("op", "key", "value", "amount") if k in change})


def _failed(span: trace.Span, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(trace.Status(trace.StatusCode.ERROR, error_type))


async def run_agent(task: TaskSpec, model: ModelPort, tools: ToolPort, route: str = "") -> TaskOutcome:
    """Run one task; `route` ("internal" | "external") names its `invoke_agent` span."""
    attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "inloop",
                  "gen_ai.provider.name": model.provider,
                  "gen_ai.conversation.id": task.task_id, "gen_ai.request.model": model.name,
                  "inloop.route": route, "inloop.family": task.family}
    with tracer().start_as_current_span(f"invoke_agent {route or 'task'}", attributes=attributes) as span:
        outcome = await _run_loop(task, model, tools, route)
        span.set_attribute("inloop.ok", outcome.ok)
        span.set_attribute("inloop.steps", len(outcome.steps))
        span.set_attribute("inloop.retries", outcome.retries)
        span.set_attribute("gen_ai.usage.input_tokens", sum(s.prompt_tokens for s in outcome.steps))
        span.set_attribute("gen_ai.usage.output_tokens", sum(s.completion_tokens for s in outcome.steps))
        if not outcome.ok:
            _failed(span, outcome.error_type)
        return outcome


async def _model_step(task: TaskSpec, model: ModelPort, messages: list[dict], choice: str, route: str):
    """One model step inside its `chat {model}` span (CLIENT when the model is across the network)."""
    kind = trace.SpanKind.CLIENT if route == "external" else trace.SpanKind.INTERNAL
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model.name,
                  "gen_ai.provider.name": model.provider, "inloop.tool_choice": choice}
    attributes["gen_ai.request.max_tokens"] = task.sampling.max_tokens
    attributes["gen_ai.request.temperature"] = task.sampling.temperature
    with tracer().start_as_current_span(f"chat {model.name}", kind=kind, attributes=attributes,
                                        record_exception=False, set_status_on_exception=False) as span:
        try:
            reply = await model.step(task, messages, choice)
        except HopError as exc:
            span.set_attribute("inloop.attempts", exc.attempts)
            _failed(span, exc.error_type)
            raise
        span.set_attribute("inloop.attempts", reply.attempts)
        span.set_attribute("gen_ai.usage.input_tokens", reply.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", reply.completion_tokens)
        span.set_attribute("gen_ai.response.finish_reasons", [reply.finish_reason])
        return reply


async def _tool_call(task: TaskSpec, tools: ToolPort, name: str, arguments: dict, call_id: str) -> ToolReply:
    with _tool_span(name, call_id) as span:
        try:
            out = await tools.call(task, name, arguments, call_id)
        except HopError as exc:
            span.set_attribute("inloop.attempts", exc.attempts)
            _failed(span, exc.error_type)
            raise
        span.set_attribute("inloop.attempts", out.attempts)
        return out


async def _run_loop(task: TaskSpec, model: ModelPort, tools: ToolPort, route: str) -> TaskOutcome:
    run = _Run(task)
    messages = [dict(m) for m in task.messages]
    offered = {t["function"]["name"] for t in task.tools}
    choice, gated, tool_calls = task.tool_choice, False, 0
    try:
        await apply_initial_state(task, tools)
    except HopError as exc:
        return run.done(False, error_type=exc.error_type, message=f"setting up the task's tool state: {exc}")
    for _ in range(task.max_steps):
        if task.remaining_s() <= 0:
            return run.done(False, error_type=TaskError.DEADLINE_EXCEEDED, message="the task's deadline passed")
        started = run.begin()
        try:
            reply = await _model_step(task, model, messages, choice, route)
        except HopError as exc:
            run.add(started, Step("model", model.name, "error", exc.error_type, str(exc), exc.attempts))
            return run.done(False, error_type=exc.error_type, message=str(exc))
        step = run.add(started, Step("model", model.name, attempts=reply.attempts, text=reply.text,
                                     prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                                     uncertainty=reply.uncertainty))
        run.finish_reason = reply.finish_reason
        try:
            call = parse_tool_call(reply.text, task.tools) if choice != "none" else None
        except ToolCallParseError as exc:
            why = str(exc) if reply.finish_reason != "length" else \
                f"the call was cut off at max_tokens ({reply.completion_tokens} tokens): {exc}"
            step.status, step.error_type, step.detail = "error", TaskError.BAD_TOOL_CALL, why
            return run.done(False, error_type=TaskError.BAD_TOOL_CALL, message=why)
        if call is None and choice not in ("none", "auto"):  # a forced call that did not come
            step.status, step.error_type = "error", TaskError.BAD_TOOL_CALL
            if reply.finish_reason == "length":  # ours: the grammar ran out of budget mid-call
                step.detail = (f"no complete call to {choice} within max_tokens ({reply.completion_tokens} "
                               f"tokens): raise max_tokens (or the server does not enforce tool_choice)")
            else:  # an upstream that does not enforce tool_choice answered in text
                step.detail = (f"tool_choice asked for a call to {choice} but the model answered in text "
                               f"(finish_reason {reply.finish_reason}); its server does not enforce tool_choice")
            return run.done(False, error_type=TaskError.BAD_TOOL_CALL, message=step.detail)
        if call is None:
            stat = task.gate.statistic_of(reply.uncertainty)
            if (task.gate.enabled and not gated and task.gate.tool in offered and stat is not None
                    and stat < task.gate.threshold):
                gated, choice = True, task.gate.tool
                trace.get_current_span().add_event("gate", {"inloop.statistic": task.gate.statistic,
                                                            "inloop.value": stat, "inloop.threshold": task.gate.threshold})
                run.add(run.begin(), Step("gate", task.gate.statistic, detail=(
                    f"{task.gate.statistic}={stat:.3f} < {task.gate.threshold:.3f}: branch to {task.gate.tool}")))
                continue
            return run.done(True, answer=reply.text.strip())
        if call.name not in offered:
            step.status, step.error_type = "error", TaskError.BAD_TOOL_CALL
            step.detail = f"the model called {call.name!r}, which is not offered"
            return run.done(False, error_type=TaskError.BAD_TOOL_CALL, message=step.detail)
        messages.append({"role": "assistant", "content": reply.text})
        tool_calls += 1
        started = run.begin()
        try:
            await _apply_changes(task, tools, tool_calls)
        except HopError as exc:
            run.add(started, Step("tool", call.name, "error", exc.error_type, str(exc), exc.attempts))
            return run.done(False, error_type=exc.error_type, message=f"a scripted state change failed: {exc}")
        call_id = f"{task.task_id}-{run.run_id}-{tool_calls}"
        try:
            out = await _tool_call(task, tools, call.name, call.arguments, call_id)
        except HopError as exc:
            run.add(started, Step("tool", call.name, "error", exc.error_type, str(exc), exc.attempts,
                                  arguments=call.arguments))
            if exc.error_type != TaskError.TOOL_ERROR:
                return run.done(False, error_type=exc.error_type, message=str(exc))
            content = json.dumps({"error": str(exc)})  # the tool refused: tell the model, go on
        else:
            run.add(started, Step("tool", call.name, attempts=out.attempts, arguments=call.arguments))
            content = tool_result_content(out.result)
        messages.append({"role": "tool", "content": content})
        choice = "auto"  # after a tool result the model may answer (a forced call would repeat forever)
    return run.done(False, error_type=TaskError.MAX_STEPS, message=f"no answer after {task.max_steps} model steps")

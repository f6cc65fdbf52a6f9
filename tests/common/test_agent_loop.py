"""The one agent loop (services/common/agent_loop.py), driven through its two ports.

The ports are the loop's boundary: the fakes here stand below it (a scripted model, a tool
table), so each test says exactly what the model "wrote" and what the tools answered, and
checks what the loop made of it: the steps, the messages it sent, the typed errors.
"""
from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from inloop.services.common.agent_loop import run_agent
from inloop.services.contract.errors import HopError
from inloop.services.contract.generation import UncertaintySummary
from inloop.services.contract.task import GateConfig, ModelReply, TaskSpec, ToolReply
from inloop.services.contract.tool_calls import ToolCall, tool_result_content


# ---- test doubles of the two ports ----------------------------------------------------
def tool_def(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "description": name,
                                             "parameters": {"type": "object", "properties": {}}}}


def call_text(name: str, **arguments) -> str:
    return ToolCall(name, arguments).to_text()


# an answer nobody would doubt; answer(..., mean_logprob=-2.5) changes what the test is about
SURE = dict(mean_logprob=0.0, min_logprob=0.0, mean_entropy=0.0, max_entropy=0.0, mean_margin=1.0, min_margin=1.0)


def answer(text: str, **uncertainty) -> ModelReply:
    return ModelReply(text, "stop", 10, 3, UncertaintySummary(**{**SURE, **uncertainty}) if uncertainty else None)


class FakeModel:
    """Plays back scripted replies (a ModelReply, a str, or an exception to raise)."""

    name = "fake-model"
    provider = "test"

    def __init__(self, *replies, events: list | None = None, delay_s: float = 0.0):
        self.replies = list(replies)
        self.calls: list[tuple[list[dict], str]] = []
        self.events = events if events is not None else []
        self.delay_s = delay_s

    async def step(self, task: TaskSpec, messages: list[dict], tool_choice: str) -> ModelReply:
        self.calls.append(([dict(m) for m in messages], tool_choice))
        self.events.append(("model", tool_choice))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, BaseException):
            raise reply
        return ModelReply(reply, "stop", 10, 3) if isinstance(reply, str) else reply

    @property
    def choices(self) -> list[str]:
        return [choice for _, choice in self.calls]


class FakeTools:
    """A tool table: name -> result dict, callable(arguments) -> dict, or an exception."""

    def __init__(self, table: dict | None = None, events: list | None = None):
        self.table = table or {}
        self.calls: list[tuple[str, dict, str]] = []
        self.setups: list[tuple[str, dict]] = []
        self.events = events if events is not None else []

    async def call(self, task: TaskSpec, name: str, arguments: dict, call_id: str) -> ToolReply:
        self.calls.append((name, dict(arguments), call_id))
        self.events.append(("tool", name))
        out = self.table[name]
        if isinstance(out, BaseException):
            raise out
        if isinstance(out, ToolReply):
            return out
        return ToolReply(out(arguments) if callable(out) else out)

    async def setup(self, task: TaskSpec, name: str, arguments: dict) -> None:
        self.setups.append((name, dict(arguments)))
        self.events.append(("setup", name, dict(arguments)))


def make_task(tools=("calculator",), tool_choice="auto", max_steps=4, deadline_s=30.0, **kw) -> TaskSpec:
    return TaskSpec(task_id="t-1", messages=[{"role": "system", "content": "Be brief."},
                                             {"role": "user", "content": "What is 2+3?"}],
                    tools=[tool_def(n) for n in tools], tool_choice=tool_choice, max_steps=max_steps,
                    deadline=time.monotonic() + deadline_s, **kw)


def run(task: TaskSpec, model, tools):
    return asyncio.run(run_agent(task, model, tools))


def kinds(outcome) -> list[tuple[str, str]]:
    return [(s.kind, s.name) for s in outcome.steps]


# ---- the happy paths -----------------------------------------------------------------
def test_answer_on_the_first_step():
    model, tools = FakeModel(answer("  Five.\n", mean_logprob=-0.2)), FakeTools()
    out = run(make_task(), model, tools)
    assert out.ok and out.answer == "Five." and out.error_type == ""
    assert kinds(out) == [("model", "fake-model")]
    step = out.steps[0]
    assert (step.status, step.text, step.prompt_tokens, step.completion_tokens) == ("ok", "  Five.\n", 10, 3)
    assert step.uncertainty == UncertaintySummary(**{**SURE, "mean_logprob": -0.2})
    assert tools.calls == [] and tools.setups == []
    assert model.calls == [([{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "What is 2+3?"}], "auto")]
    assert out.task_id == "t-1" and out.latency_ms >= step.latency_ms >= 0 and out.retries == 0


def test_tool_call_then_answer():
    call = call_text("calculator", expression="2+3")
    result = {"expression": "2+3", "result": 5}
    model = FakeModel(call, "It is 5.")
    tools = FakeTools({"calculator": ToolReply(result, attempts=2)})
    task = make_task(tool_choice="required")
    out = run(task, model, tools)
    assert out.ok and out.answer == "It is 5."
    assert kinds(out) == [("model", "fake-model"), ("tool", "calculator"), ("model", "fake-model")]
    tool_step = out.steps[1]
    assert tool_step.arguments == {"expression": "2+3"} and tool_step.attempts == 2 and tool_step.status == "ok"
    assert out.retries == 1
    (name, args, call_id), = tools.calls
    assert (name, args) == ("calculator", {"expression": "2+3"}) and re.fullmatch(r"t-1-[0-9a-f]{8}-1", call_id)
    # the first step is forced as asked; after a tool result the model may answer (auto)
    assert model.choices == ["required", "auto"]
    second_messages = model.calls[1][0]
    assert second_messages[-2:] == [{"role": "assistant", "content": call},
                                    {"role": "tool", "content": tool_result_content(result)}]
    assert task.messages[-1]["role"] == "user" and len(task.messages) == 2  # the task's own list untouched
    starts = [s.start_ms for s in out.steps]
    assert starts == sorted(starts)


def test_tool_choice_none_never_parses_a_call():
    text = call_text("calculator", expression="1")
    out = run(make_task(tool_choice="none"), FakeModel(text), FakeTools())
    assert out.ok and out.answer == text and len(out.steps) == 1


def test_call_ids_are_numbered_and_unique_per_run_of_a_task_id():
    """A call id is its write's idempotency key: two runs reusing a task_id must not share
    them (the second run's increment was answered as a replay and the counter moved once)."""
    ids = []
    for _ in range(2):
        model = FakeModel(call_text("calculator", expression="1+1"), call_text("calculator", expression="2*2"), "4")
        tools = FakeTools({"calculator": lambda a: {"result": a["expression"]}})
        out = run(make_task(), model, tools)
        ids.append([c[2] for c in tools.calls])
    assert out.ok and [i[-2:] for i in ids[0]] == ["-1", "-2"] and ids[0][0][:-2] == ids[0][1][:-2]
    assert not set(ids[0]) & set(ids[1])
    assert [m["role"] for m in model.calls[-1][0]] == ["system", "user", "assistant", "tool", "assistant", "tool"]


# ---- what the model got wrong --------------------------------------------------------
@pytest.mark.parametrize("text, fragment", [
    ('<tool_call>{"name": "calculator", "arguments": {"expression": </tool_call>', "not valid JSON"),
    ('<tool_call>{"arguments": {}}</tool_call>', "needs a string 'name'"),
    ('<tool_call>{"name": "calculator", "arguments": [1, 2]}</tool_call>', "must be an object"),
])
def test_malformed_tool_call_is_bad_tool_call(text, fragment):
    tools = FakeTools()
    out = run(make_task(), FakeModel(text), tools)
    assert not out.ok and out.error_type == "bad_tool_call" and fragment in out.error_message
    assert out.answer == "" and tools.calls == []
    (step,) = out.steps
    assert (step.kind, step.status, step.error_type) == ("model", "error", "bad_tool_call")
    assert fragment in step.detail


def test_call_of_a_tool_not_offered_is_bad_tool_call():
    tools = FakeTools({"kv": {"value": 1}})
    out = run(make_task(tools=("calculator",)), FakeModel(call_text("kv", op="get", key="a")), tools)
    assert not out.ok and out.error_type == "bad_tool_call"
    assert "'kv'" in out.error_message and "not offered" in out.error_message
    assert tools.calls == [] and out.steps[0].error_type == "bad_tool_call"


# ---- tool refusals and hop failures --------------------------------------------------
def test_tool_refusal_is_fed_back_and_the_loop_goes_on():
    model = FakeModel(call_text("calculator", expression="1/0"), "I cannot divide by zero.")
    tools = FakeTools({"calculator": HopError("tool_error", "division by zero", attempts=1)})
    out = run(make_task(), model, tools)
    assert out.ok and out.answer == "I cannot divide by zero." and out.error_type == ""
    tool_step = out.steps[1]
    assert (tool_step.kind, tool_step.status, tool_step.error_type) == ("tool", "error", "tool_error")
    assert tool_step.detail == "division by zero" and tool_step.arguments == {"expression": "1/0"}
    assert model.calls[1][0][-1] == {"role": "tool", "content": json.dumps({"error": "division by zero"})}
    assert model.choices == ["auto", "auto"]


@pytest.mark.parametrize("error_type", ["tool_hop_failed", "tool_timeout"])
def test_tool_hop_failure_ends_the_task_with_its_typed_error(error_type):
    model = FakeModel(call_text("calculator", expression="2+3"), "never asked")
    tools = FakeTools({"calculator": HopError(error_type, "UNAVAILABLE: down (after 3 attempt(s))", attempts=3)})
    out = run(make_task(), model, tools)
    assert not out.ok and out.error_type == error_type and "down" in out.error_message
    assert kinds(out) == [("model", "fake-model"), ("tool", "calculator")]
    step = out.steps[-1]
    assert (step.status, step.error_type, step.attempts) == ("error", error_type, 3)
    assert out.retries == 2 and len(model.calls) == 1


@pytest.mark.parametrize("error_type", ["runtime_hop_failed", "runtime_timeout"])
def test_model_hop_failure_ends_the_task_with_its_typed_error(error_type):
    model = FakeModel(HopError(error_type, "model step failed", attempts=2))
    out = run(make_task(), model, FakeTools())
    assert not out.ok and out.error_type == error_type and out.error_message == "model step failed"
    (step,) = out.steps
    assert (step.kind, step.status, step.error_type, step.attempts) == ("model", "error", error_type, 2)


def test_model_hop_failure_after_a_tool_step():
    model = FakeModel(call_text("calculator", expression="2+3"), HopError("runtime_timeout", "too slow"))
    out = run(make_task(), model, FakeTools({"calculator": {"result": 5}}))
    assert out.error_type == "runtime_timeout"
    assert [(s.kind, s.status) for s in out.steps] == [("model", "ok"), ("tool", "ok"), ("model", "error")]


def test_max_steps():
    model = FakeModel(call_text("calculator", expression="1+1"))  # calls a tool forever
    tools = FakeTools({"calculator": {"result": 2}})
    out = run(make_task(max_steps=3), model, tools)
    assert not out.ok and out.error_type == "max_steps" and "3" in out.error_message
    assert [s.kind for s in out.steps] == ["model", "tool"] * 3
    assert len(model.calls) == 3 and len(tools.calls) == 3


# ---- the uncertainty gate --------------------------------------------------------------
def gated_task(statistic="mean_logprob", threshold=-1.0, tools=("search", "calculator"), **kw) -> TaskSpec:
    return make_task(tools=tools, gate=GateConfig(True, statistic, threshold, "search"), **kw)


def test_gate_branches_once_to_its_tool_when_under_the_threshold():
    model = FakeModel(answer("Paris?", mean_logprob=-2.5, min_margin=0.9),
                      call_text("search", query="capital of France"),
                      answer("Paris.", mean_logprob=-3.0))  # still unsure: the gate does not fire twice
    tools = FakeTools({"search": {"results": [{"id": "france"}]}})
    out = run(gated_task(), model, tools)
    assert out.ok and out.answer == "Paris."
    assert [s.kind for s in out.steps] == ["model", "gate", "model", "tool", "model"]
    gate = out.steps[1]
    assert gate.name == "mean_logprob" and "-2.500 < -1.000" in gate.detail and "search" in gate.detail
    assert model.choices == ["auto", "search", "auto"]  # the branch forces the gate's tool once
    assert [c[0] for c in tools.calls] == ["search"]
    # the unsure answer is not kept in the conversation: the branch re-asks from the same messages
    assert model.calls[1][0] == model.calls[0][0]


def test_gate_does_not_fire_when_the_statistic_is_above_the_threshold():
    model = FakeModel(answer("Paris.", mean_logprob=-0.3, min_margin=0.01))
    out = run(gated_task(), model, FakeTools())
    assert out.ok and out.answer == "Paris." and [s.kind for s in out.steps] == ["model"]


def test_gate_reads_the_configured_statistic():
    # mean_logprob is high, min_margin is low: only a min_margin gate fires
    reply = answer("Paris.", mean_logprob=-0.1, min_margin=0.05)
    assert [s.kind for s in run(gated_task("min_margin", 0.2), FakeModel(reply, call_text("search", query="x"),
                                "Paris."), FakeTools({"search": {}})).steps] == \
        ["model", "gate", "model", "tool", "model"]
    assert [s.kind for s in run(gated_task("mean_logprob", -1.0), FakeModel(reply), FakeTools()).steps] == ["model"]
    read = UncertaintySummary(**{**SURE, "mean_logprob": -1.0, "min_margin": 0.5})
    assert GateConfig(True, "min_margin").statistic_of(read) == 0.5
    assert GateConfig(True, "mean_logprob").statistic_of(read) == -1.0
    assert GateConfig(True, "mean_logprob").statistic_of(None) is None


@pytest.mark.parametrize("make", [  # made when the test runs: a task's deadline starts when it is made
    pytest.param(lambda: gated_task(tools=("calculator",)), id="gate-tool-not-offered"),
    pytest.param(lambda: make_task(tools=("search",), gate=GateConfig(False, "mean_logprob", -1.0, "search")),
                 id="disabled"),
])
def test_gate_stays_closed_when_disabled_or_its_tool_is_not_offered(make):
    out = run(make(), FakeModel(answer("Paris.", mean_logprob=-5.0)), FakeTools())
    assert out.ok and [s.kind for s in out.steps] == ["model"]


def test_gate_without_uncertainty_answers():
    out = run(gated_task(), FakeModel(answer("Paris.")), FakeTools())
    assert out.ok and [s.kind for s in out.steps] == ["model"]


# ---- setup: preloaded state and scripted changes -------------------------------------
def test_setup_preloads_kv_and_applies_changes_before_the_nth_tool_call():
    events: list = []
    setup = {"kv": {"visitors": 41, "name": "lighthouse"},
             "changes": [{"before_tool_call": 2, "op": "put", "key": "visitors", "value": 44, "writer": "gate-b"},
                         {"before_tool_call": 3, "op": "increment", "key": "visitors", "amount": 2}]}
    model = FakeModel(call_text("kv", op="get", key="visitors"), call_text("kv", op="get", key="visitors"),
                      "44", events=events)
    tools = FakeTools({"kv": {"value": 0}}, events=events)
    out = run(make_task(tools=("kv",), tool_choice="kv", setup=setup), model, tools)
    assert out.ok and out.answer == "44"
    assert events == [
        ("setup", "kv", {"op": "put", "key": "visitors", "value": 41}),
        ("setup", "kv", {"op": "put", "key": "name", "value": "lighthouse"}),
        ("model", "kv"), ("tool", "kv"),
        ("model", "auto"),
        ("setup", "kv", {"op": "put", "key": "visitors", "value": 44}),  # no "writer": it is not a kv argument
        ("tool", "kv"),
        ("model", "auto"),
    ]  # the change before a 3rd tool call never happens: there is none
    assert [s.kind for s in out.steps] == ["model", "tool", "model", "tool", "model"]  # setup writes are no steps


# ---- deadlines ------------------------------------------------------------------------
def test_deadline_already_passed_is_deadline_exceeded():
    model = FakeModel("never asked")
    out = run(make_task(deadline_s=-0.001), model, FakeTools())
    assert not out.ok and out.error_type == "deadline_exceeded" and out.steps == []
    assert model.calls == []


def test_deadline_passing_between_steps_is_deadline_exceeded():
    model = FakeModel(call_text("calculator", expression="1"), "late answer", delay_s=0.08)
    tools = FakeTools({"calculator": {"result": 1}})
    out = run(make_task(deadline_s=0.05), model, tools)
    assert not out.ok and out.error_type == "deadline_exceeded" and "deadline" in out.error_message
    assert [s.kind for s in out.steps] == ["model", "tool"] and len(model.calls) == 1


def test_a_forced_call_cut_short_is_a_bad_tool_call_not_an_empty_answer():
    cut = ModelReply('<tool_call>\n{"name": "calc', "length", 10, 8)
    out = run(make_task(tool_choice="calculator"), FakeModel(cut), FakeTools())
    assert not out.ok and out.error_type == "bad_tool_call" and "max_tokens" in out.error_message
    assert out.finish_reason == "length" and out.answer == ""


def test_a_forced_call_answered_in_text_says_the_server_did_not_enforce_it():
    """An OpenAI upstream that ignores tool_choice (llama-server's grammar lets SmolLM2 write
    prose first) ends with "stop": the error says so rather than blaming max_tokens."""
    prose = ModelReply("17 * 23 + 4 = 395", "stop", 10, 8)
    out = run(make_task(tool_choice="calculator"), FakeModel(prose), FakeTools())
    assert not out.ok and out.error_type == "bad_tool_call"
    assert "answered in text" in out.error_message and "max_tokens" not in out.error_message


def test_the_outcome_says_why_the_last_model_step_ended():
    out = run(make_task(), FakeModel(ModelReply("Five, and then some more wor", "length", 10, 8)), FakeTools())
    assert out.ok and out.finish_reason == "length"  # an answer, truncated: the caller can tell
    assert run(make_task(), FakeModel("Five."), FakeTools()).finish_reason == "stop"

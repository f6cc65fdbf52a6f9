"""The agent loop's spans: GenAI names and attributes, one task one trace, errors marked."""
from __future__ import annotations

import re

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from inloop.services.common.telemetry import setup_tracing
from inloop.services.contract.errors import HopError
from tests.common.test_agent_loop import FakeModel, FakeTools, call_text, make_task, run


@pytest.fixture(scope="module")
def exporter():
    """This process's spans, whichever test set the global provider up first."""
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(SimpleSpanProcessor(memory))
    else:
        setup_tracing("inloop-test", (SimpleSpanProcessor(memory),))
    return memory


def _spans(exporter, task_id):
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.name.startswith("invoke_agent")
                and s.attributes.get("gen_ai.conversation.id") == task_id)
    return root, [s for s in spans if s.context.trace_id == root.context.trace_id]


def test_a_task_is_one_trace_of_genai_spans(exporter):
    exporter.clear()
    model = FakeModel(call_text("calculator", expression="2+3"), "It is 5.")
    outcome = run(make_task(), model, FakeTools({"calculator": {"value": 5}}))
    assert outcome.ok
    root, spans = _spans(exporter, "t-1")
    assert root.name == "invoke_agent task" and root.parent is None
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.request.model"] == "fake-model" and root.attributes["inloop.ok"] is True
    assert root.attributes["gen_ai.usage.input_tokens"] == 20 and root.attributes["gen_ai.usage.output_tokens"] == 6
    names = [s.name for s in sorted(spans, key=lambda s: s.start_time)]
    assert names == ["invoke_agent task", "chat fake-model", "execute_tool calculator", "chat fake-model"]
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert all(s.parent.span_id == root.context.span_id for s in spans if s is not root)
    assert chats[0].attributes["gen_ai.operation.name"] == "chat"
    assert root.attributes["gen_ai.provider.name"] == chats[0].attributes["gen_ai.provider.name"] == "test"
    assert chats[0].attributes["gen_ai.usage.output_tokens"] == 3
    assert chats[0].kind == trace.SpanKind.INTERNAL  # in process unless the route says external
    tool = next(s for s in spans if s.name == "execute_tool calculator")
    assert tool.attributes["gen_ai.tool.name"] == "calculator"
    assert re.fullmatch(r"t-1-[0-9a-f]{8}-1", tool.attributes["gen_ai.tool.call.id"])


def test_a_failed_hop_marks_its_span_and_the_task(exporter):
    exporter.clear()
    model = FakeModel(call_text("calculator", expression="2+3"))
    tools = FakeTools({"calculator": HopError("tool_hop_failed", "tools service unavailable", attempts=2)})
    outcome = run(make_task(), model, tools)
    assert not outcome.ok and outcome.error_type == "tool_hop_failed"
    root, spans = _spans(exporter, "t-1")
    tool = next(s for s in spans if s.name == "execute_tool calculator")
    for span in (tool, root):
        assert span.status.status_code == trace.StatusCode.ERROR
        assert span.attributes["error.type"] == "tool_hop_failed"
    assert tool.attributes["inloop.attempts"] == 2


def test_a_failed_scripted_write_marks_its_span_with_the_error_type(exporter):
    exporter.clear()
    class Unreachable(FakeTools):
        async def setup(self, task, name, arguments):
            raise HopError("tool_timeout", "no answer", attempts=1)

    outcome = run(make_task(tools=("kv",), setup={"kv": {"visits": 1}}), FakeModel("x"), Unreachable())
    assert not outcome.ok and outcome.error_type == "tool_timeout"
    _, spans = _spans(exporter, "t-1")
    write = next(s for s in spans if s.name == "execute_tool kv")
    assert write.attributes["inloop.scripted"] is True and write.attributes["error.type"] == "tool_timeout"

"""The two tool-call forms: Hermes JSON and the XML form of Qwen3.5's chat template."""
from __future__ import annotations

import pytest

from inloop.services.contract.errors import ToolCallParseError
from inloop.services.contract.tool_calls import (
    HERMES, XML, ToolCall, in_form, parse_tool_call, parse_tool_calls, tool_call_form,
)

TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {
    "query": {"type": "string"}, "k": {"type": "integer"}, "tags": {"type": "array"}}}}}]

XML_CALL = """<tool_call>
<function=search>
<parameter=query>
renamed products: 2026
</parameter>
<parameter=k>
5
</parameter>
</function>
</tool_call>"""


def test_xml_calls_parse_with_values_typed_by_the_schema():
    call = parse_tool_call("Let me look.\n" + XML_CALL, TOOLS)
    assert call == ToolCall("search", {"query": "renamed products: 2026", "k": 5})
    # a string parameter stays text even where it would parse as JSON
    text = XML_CALL.replace("renamed products: 2026", "123")
    assert parse_tool_call(text, TOOLS).arguments["query"] == "123"
    assert parse_tool_call(text).arguments["query"] == 123  # no schema: JSON where it parses


def test_multi_line_values_and_several_calls():
    two = XML_CALL.replace("renamed products: 2026", "line one\nline two") + "\n" + ToolCall(
        "search", {"query": "x", "tags": ["a", "b"]}).to_text(XML)
    calls = parse_tool_calls(two, TOOLS)
    assert [c.arguments for c in calls] == [{"query": "line one\nline two", "k": 5},
                                            {"query": "x", "tags": ["a", "b"]}]


@pytest.mark.parametrize("form", [HERMES, XML])
def test_each_form_round_trips(form):
    call = ToolCall("search", {"query": "bread and milk", "k": 3, "tags": ["x"]})
    assert parse_tool_call(call.to_text(form), TOOLS) == call


def test_in_form_rewrites_calls_for_the_model_and_leaves_plain_text():
    hermes = "Checking.\n" + ToolCall("search", {"query": "q", "k": 2}).to_text(HERMES)
    xml = in_form(hermes, XML)
    assert "<function=search>" in xml and xml.startswith("Checking.\n")
    assert parse_tool_call(xml, TOOLS) == parse_tool_call(hermes)
    assert in_form(xml, HERMES) == hermes
    assert in_form("no call here", XML) == "no call here"


def test_the_form_comes_from_the_chat_template():
    assert tool_call_form("...<tool_call>\n<function=example_function_name>...") == XML
    assert tool_call_form('...<tool_call>\n{"name": <function-name>, ...') == HERMES
    assert tool_call_form(None) == HERMES


@pytest.mark.parametrize("bad", ["<tool_call>\n<function=search\n</tool_call>",
                                 "<tool_call>\n<function=>\n</function>\n</tool_call>",
                                 "<tool_call>\n<function=s>\n<parameter=q>\nx\n</function>\n</tool_call>",
                                 "<tool_call>\n<function=s>\n<parameter=q>\nx\n</parameter>\n"])  # cut off
def test_malformed_xml_calls_raise(bad):
    with pytest.raises(ToolCallParseError):
        parse_tool_call(bad)

"""Our port of BFCL's function-doc conversion against bfcl-eval's own output (fixtures made by
bfcl-eval 2026.3.23: its data, its language hint, its convert_to_tool for OpenAI Completions),
and the runtime's acceptance of every converted schema."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from inloop.loadgen.eval.bfcl_schema import to_openai_tools, with_python_hint
from inloop.services.contract.generation import ChatMessage, GenerateRequest

CASES = json.loads((Path(__file__).parent / "fixtures" / "bfcl_function_docs.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_hint_and_conversion_match_bfcl_eval(case):
    hinted = with_python_hint(case["function"])
    assert hinted == case["hinted"]
    assert to_openai_tools(hinted) == case["tools"]
    assert case["function"] != hinted  # the input is not mutated


def test_fixtures_cover_the_types_bfcl_maps():
    """float (format + sentence), tuple/any remapped, a dotted name, nested dict, list of dicts."""
    text = json.dumps([c["tools"] for c in CASES])
    for needle in ('"format": "float"', "This is a float type value.", "math_factorial"):
        assert needle in text
    raw = json.dumps([c["function"] for c in CASES])
    for needle in ('"type": "tuple"', '"type": "any"', '"type": "dict"', '"type": "float"', "math.factorial"):
        assert needle in raw


def test_dotted_names_become_underscores_and_dict_becomes_object():
    tools = to_openai_tools([{"name": "a.b.c", "description": "d", "parameters": {
        "type": "dict", "properties": {"x": {"type": "float", "description": "x."},
                                       "y": {"type": "weird"}, "z": {"description": "no type"}}}}])
    fn = tools[0]["function"]
    assert fn["name"] == "a_b_c" and fn["parameters"]["type"] == "object"
    props = fn["parameters"]["properties"]
    assert props["x"] == {"type": "number", "format": "float", "description": "x. This is a float type value."}
    assert props["y"]["type"] == "string" and props["z"]["type"] == "string"


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_the_runtime_accepts_every_converted_schema(case):
    GenerateRequest(messages=[ChatMessage("user", "hi")], tools=case["tools"], tool_choice="auto").validate()

"""The chat template decides: the tool-call form (Hermes JSON or Qwen3.5's XML), whether the
output may think (`enable_thinking` reaches the template; the thought comes back apart from
the answer). Tiny models with templates written in the Qwen3 and Qwen3.5 forms."""
from __future__ import annotations

import json
import shutil

import jsonschema
import pytest

from inloop.services.contract.generation import ChatMessage, GenerateRequest, SamplingParams
from inloop.services.contract.tool_calls import XML, ToolCall, parse_tool_call
from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.tiny_qwen3_5 import QWEN35_CHAT_TEMPLATE
from tests.conftest import requires_reference

_TOOLS_BLOCK = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n\\n<tools>' }}{%- for tool in tools %}"
    "{{- '\\n' + (tool | tojson) }}{%- endfor %}{{- '\\n</tools>\\n\\n' + CALL + '<|im_end|>\\n' }}{%- endif %}")
_TURNS = ("{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content"
          " + '<|im_end|>\\n' }}{%- endfor %}")
# Qwen3: Hermes JSON calls; the model opens <think> itself; enable_thinking=false closes an empty one
QWEN3_TEMPLATE = ("{%- set CALL = 'For each function call, return a json object within <tool_call></tool_call>"
                  " XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}"
                  "\\n</tool_call>' %}" + _TOOLS_BLOCK + _TURNS +
                  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
                  "{%- if enable_thinking is defined and enable_thinking is false %}"
                  "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")
QWEN35_TEMPLATE = QWEN35_CHAT_TEMPLATE  # XML calls; the template opens <think> unless thinking is off
TOOLS = [{"type": "function", "function": {
    "name": "search", "description": "search the corpus", "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}, "k": {"type": "integer"}, "mode": {"type": "string", "enum": ["bm25", "exact"]},
        "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["query", "k"]}}}]


def _with_template(src, dst, template: str):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "tokenizer_config.json").read_text())
    cfg["chat_template"] = template
    (dst / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dst


@pytest.fixture(scope="module")
def dirs(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("templates")
    return {"qwen3": _with_template(tiny_models["qwen3"], root / "qwen3", QWEN3_TEMPLATE),
            "qwen3_5": _with_template(tiny_models["qwen3"], root / "qwen3_5", QWEN35_TEMPLATE)}


def _chat(text="Find the receipt total", **kw) -> GenerateRequest:
    kw.setdefault("sampling", SamplingParams(max_tokens=8, ignore_eos=True))
    return GenerateRequest(messages=[ChatMessage("user", text)], **kw)


@requires_reference
@pytest.mark.parametrize("name", ["qwen3", "qwen3_5"])
@pytest.mark.parametrize("thinking", [None, True, False])
def test_prompts_render_as_hf_renders_them(dirs, name, thinking):
    from transformers import AutoTokenizer

    engine = Engine.load(dirs[name])
    hf = AutoTokenizer.from_pretrained(dirs[name])
    req = _chat(tools=TOOLS, enable_thinking=thinking)
    kw = {} if thinking is None else {"enable_thinking": thinking}
    ref = hf.apply_chat_template([{"role": "user", "content": "Find the receipt total"}], tools=TOOLS,
                                 add_generation_prompt=True, tokenize=False, **kw)
    assert engine.render(req) == ref
    assert ref.endswith("<think>\n\n</think>\n\n") == (thinking is False)


def test_the_form_and_thinking_come_from_the_template(dirs):
    qwen3, qwen35 = Engine.load(dirs["qwen3"]), Engine.load(dirs["qwen3_5"])
    assert (qwen3.tool_form, qwen35.tool_form) == ("hermes", XML)
    assert qwen3.thinks and qwen35.thinks


def test_an_open_thought_comes_back_as_reasoning_and_thinking_off_as_answer(dirs):
    engine = Engine.load(dirs["qwen3_5"])
    events = []
    thought = engine.generate(_chat(), on_token=events.append)
    # the template opened <think> and the tiny model never closes it: all of it is thought
    assert thought.reasoning and thought.text == ""
    assert "".join(e.reasoning for e in events) == thought.reasoning
    assert "".join(e.text for e in events) == ""
    plain = engine.generate(_chat(enable_thinking=False))
    assert plain.reasoning == "" and plain.text
    # a model without thinking in its template: untouched
    assert not Engine.load(dirs["qwen3"]).generate(_chat()).reasoning


@pytest.mark.parametrize("seed", range(4))
def test_a_forced_call_follows_the_xml_form(dirs, seed):
    engine = Engine.load(dirs["qwen3_5"])
    result = engine.generate(_chat(tools=TOOLS, tool_choice="required", enable_thinking=False,
                                   sampling=SamplingParams(max_tokens=160, temperature=1.0, seed=seed)))
    assert result.finish_reason == "tool_calls", result.text
    assert result.text.startswith("<tool_call>\n<function=search>\n<parameter=query>\n"), result.text
    call = parse_tool_call(result.text, TOOLS)
    assert call.name == "search"
    jsonschema.validate(call.arguments, TOOLS[0]["function"]["parameters"])


def test_earlier_calls_are_rendered_in_the_templates_form(dirs):
    engine = Engine.load(dirs["qwen3_5"])
    call = ToolCall("search", {"query": "bread", "k": 2})
    req = GenerateRequest(messages=[ChatMessage("user", "find bread"), ChatMessage("assistant", call.to_text()),
                                    ChatMessage("tool", '{"hits": []}')], tools=TOOLS)
    prompt = engine.render(req)
    assert call.to_text(XML) in prompt and call.to_text() not in prompt


def test_a_forced_call_after_an_open_thought_closes_it_first(dirs):
    engine = Engine.load(dirs["qwen3_5"])
    result = engine.generate(_chat(tools=TOOLS, tool_choice="search", sampling=SamplingParams(max_tokens=120)))
    assert result.finish_reason == "tool_calls" and result.reasoning == ""
    assert engine.tokenizer.decode(result.token_ids).startswith("</think>")
    assert parse_tool_call(result.text, TOOLS).name == "search"

"""The tool-call formats shared by both routes: Hermes/Qwen `<tool_call>{...}</tool_call>`,
and the XML form of Qwen3.5's (and Qwen3-Coder's) chat templates.

A model turn either answers in free text or emits one tool call:

    <tool_call>{"name": "search", "arguments": {"query": "renamed products"}}</tool_call>

or, where the model's chat template asks for the XML form (it spells `<function=`):

    <tool_call>
    <function=search>
    <parameter=query>
    renamed products
    </parameter>
    </function>
    </tool_call>

The parser reads both; `ToolCall.to_text(form)` writes either.

Tool definitions are OpenAI-style: {"type": "function", "function": {"name", "description",
"parameters": <JSON Schema>}}. Models whose chat template has no tool support get the
definitions in a system block with the Hermes instructions (`tools_system_prompt`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from inloop.services.contract.errors import ToolCallParseError

OPEN, CLOSE = "<tool_call>", "</tool_call>"
HERMES, XML = "hermes", "xml"          # the two tool-call forms
FUNCTION_OPEN, FUNCTION_CLOSE = "<function=", "</function>"
PARAMETER_OPEN, PARAMETER_CLOSE = "<parameter=", "</parameter>"


def tool_call_form(chat_template: str | None) -> str:
    """The form a chat template asks for: XML where it spells `<function=`, else Hermes JSON."""
    return XML if chat_template and FUNCTION_OPEN in chat_template else HERMES


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict = field(default_factory=dict)

    def to_text(self, form: str = HERMES) -> str:
        """The call as the model writes it (Hermes/Qwen: the JSON on its own line, which is
        also how the constrained decoder lays it out, so a call rendered back into a
        conversation is the text the model produced); `form` XML: Qwen3.5's layout."""
        if form == XML:
            params = "".join(f"{PARAMETER_OPEN}{k}>\n{_xml_value(v)}\n{PARAMETER_CLOSE}\n"
                             for k, v in self.arguments.items())
            return f"{OPEN}\n{FUNCTION_OPEN}{self.name}>\n{params}{FUNCTION_CLOSE}\n{CLOSE}"
        body = json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)
        return f"{OPEN}\n{body}\n{CLOSE}"


def _xml_value(value) -> str:
    """A parameter's text in the XML form: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _typed(value: str, schema: dict | None):
    """An XML parameter's text as the value its schema asks for: a string stays text; other
    types (and parameters without a schema) are read as JSON where they parse."""
    kinds = (schema or {}).get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or ())
    if kinds == ["string"]:
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _parse_xml(body: str, tools: list[dict] | None, closed: bool) -> ToolCall:
    """`<function=NAME>` then `<parameter=KEY>\nVALUE\n</parameter>`s, then `</function>`;
    a call closed by neither `</function>` nor `</tool_call>` was cut off: malformed."""
    head_end = body.find(">")
    if head_end == -1:
        raise ToolCallParseError(f"tool call <function=...> is not closed with '>': {body[:200]!r}")
    name = body[len(FUNCTION_OPEN):head_end].strip()
    if not name:
        raise ToolCallParseError(f"tool call needs a function name: {body[:200]!r}")
    end = body.find(FUNCTION_CLOSE)
    if end == -1 and not closed:
        raise ToolCallParseError(f"tool call <function={name}> is not closed: {body[:200]!r}")
    rest = body[head_end + 1: end if end != -1 else len(body)]
    props = ((find_tool(tools or [], name) or {}).get("parameters") or {}).get("properties") or {}
    args: dict = {}
    while (start := rest.find(PARAMETER_OPEN)) != -1:
        key_end = rest.find(">", start)
        close = rest.find(PARAMETER_CLOSE, key_end)
        if key_end == -1 or close == -1:
            raise ToolCallParseError(f"tool call parameter is not closed: {rest[start:start + 200]!r}")
        key = rest[start + len(PARAMETER_OPEN):key_end].strip()
        value = rest[key_end + 1:close]
        value = value[1:] if value.startswith("\n") else value
        value = value[:-1] if value.endswith("\n") else value
        args[key] = _typed(value, props.get(key))
        rest = rest[close + len(PARAMETER_CLOSE):]
    return ToolCall(name, args)


def parse_tool_call(text: str, tools: list[dict] | None = None) -> ToolCall | None:
    """The first tool call in `text` (either form), None for a plain answer; raises on a
    malformed call. `tools` types the XML form's parameter values by their schemas."""
    start = text.find(OPEN)
    if start == -1:
        return None
    body = text[start + len(OPEN):]
    end = body.find(CLOSE)
    body = (body if end == -1 else body[:end]).strip()
    if body.startswith(FUNCTION_OPEN):
        return _parse_xml(body, tools, closed=end != -1)
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ToolCallParseError(f"tool call is not valid JSON ({exc.msg} at {exc.pos}): {body[:200]!r}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise ToolCallParseError(f"tool call needs a string 'name': {body[:200]!r}")
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some models emit arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            raise ToolCallParseError(f"tool call arguments are not a JSON object: {args[:200]!r}") from None
    if not isinstance(args, dict):
        raise ToolCallParseError(f"tool call arguments must be an object, got {type(args).__name__}")
    return ToolCall(obj["name"], args)


def parse_tool_calls(text: str, tools: list[dict] | None = None) -> list[ToolCall]:
    """Every tool call in `text`, in order (a model may emit several in one turn); [] for a
    plain answer; raises on a malformed one."""
    calls, rest = [], text
    while (start := rest.find(OPEN)) != -1:
        call = parse_tool_call(rest[start:], tools)
        calls.append(call)
        end = rest.find(CLOSE, start)
        if end == -1:
            break
        rest = rest[end + len(CLOSE):]
    return calls


def tool_names(tools: list[dict]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def find_tool(tools: list[dict], name: str) -> dict | None:
    for t in tools:
        if t["function"]["name"] == name:
            return t["function"]
    return None


def tools_system_prompt(tools: list[dict]) -> str:
    """The Hermes function-calling instructions, for chat templates that do not render tools."""
    sigs = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "You are a function calling AI model. You are provided with function signatures within "
        "<tools></tools> XML tags. You may call one of these functions to assist with the user query. "
        "Don't make assumptions about what values to plug into functions.\n"
        f"<tools>\n{sigs}\n</tools>\n"
        "For a function call, return a json object with the function name and arguments within "
        "<tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\n'
        "When you have the information you need, answer the user directly without a tool call."
    )


def with_tools_prompt(messages: list[dict], tools: list[dict]) -> list[dict]:
    """Messages with the tool instructions merged into (or prepended as) the system message."""
    if not tools:
        return list(messages)
    block = tools_system_prompt(tools)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + block}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


def tool_result_content(result: dict | str) -> str:
    """The text of a `tool` message: the tool's JSON result, compact and stable."""
    if isinstance(result, str):
        return result
    return json.dumps(result, ensure_ascii=False, sort_keys=True)


def calls_in(text: str) -> list | None:
    """The tool calls in `text`, or None when it has none or a block does not parse."""
    if OPEN not in text:
        return None
    try:
        return parse_tool_calls(text) or None
    except ToolCallParseError:
        return None


def in_form(text: str, form: str) -> str:
    """`text` with its tool calls written in `form` (an assistant turn rendered back for a model
    whose template uses the other form); text without calls, or not parseable, as it is."""
    calls = calls_in(text)
    if calls is None:
        return text
    return text[:text.find(OPEN)] + "\n".join(c.to_text(form) for c in calls)

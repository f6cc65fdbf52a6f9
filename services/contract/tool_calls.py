"""The tool-call format shared by both routes: Hermes/Qwen `<tool_call>{...}</tool_call>`.

A model turn either answers in free text or emits one tool call:

    <tool_call>{"name": "search", "arguments": {"query": "renamed products"}}</tool_call>

Tool definitions are OpenAI-style: {"type": "function", "function": {"name", "description",
"parameters": <JSON Schema>}}. Models whose chat template has no tool support get the
definitions in a system block with the Hermes instructions (`tools_system_prompt`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from inloop.services.contract.errors import ToolCallParseError

OPEN, CLOSE = "<tool_call>", "</tool_call>"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict = field(default_factory=dict)

    def to_text(self) -> str:
        """The call as the model writes it (Hermes/Qwen: the JSON on its own line, which is
        also how the constrained decoder lays it out, so a call rendered back into a
        conversation is the text the model produced)."""
        body = json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)
        return f"{OPEN}\n{body}\n{CLOSE}"


def parse_tool_call(text: str) -> ToolCall | None:
    """The first tool call in `text`, None for a plain answer; raises on a malformed call."""
    start = text.find(OPEN)
    if start == -1:
        return None
    body = text[start + len(OPEN):]
    end = body.find(CLOSE)
    body = (body if end == -1 else body[:end]).strip()
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


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every tool call in `text`, in order (a model may emit several in one turn); [] for a
    plain answer; raises on a malformed one."""
    calls, rest = [], text
    while (start := rest.find(OPEN)) != -1:
        call = parse_tool_call(rest[start:])
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

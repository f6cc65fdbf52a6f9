"""A reply -> what BFCL's OpenAI Completions handler hands its checker, and whether it is a call.

That handler's `_parse_query_response_FC` keeps [{name: arguments-json}, ...] when the reply
had tool calls and the reply's text otherwise; the checker then fails any text on the call
categories and passes it on irrelevance. A reply we decode ourselves (a plain generation of the
rendered prompt, or the constrained decoder's text) counts as calls when the Hermes
`<tool_call>` blocks in it parse, exactly as an OpenAI-compatible server would have turned
them into `tool_calls`; a malformed block leaves the text.
"""
from __future__ import annotations

import json

from inloop.services.contract.tool_calls import calls_in

BfclResult = list[dict[str, str]] | str   # [{name: arguments-json}] or the reply's text


def result_from_text(text: str) -> BfclResult:
    """Hermes tool calls in `text` -> BFCL's FC result; the text itself when there are none
    or a block does not parse (an unclosed block, bad JSON, arguments that are no object)."""
    calls = calls_in(text)
    if calls is None:
        return text
    return [{c.name: json.dumps(c.arguments, ensure_ascii=False)} for c in calls]


def result_from_openai_message(message: dict) -> BfclResult:
    """An OpenAI chat completion's message -> BFCL's FC result (its `tool_calls`, else content)."""
    calls = message.get("tool_calls") or []
    if calls:
        return [{c["function"]["name"]: c["function"]["arguments"]} for c in calls]
    return message.get("content") or ""


def is_valid_call(result: BfclResult, tools: list[dict]) -> bool:
    """At least one call, each to an offered function with a JSON object of arguments: the
    reply is a well-formed function call, right or wrong."""
    if isinstance(result, str) or not result:
        return False
    names = {t["function"]["name"] for t in tools}
    for call in result:
        (name, args), = call.items()
        if name not in names:
            return False
        try:
            if not isinstance(json.loads(args), dict):
                return False
        except json.JSONDecodeError:
            return False
    return True

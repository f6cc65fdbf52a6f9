"""Constrained decoding of one tool call in the XML form (Qwen3.5's chat template):

    <tool_call>\\n<function=NAME>\\n<parameter=KEY>\\nVALUE\\n</parameter>\\n...</function>\\n</tool_call>

The same contract as constrained.py's Hermes grammar: fixed text is forced, the model picks
where several continuations are valid (the function, which optional parameter comes next or
whether the call ends, enum members, the values). A string value is free text on one line
(the tokens a JSON string body allows, ended by the model's newline); any other value is a
JSON value of the parameter's schema, through the JSON grammar (numbers, booleans, arrays,
objects), as the XML form writes non-string values.
"""
from __future__ import annotations

import json

import numpy as np

from inloop.services.contract.tool_calls import (
    CLOSE, FUNCTION_CLOSE, FUNCTION_OPEN, OPEN, PARAMETER_CLOSE, PARAMETER_OPEN, find_tool,
)
from inloop.services.runtime.engine.constrained import (
    CLOSING_RESERVE, MAX_DIGITS, MAX_STRING_TOKENS, BudgetExhausted, Driver, Stopped, choose,
)
from inloop.services.runtime.engine.json_grammar import Decoding

__all__ = ["BudgetExhausted", "Stopped", "tool_call"]


def _force(d: Driver, text: str) -> None:
    if d.stopped():
        raise Stopped()
    if not d.force(text):
        raise BudgetExhausted()


def _line(d: Driver, reserve: int) -> None:
    """Free text up to the model's newline (which ends the value); capped in length, and cut
    where only `reserve` tokens are left (what the rest of the call needs)."""
    newline = d.masks.by_bytes.get(b"\n")
    allowed = d.masks.string_body.copy()
    if newline is not None:
        allowed[newline] = True
    for i in range(MAX_STRING_TOKENS):
        if d.stopped():
            raise Stopped()
        if d.remaining() <= reserve or newline is None:
            break
        if d.pick(allowed if i else d.masks.string_body) == newline:
            return
    _force(d, "\n")  # cap reached: end the line ourselves


def _value(d: Driver, schema: dict, field: str, reserve: int) -> None:
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or ())
    if "enum" in schema:
        choose(d, [(v if isinstance(v, str) else json.dumps(v)) + "\n" for v in schema["enum"]])
    elif kinds == ["string"]:
        _line(d, reserve)
    else:
        _json_line(d, schema, field, reserve)


def _json_line(d: Driver, schema: dict, field: str, reserve: int) -> None:
    """A JSON value of `schema`, then the newline that ends it. Where the value could end or
    go on (a number's digits) the model decides: it ends when it wants the newline most, or
    at MAX_DIGITS tokens of a scalar, or when the budget nears what closing the call needs."""
    decoding = Decoding(d.masks.json_grammar, schema, field, d.masks.size)
    newline = d.masks.by_bytes.get(b"\n")
    scalar = schema.get("type") in ("integer", "number", "boolean")
    picked = 0
    while (allowed := decoding.allowed()) is not None:
        if decoding.matcher.is_accepting() and (
                (scalar and picked >= MAX_DIGITS) or d.remaining() <= reserve or
                (newline is not None and d.logits[newline] >= np.max(np.where(allowed, d.logits, -np.inf)))):
            break
        if d.stopped():
            raise Stopped()
        if d.remaining() <= 0:
            raise BudgetExhausted()
        decoding.feed(d.pick(allowed))
        picked += 1
    _force(d, "\n")


def _after(required: list[str]) -> int:
    """At most how many tokens the call still needs after the current value: the bytes of its
    fixed text (a token holds at least one byte), a token per value, a margin."""
    rest = "\n" + PARAMETER_CLOSE + "\n" + "".join(
        f"{PARAMETER_OPEN}{p}>\nx\n{PARAMETER_CLOSE}\n" for p in required) + FUNCTION_CLOSE + "\n" + CLOSE
    return len(rest.encode()) + CLOSING_RESERVE


def tool_call(d: Driver, tools: list[dict], only: str | None = None, opened: bool = False) -> None:
    """Generate a complete, schema-valid XML tool call. `opened`: the model already wrote `<tool_call>`."""
    _force(d, ("\n" if opened else OPEN + "\n") + FUNCTION_OPEN)
    names = [only] if only else [t["function"]["name"] for t in tools]
    name = choose(d, [n + ">\n" for n in names])[:-2]
    params = (find_tool(tools, name) or {}).get("parameters", {})
    props: dict = params.get("properties", {})
    required = [p for p in params.get("required", []) if p in props]
    optional = [p for p in props if p not in required]
    for i, prop in enumerate(required):
        _force(d, f"{PARAMETER_OPEN}{prop}>\n")
        _value(d, props[prop], f"tools.{name}.parameters.{prop}", _after(required[i + 1:]))
        _force(d, PARAMETER_CLOSE + "\n")
    while optional and d.remaining() > _after(optional[:1]):
        picked = choose(d, [f"{PARAMETER_OPEN}{p}>\n" for p in optional] + [FUNCTION_CLOSE])
        if picked == FUNCTION_CLOSE:
            _force(d, "\n" + CLOSE)
            return
        prop = picked[len(PARAMETER_OPEN):-2]
        optional.remove(prop)
        _value(d, props[prop], f"tools.{name}.parameters.{prop}", _after([]))
        _force(d, PARAMETER_CLOSE + "\n")
    _force(d, FUNCTION_CLOSE + "\n" + CLOSE)



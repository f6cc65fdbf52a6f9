"""Constrained decoding of one Hermes tool call: the model chooses, the grammar guarantees.

Once a call is open, the rest of the generation is driven by the tool's JSON Schema:

    <tool_call>\\n{"name": "<offered tool>", "arguments": {"<req>": <value>, ...}}\\n</tool_call>

Fixed text is forced (appended without sampling, one forward pass for the whole chunk);
where the grammar allows several continuations (the tool name, enum values, string and
number contents, whether to add an optional argument) the model picks among the tokens that
keep the output valid. Required properties come first in schema order, then the optional
ones in order, each of which the model may include or end the object before. Arguments with
arrays or nested objects go through the full JSON Schema grammar (json_grammar.py). With
parallel calls allowed, the model then ends its turn or opens another call (`another_call`).
"""
from __future__ import annotations

import json
from typing import Protocol

import numpy as np

from inloop.services.contract.tool_calls import CLOSE, OPEN, find_tool
from inloop.services.runtime.engine.json_grammar import Decoding
from inloop.services.runtime.engine.vocab_masks import VocabMasks

MAX_STRING_TOKENS = 48
MAX_DIGITS = 12
CLOSING_RESERVE = 12  # tokens kept back so that a long string still leaves room to close the call


class Driver(Protocol):
    """What the grammar needs from a running generation (engine/generation.py)."""

    masks: VocabMasks
    logits: np.ndarray

    def pick(self, allowed: np.ndarray) -> int: ...      # sample among allowed tokens, append it
    def force(self, text: str) -> bool: ...               # append fixed text; False if over budget
    def remaining(self) -> int: ...                       # tokens left in the budget
    def stopped(self) -> bool: ...                        # the request was cancelled or expired


class BudgetExhausted(Exception):
    """The token budget ran out inside the call (the output is then not a complete call)."""


class Stopped(Exception):
    """The request was cancelled or its deadline passed inside the call: it ends at the next
    token, as a free generation does."""


def _force(d: Driver, text: str) -> None:
    if d.stopped():
        raise Stopped()
    if not d.force(text):
        raise BudgetExhausted()


def _mask(size: int, ids) -> np.ndarray:
    m = np.zeros(size, dtype=bool)
    m[list(ids)] = True
    return m


def _check_budget(d: Driver) -> None:
    """Before each token the grammar picks: the budget, and whether the caller still waits."""
    if d.stopped():
        raise Stopped()
    if d.remaining() <= 0:
        raise BudgetExhausted()


def choose(d: Driver, alternatives: list[str]) -> str:
    """Let the model spell one of `alternatives`, token by token."""
    alts = [a.encode() for a in alternatives]
    done = b""
    while True:
        live = [a for a in alts if a.startswith(done)]
        if done in live:
            return done.decode()
        allowed = set()
        for a in live:
            allowed.update(d.masks.prefix_tokens(a[len(done):]))
        _check_budget(d)
        token = d.pick(_mask(d.masks.size, allowed))
        done += d.masks.token_bytes[token]


def _string(d: Driver) -> None:
    _force(d, '"')
    allowed = d.masks.string_body | d.masks.string_close
    for _ in range(MAX_STRING_TOKENS):
        if d.stopped():
            raise Stopped()
        if d.remaining() <= CLOSING_RESERVE:
            break
        token = d.pick(allowed)
        if d.masks.string_close[token]:
            return
    _force(d, '"')  # cap reached: close the string ourselves


def _digits(d: Driver, first: np.ndarray) -> None:
    """One or more digit tokens; after the first, the model may end the run (its best
    non-digit wish beats its best digit) and the caller forces what follows. A lone minus
    sign is not a number: a digit must follow it."""
    _check_budget(d)
    if d.masks.token_bytes[d.pick(first)] == b"-":
        _check_budget(d)
        d.pick(d.masks.digits)
    for _ in range(MAX_DIGITS):
        best_digit = np.max(np.where(d.masks.digits, d.logits, -np.inf))
        if best_digit < np.max(np.where(d.masks.digits, -np.inf, d.logits)):
            return
        _check_budget(d)
        d.pick(d.masks.digits)


def _value(d: Driver, schema: dict) -> None:
    if "enum" in schema:
        choose(d, [json.dumps(v, ensure_ascii=False) for v in schema["enum"]])
        return
    kind = schema.get("type")
    if kind == "boolean":
        choose(d, ["true", "false"])
    elif kind in ("integer", "number"):
        _digits(d, d.masks.signed_digits)
        dot = d.masks.by_bytes.get(b".")
        if kind == "number" and dot is not None and d.logits[dot] >= np.max(d.logits):
            _force(d, ".")  # the model's first wish is a decimal point: take the fraction
            _digits(d, d.masks.digits)
    else:
        _string(d)


def needs_json_grammar(schema: dict) -> bool:
    """Whether a tool's arguments need more than flat properties of scalars (what the
    hand-written grammar above follows: strings, numbers, booleans, enums)."""
    for prop in (schema.get("properties") or {}).values():
        kinds = prop.get("type")
        kinds = [kinds] if isinstance(kinds, str) else list(kinds or ())
        if any(k in ("array", "object") for k in kinds) or (not kinds and "enum" not in prop):
            return True
    return False


def json_value(d: Driver, schema: dict, field: str) -> None:
    """A whole JSON value matching `schema`, token by token through the JSON grammar."""
    decoding = Decoding(d.masks.json_grammar, schema, field, d.masks.size)
    while (allowed := decoding.allowed()) is not None:
        _check_budget(d)
        decoding.feed(d.pick(allowed))


NEXT_CALL = "\n" + OPEN
NEXT_CALL_RESERVE = 24  # tokens a further call needs at least (its fixed text and a short argument)


def another_call(d: Driver, end_ids: tuple[int, ...]) -> bool:
    """After a closed call: the model ends its turn (an end token) or opens one more call
    (`\n<tool_call>`, which this spells out). True when it opened one. Parallel calls are
    written as Qwen's and Hermes' templates write them, one block after the other."""
    if d.remaining() <= NEXT_CALL_RESERVE or d.stopped():
        return False
    first = set(d.masks.prefix_tokens(NEXT_CALL.encode()))
    token = d.pick(_mask(d.masks.size, first | set(end_ids)))
    if token in end_ids:
        return False
    rest = NEXT_CALL.encode()[len(d.masks.token_bytes[token]):]
    if rest:
        choose(d, [rest.decode()])
    return True


def tool_call(d: Driver, tools: list[dict], only: str | None = None, opened: bool = False) -> None:
    """Generate a complete, schema-valid tool call. `opened`: the model already wrote `<tool_call>`."""
    _force(d, ("\n" if opened else OPEN + "\n") + '{"name": "')
    names = [only] if only else [t["function"]["name"] for t in tools]
    name = choose(d, [n + '"' for n in names])[:-1]
    params = (find_tool(tools, name) or {}).get("parameters", {})
    if needs_json_grammar(params):  # arrays or nested objects: the full JSON Schema grammar
        _force(d, ', "arguments": ')
        json_value(d, params, f"tools.{name}.parameters")
        _force(d, "}\n" + CLOSE)
        return
    props: dict = params.get("properties", {})
    required = [p for p in params.get("required", []) if p in props]
    optional = [p for p in props if p not in required]
    _force(d, ', "arguments": {')
    first = True
    for prop in required:
        _force(d, ("" if first else ", ") + json.dumps(prop) + ": ")
        _value(d, props[prop])
        first = False
    for prop in optional:
        if d.remaining() <= CLOSING_RESERVE:  # no room for another argument: close the call
            _force(d, "}")
            break
        include = ("" if first else ", ") + json.dumps(prop) + ": "
        if choose(d, [include, "}"]) == "}":
            break
        _value(d, props[prop])
        first = False
    else:
        _force(d, "}")
    _force(d, "}\n" + CLOSE)

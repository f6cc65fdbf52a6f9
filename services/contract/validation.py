"""The checks every entry point runs on what a caller sends, before the engine or a tool sees it.

Runtime.Generate, RunTask on both routes and the tools service call these same functions, so
one bad input gets one answer (INVALID_ARGUMENT naming the field) wherever it arrives. Each
raises InvalidRequest(field, message); values echoed back are cut short (`shown`).
"""
from __future__ import annotations

import json
import math
from typing import Any

from inloop.services.contract.errors import InvalidRequest

MAX_JSON_DEPTH = 32            # tool arguments and schemas, setup_json: far over any real one
MAX_DEADLINE_MS = 3_600_000.0  # one hour: a task's deadline, a try's timeout, a backoff
MAX_ATTEMPTS = 10
MAX_HEADER_CHARS = 256         # a fault key or spec travels in a gRPC metadata header
# Statuses a retry can help with (Envoy's gRPC retry_on, plus ABORTED and UNKNOWN); the
# others (INVALID_ARGUMENT, UNAUTHENTICATED, ...) fail the same way every time.
RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL", "CANCELLED", "ABORTED",
             "UNKNOWN")
SCHEMA_TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error message may echo it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def header_text(field: str, text: str, limit: int = MAX_HEADER_CHARS) -> str:
    """Text that must travel as a gRPC metadata value: printable ASCII, bounded."""
    if len(text) > limit:
        raise InvalidRequest(field, f"{len(text)} characters; the limit is {limit}")
    bad = next((c for c in text if not " " <= c <= "~"), None)
    if bad is not None:
        raise InvalidRequest(field, f"must be printable ASCII (it travels in a gRPC header); found {bad!r}")
    return text


def milliseconds(field: str, value: float, limit: float = MAX_DEADLINE_MS) -> float:
    """A duration in ms: finite, >= 0 and at most `limit` (NaN and inf are refused)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= limit):
        raise InvalidRequest(field, f"must be a number of ms in [0, {limit:.0f}], got {shown(value)}")
    return float(value)


def retry_on(field: str, names) -> tuple[str, ...]:
    for i, name in enumerate(names):
        if name not in RETRYABLE:
            raise InvalidRequest(f"{field}[{i}]", f"{shown(name)} is not a retryable gRPC status; use "
                                                 f"{', '.join(RETRYABLE)}")
    return tuple(names)


def depth(value: Any) -> int:
    """How deeply lists and objects nest (a scalar is 0); iterative, so any depth is safe."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                deepest = max(deepest, level)
                stack.append((child, level + 1))
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
    return deepest


def parse_json(field: str, text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text as a value, refusing what a typed check cannot hold: NaN/Infinity, numbers
    beyond float range, nesting deeper than `max_depth`."""
    def constant(name):
        raise ValueError(f"{name} is not JSON")

    try:
        value = json.loads(text, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(field, f"not JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise InvalidRequest(field, f"nests deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise InvalidRequest(field, str(exc)) from None
    if depth(value) > max_depth:
        raise InvalidRequest(field, f"nests deeper than {max_depth} levels")
    finite_numbers(field, value)
    return value


def finite_numbers(field: str, value: Any) -> None:
    """Every number is finite and an int fits a float (10**400 is valid JSON, not a number we
    can add to)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidRequest(field, f"holds a non-finite number {shown(item)}")
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > 2 ** 1023:
            raise InvalidRequest(field, "holds an integer beyond the range of a float")


def tool_schema(field: str, schema: Any, level: int = 0) -> None:
    """A JSON Schema that the argument checks and the constrained decoder can follow."""
    if level > MAX_JSON_DEPTH:
        raise InvalidRequest(field, f"nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(schema, dict):
        raise InvalidRequest(field, f"must be a JSON Schema object, not {shown(schema)}")
    types = schema.get("type")
    names = [types] if isinstance(types, str) else types if isinstance(types, list) else None
    if types is not None and (not names or any(t not in SCHEMA_TYPES for t in names)):
        raise InvalidRequest(f"{field}.type", f"{shown(types)} is not a type name ({', '.join(SCHEMA_TYPES)})")
    if "properties" in schema:
        props = schema["properties"]
        if not isinstance(props, dict):
            raise InvalidRequest(f"{field}.properties", "must be an object of property schemas")
        for name, sub in props.items():
            tool_schema(f"{field}.properties.{name}", sub, level + 1)
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise InvalidRequest(f"{field}.required", "must be a list of property names")
    if "enum" in schema and not (isinstance(schema["enum"], list) and schema["enum"]):
        raise InvalidRequest(f"{field}.enum", "must be a non-empty list")
    if "items" in schema:
        tool_schema(f"{field}.items", schema["items"], level + 1)
    for key in ("minimum", "maximum", "minLength", "maxLength"):
        if key in schema and not (isinstance(schema[key], (int, float)) and not isinstance(schema[key], bool)
                                  and math.isfinite(schema[key])):
            raise InvalidRequest(f"{field}.{key}", f"must be a finite number, not {shown(schema[key])}")


def task_setup(field: str, setup: Any) -> dict:
    """A task's tool-state script: {"kv": {key: value}, "changes": [{"before_tool_call": n,
    "op": put|increment, "key": ..., "value"|"amount": ..., "writer": ...}]}."""
    if not isinstance(setup, dict):
        raise InvalidRequest(field, "must be a JSON object")
    unknown = sorted(set(setup) - {"kv", "changes"})
    if unknown:
        raise InvalidRequest(field, f"unknown key(s) {', '.join(map(shown, unknown))}; use kv, changes")
    kv = setup.get("kv", {})
    if not isinstance(kv, dict) or not all(_scalar(v) for v in kv.values()):
        raise InvalidRequest(f"{field}.kv", "must map keys to strings, numbers or booleans")
    changes = setup.get("changes", [])
    if not isinstance(changes, list):
        raise InvalidRequest(f"{field}.changes", "must be a list")
    for i, change in enumerate(changes):
        where = f"{field}.changes[{i}]"
        if not isinstance(change, dict):
            raise InvalidRequest(where, "must be an object")
        n = change.get("before_tool_call")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InvalidRequest(f"{where}.before_tool_call", "must be an integer >= 1")
        if change.get("op") not in ("put", "increment"):
            raise InvalidRequest(f"{where}.op", "must be put or increment")
        if not isinstance(change.get("key"), str) or not change["key"]:
            raise InvalidRequest(f"{where}.key", "must be a non-empty string")
        if not all(_scalar(change[k]) for k in ("value", "amount") if k in change):
            raise InvalidRequest(where, "value and amount must be strings, numbers or booleans")
    return setup


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))

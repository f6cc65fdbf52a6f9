"""The tools' schema: each tool's name, description and JSON Schema, and the argument checks.

The registry (tools/registry.py) binds each schema to its function; the servers offer these
definitions to the model, and both routes check a call's arguments here before it runs.

The schemas use a small subset of JSON Schema, which `validate_arguments` checks itself (so
that each message names the argument the way a model or a person can act on, which
jsonschema's generic messages do not) and which a constrained decoder can follow: `type`
(one name or a list), `properties`, `required`, `additionalProperties: false`, `enum`,
`minimum`/`maximum`, `minLength`/`maxLength`. Note that JSON Schema's "integer" refuses
booleans and 3.0, and "number" refuses booleans, as Python's json would otherwise let through.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from inloop.services.contract.errors import ToolArgumentError
from inloop.services.contract.validation import shown

MAX_TEXT_CHARS = 20_000  # a receipt or a passage, not a book: keeps every call cheap
MAX_EXPRESSION_CHARS = 500  # calculator
KV_OPS = ("get", "put", "increment")
MAX_KV_VALUE_CHARS = 4096  # a counter or a note, not a file: 600 puts of 900 KB once took 598 MB


@dataclass(frozen=True)
class ToolSchema:
    name: str
    description: str
    parameters: dict  # JSON Schema of the arguments object
    writes: bool = False  # calls may change state: an idempotency key makes them apply once

    def openai(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def _object(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


def _text(description: str, max_length: int = MAX_TEXT_CHARS) -> dict:
    return {"type": "string", "description": description, "minLength": 1, "maxLength": max_length}


TOOL_SCHEMAS: dict[str, ToolSchema] = {spec.name: spec for spec in (
    ToolSchema("search", "Search the knowledge base; returns the best matching documents (id, title, text).",
               _object({"query": _text("a few keywords about what to find", 500),
                        "k": {"type": "integer", "description": "how many documents (default 3)",
                              "minimum": 1, "maximum": 10}}, ["query"])),
    ToolSchema("extract_receipt", "Read a receipt's text; returns merchant, date (YYYY-MM-DD), total and items.",
               _object({"text": _text("the full text of the receipt")}, ["text"])),
    ToolSchema("summarize", "Summarize a text by picking its most important sentences.",
               _object({"text": _text("the text to summarize"),
                        "max_sentences": {"type": "integer", "description": "sentences to keep (default 2)",
                                          "minimum": 1, "maximum": 10}}, ["text"])),
    ToolSchema("calculator", "Evaluate an arithmetic expression with + - * / // % ** and parentheses.",
               _object({"expression": _text("for example (17 * 23) / 4", MAX_EXPRESSION_CHARS)},
                       ["expression"])),
    ToolSchema("kv", "A key-value store: get a key, put a value, or increment a number; returns the "
                     "value and its version.",
               _object({"op": {"type": "string", "enum": list(KV_OPS)},
                        "key": _text("the key", 200),
                        "value": {"type": ["string", "number", "boolean"], "description": "for put",
                                  "maxLength": MAX_KV_VALUE_CHARS},
                        "amount": {"type": "number", "description": "for increment (default 1)"}},
                       ["op", "key"]), writes=True),
)}
TOOL_NAMES = tuple(TOOL_SCHEMAS)


def openai_definitions(names=None) -> list[dict]:
    """The named tools (default: every tool) as {"type": "function", "function": {...}}."""
    return [TOOL_SCHEMAS[name].openai() for name in (TOOL_NAMES if names is None else names)]


# ---- validation -------------------------------------------------------------------
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    # JSON has no NaN/Infinity; Python's json.loads accepts them, so refuse them here.
    "number": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v)),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _type_name(value: Any) -> str:
    return next((name for name in ("null", "boolean", "integer", "number", "string", "array", "object")
                 if _TYPES[name](value)), f"non-finite {type(value).__name__}")


def _check(schema: dict, value: Any, where: str) -> None:
    """Raise ToolArgumentError naming `where` when value does not match schema."""
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[t](value) for t in names):
            raise ToolArgumentError(f"{where} must be {' or '.join(names)}, not {_type_name(value)} ({value!r:.60})")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolArgumentError(f"{where} must be one of {', '.join(map(repr, schema['enum']))}, not {value!r:.60}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise ToolArgumentError(f"{where} must not be empty" if schema["minLength"] == 1
                                    else f"{where} must have at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ToolArgumentError(f"{where} has {len(value)} characters; the limit is {schema['maxLength']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            raise ToolArgumentError(f"{where} must be >= {schema['minimum']}, not {value}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ToolArgumentError(f"{where} must be <= {schema['maximum']}, not {value}")
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        missing = [k for k in schema.get("required", ()) if k not in value]
        if missing:
            raise ToolArgumentError(f"{where}: missing required argument(s): {', '.join(missing)}")
        extra = [k for k in value if k not in props]
        if extra and schema.get("additionalProperties", True) is False:
            raise ToolArgumentError(f"{where}: unknown argument(s): {', '.join(extra)} "
                                    f"(allowed: {', '.join(props)})")
        for key, item in value.items():
            if key in props:
                _check(props[key], item, f"{where}.{key}")


def validate_arguments(name: str, args: Any) -> None:
    """Check a call against the schemas; ToolArgumentError says what is wrong."""
    if not name:
        raise ToolArgumentError(f"the tool name is empty; offered tools: {', '.join(TOOL_SCHEMAS)}")
    spec = TOOL_SCHEMAS.get(name)
    if spec is None:
        raise ToolArgumentError(f"unknown tool {shown(name)}; offered tools: {', '.join(TOOL_SCHEMAS)}")
    if not isinstance(args, dict):
        raise ToolArgumentError(f"{name} arguments must be a JSON object, not {_type_name(args)}")
    _check(spec.parameters, args, name)  # messages read "calculator.expression must be ..."

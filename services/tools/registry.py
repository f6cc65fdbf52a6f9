"""The tool registry: each tool's schema (contract/tool_schema.py) bound to its function, and
the one way to call a tool.

Both routes call tools through `call_tool` / `execute` (the runtime in-process, the tools
service per RPC), so validation, idempotency and results are identical on both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from inloop.services.contract.tool_schema import TOOL_SCHEMAS, ToolSchema, validate_arguments
from inloop.services.tools.functions.calculator import calculator
from inloop.services.tools.functions.extract_receipt import extract_receipt
from inloop.services.tools.functions.kv import kv
from inloop.services.tools.functions.search import search
from inloop.services.tools.functions.summarize import summarize
from inloop.services.tools.state import StoreBase, call_fingerprint

__all__ = ["TOOLS", "Tool", "ToolOutcome", "call_tool", "execute"]

_FUNCTIONS: dict[str, Callable[..., dict]] = {
    "search": search, "extract_receipt": extract_receipt, "summarize": summarize, "calculator": calculator, "kv": kv,
}


@dataclass(frozen=True)
class Tool:
    schema: ToolSchema
    fn: Callable[..., dict]

    @property
    def name(self) -> str:
        return self.schema.name

    def openai(self) -> dict:
        return self.schema.openai()


TOOLS: dict[str, Tool] = {name: Tool(schema, _FUNCTIONS[name]) for name, schema in TOOL_SCHEMAS.items()}


# ---- calling ----------------------------------------------------------------------
@dataclass(frozen=True)
class ToolOutcome:
    result: dict
    replayed: bool  # True when the idempotency log answered instead of the tool


def execute(state: StoreBase, name: str, args: dict, idempotency_key: str = "",
            session: str = "") -> ToolOutcome:
    """Validate and run one call in `session`; a keyed write runs at most once."""
    validate_arguments(name, args)
    spec = TOOLS[name]
    keyed = bool(spec.schema.writes and idempotency_key)
    fingerprint = call_fingerprint(name, args) if keyed else ""

    def work(sess) -> ToolOutcome:
        # One unit of work on every store: a retry racing its first attempt (the client gave
        # up, the first attempt is still running, maybe on another replica) waits or re-runs,
        # then sees the stored result.
        if keyed:
            stored = sess.replay(idempotency_key, fingerprint)
            if stored is not None:
                return ToolOutcome(stored, replayed=True)
        result = spec.fn(sess, **args)
        if keyed:
            sess.remember(idempotency_key, fingerprint, result)
        return ToolOutcome(result, replayed=False)

    return state.run(session, work)


def call_tool(state: StoreBase, name: str, args: dict, idempotency_key: str = "",
              session: str = "") -> dict:
    """The result of one call (see `execute` for whether it was a replay)."""
    return execute(state, name, args, idempotency_key, session).result

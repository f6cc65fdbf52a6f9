"""`kv`: a small key-value store per session (get, put, increment), with versions.

Every result carries the key's value and version after the call (version 0 = never
written), so a caller can see whether its write landed and what changed between steps
(the tool_state_adaptation scenario relies on that). Writes are made idempotent by the
registry: a retried put/increment with the same idempotency key returns the stored result
instead of applying again (see registry.call_tool).
"""
from __future__ import annotations

import math
from typing import Any

from inloop.services.contract.errors import ToolError
from inloop.services.contract.tool_schema import KV_OPS as OPS


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def kv(state, op: str, key: str, value: Any = None, amount: float | None = None) -> dict:
    """Run one kv operation in the session's namespace; returns {op, key, value, version}."""
    if op not in OPS:
        raise ToolError(f"kv op must be one of {', '.join(OPS)}, not {op!r}")
    if not key:
        raise ToolError("kv key must be a non-empty string")
    if value is not None and op != "put":
        raise ToolError(f"kv {op} takes no value (only put does)")
    if amount is not None and op != "increment":
        raise ToolError(f"kv {op} takes no amount (only increment does)")
    with state.lock:  # read-modify-write must not interleave with another call
        if op == "get":
            entry = state.kv_get(key)
            return {"op": op, "key": key, "value": entry.value, "version": entry.version,
                    "found": entry.version > 0}
        if op == "put":
            if value is None:
                raise ToolError("kv put needs a value")
            entry = state.kv_set(key, value)
            return {"op": op, "key": key, "value": entry.value, "version": entry.version}
        # increment: a missing key counts from 0; amount defaults to 1.
        step = 1 if amount is None else amount
        if not _is_number(step):
            raise ToolError(f"kv increment amount must be a number, not {step!r}")
        current = state.kv_get(key).value
        if current is None:
            current = 0
        if not _is_number(current):
            raise ToolError(f"kv key {key!r} holds {current!r}, which is not a number; "
                            "increment needs a numeric value (put one first)")
        if not math.isfinite(current + step):  # JSON has no Infinity; refuse before storing
            raise ToolError(f"kv increment of {key!r} by {step!r} overflows")
        entry = state.kv_set(key, current + step)
        return {"op": op, "key": key, "value": entry.value, "version": entry.version,
                "previous": current}

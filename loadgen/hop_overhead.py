"""Hop overhead from a task's trace: where its end-to-end time went, per task and per hop.

A task's trace (loadgen client span → RunTask server span → `invoke_agent` → one span per
hop, `chat {model}` or `execute_tool {tool}`; on the external route each hop holds one gRPC
CLIENT span per attempt, each with the runtime's or the tools service's SERVER span under
it) splits into parts that do not overlap:

  wire_ms        client span minus its server span, for the loadgen → service call and for
                 each hop's final attempt (serialization, the network, gRPC queues)
  model_ms       the runtime's work on each model step's final attempt (its SERVER span; on
                 the internal route the in-process `chat` span itself)
  tools_ms       the same for tool calls (the tools service's SERVER span, or `execute_tool`)
  retry_ms       every attempt before the final one, whole, plus the backoff gaps between them
  controller_ms  the agent loop's own time: the RunTask server span minus its hops, plus the
                 time inside each hop spent outside its attempts (the "controller" is the
                 runtime process on the internal route)

`end_to_end_ms` is the loadgen's wall-clock latency of the call, measured outside tracing,
so `other_ms` (end to end minus the parts) and `sum_error_pct` check the parts: a missing or
misparented span shows up there instead of vanishing.
"""
from __future__ import annotations

PARTS = ("controller_ms", "wire_ms", "model_ms", "tools_ms", "retry_ms")


def _ms(span: dict) -> float:
    return (span["end_ns"] - span["start_ns"]) / 1e6


def _children(spans: list[dict], parent: dict, kind: str | None = None) -> list[dict]:
    out = [s for s in spans if s["parent_span_id"] == parent["span_id"] and (kind is None or s["kind"] == kind)]
    return sorted(out, key=lambda s: s["start_ns"])


def _find(spans: list[dict], predicate) -> dict | None:
    return next((s for s in spans if predicate(s)), None)


def _is_run_task(span: dict) -> bool:
    return span["name"].rstrip("/").endswith("/RunTask")


def _is_rpc(span: dict) -> bool:
    """A gRPC call's span (the instrumentation's, not a GenAI span of CLIENT kind like `chat`)."""
    return span.get("attributes", {}).get("rpc.system") == "grpc"


def trace_is_complete(spans: list[dict]) -> bool:
    """Every part of a task's trace has arrived: the RunTask server span and `invoke_agent`,
    and a SERVER span under every attempt that a service sent (each hop's gRPC CLIENT span)."""
    server = _find(spans, lambda s: s["kind"] == "server" and _is_run_task(s))
    if server is None or _find(spans, lambda s: s["name"].startswith("invoke_agent")) is None:
        return False
    ids = {s["parent_span_id"] for s in spans if s["kind"] == "server"}
    return all(s["span_id"] in ids for s in spans
               if s["kind"] == "client" and _is_rpc(s) and not _is_run_task(s) and s["status"] != "error")


def hop_breakdown(spans: list[dict], end_to_end_ms: float | None = None) -> dict:
    """The parts (ms) of one task's trace, plus `hops`: one row per hop span."""
    parts = dict.fromkeys(PARTS, 0.0)
    client = _find(spans, lambda s: s["kind"] == "client" and _is_rpc(s) and _is_run_task(s))
    server = _find(spans, lambda s: s["kind"] == "server" and _is_run_task(s)
                   and (client is None or s["parent_span_id"] == client["span_id"]))
    if server is None:
        raise ValueError("the trace has no RunTask server span")
    agent = _find(spans, lambda s: s["name"].startswith("invoke_agent") and s["parent_span_id"] == server["span_id"])
    if client is not None:
        parts["wire_ms"] += _ms(client) - _ms(server)
    parts["controller_ms"] += _ms(server)
    hops = []
    for hop in (_children(spans, agent) if agent else []):
        kind = "model" if hop["name"].startswith("chat ") else "tools" if hop["name"].startswith("execute_tool ") else ""
        if not kind:
            continue
        parts["controller_ms"] -= _ms(hop)
        row = _split_hop(spans, hop, kind)
        for key in PARTS:
            parts[key] += row[key]
        hops.append(row)
    e2e = end_to_end_ms if end_to_end_ms is not None else (_ms(client) if client else _ms(server))
    other = e2e - sum(parts.values())
    return {"end_to_end_ms": e2e, **parts, "other_ms": other,
            "sum_error_pct": abs(other) / e2e * 100 if e2e > 0 else 0.0, "hops": hops}


def _split_hop(spans: list[dict], hop: dict, kind: str) -> dict:
    service_key = "model_ms" if kind == "model" else "tools_ms"
    row = {"hop": hop["name"], "attempts": 0, "status": hop["status"], **dict.fromkeys(PARTS, 0.0)}
    attempts = [s for s in _children(spans, hop, "client") if _is_rpc(s)]
    if not attempts:  # in process (internal route): the hop span is the work itself
        row["attempts"] = 1
        row[service_key] = _ms(hop)
        return row
    row["attempts"] = len(attempts)
    *earlier, last = attempts
    row["retry_ms"] = sum(_ms(a) for a in earlier)
    # Backoff: the gaps between consecutive attempts.
    row["retry_ms"] += sum(max(0.0, (b["start_ns"] - a["end_ns"]) / 1e6) for a, b in zip(attempts, attempts[1:]))
    served = _children(spans, last, "server")
    service_ms = _ms(served[0]) if served else 0.0
    row[service_key] = service_ms
    row["wire_ms"] = _ms(last) - service_ms
    # Inside the hop but outside every attempt and gap: the client's own work (building the
    # request, tenacity's bookkeeping, parsing the reply).
    row["controller_ms"] = _ms(hop) - (last["end_ns"] - attempts[0]["start_ns"]) / 1e6
    return row


def mean_breakdown(rows: list[dict]) -> dict:
    """Means over tasks, for the report's `hops.rows`."""
    n = len(rows)
    if not n:
        return {"n": 0}
    keys = ("end_to_end_ms", *PARTS, "other_ms", "sum_error_pct")
    return {"n": n, **{k: sum(r[k] for r in rows) / n for k in keys}}

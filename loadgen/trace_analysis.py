"""Join task records to their traces: a hop breakdown per task, means per (profile, route),
and a few whole traces kept for the report's waterfall.

Services export in batches, so the last spans of a task arrive shortly after its reply;
each trace is awaited until `trace_is_complete` says so (or `timeout_s` passes, and the
record says `trace_complete: false` rather than reporting a breakdown with holes).
"""
from __future__ import annotations

from collections import defaultdict

from inloop.loadgen.hop_overhead import PARTS, hop_breakdown, mean_breakdown, trace_is_complete
from inloop.loadgen.otlp_receiver import SpanStore


def attach_breakdowns(records: list[dict], store: SpanStore, timeout_s: float = 5.0) -> None:
    """Add `hops` (the parts, ms) and `trace_complete` to every record that has a trace id."""
    for rec in records:
        if not rec.get("trace_id"):
            continue
        spans = store.wait_for_trace(rec["trace_id"], trace_is_complete, timeout_s)
        rec["trace_complete"] = trace_is_complete(spans)
        rec["span_count"] = len(spans)
        if not rec["trace_complete"]:
            continue
        try:
            parts = hop_breakdown(spans, rec["latency_ms"])
        except ValueError:
            rec["trace_complete"] = False
            continue
        rec["hops"] = {k: round(v, 3) for k, v in parts.items() if k != "hops"}
        rec["hop_rows"] = parts["hops"]
        timeout_s = min(timeout_s, 2.0)  # once one trace is in, the rest are (nearly) too


def hop_rows(records: list[dict]) -> list[dict]:
    """Mean parts per (profile, route), in the order the records first name them."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        if rec.get("hops"):
            groups[(rec["profile"], rec["route"])].append(rec["hops"])
    tokens: dict[tuple, list[int]] = defaultdict(list)
    for rec in records:
        if rec.get("hops"):
            tokens[(rec["profile"], rec["route"])].append(rec.get("completion_tokens", 0))
    rows = []
    for (profile, route), parts in groups.items():
        mean = mean_breakdown(parts)
        row = {"profile": profile, "route": route, **{k: round(v, 3) if isinstance(v, float) else v
                                                      for k, v in mean.items()}}
        # per completion token, so runs on models that write more or fewer tokens compare
        per_token = sum(tokens[(profile, route)]) / len(tokens[(profile, route)])
        row["completion_tokens_mean"] = round(per_token, 2)
        if per_token > 0:
            row.update({f"{k.removesuffix('_ms')}_ms_per_token": round(v / per_token, 4)
                        for k, v in mean.items() if k.endswith("_ms") and isinstance(v, float)})
        rows.append(row)
    return rows


def sample_traces(records: list[dict], store: SpanStore, per_group: int = 1) -> dict[str, list[dict]]:
    """Whole traces for the waterfall: per (profile, route), the complete trace with most spans
    (the one with retries, where the hops show), so the report shows a task worth reading."""
    best: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        if rec.get("trace_complete"):
            best[(rec["profile"], rec["route"])].append(rec)
    out = {}
    for group in best.values():
        for rec in sorted(group, key=lambda r: (-r.get("span_count", 0), r["latency_ms"]))[:per_group]:
            out[rec["trace_id"]] = store.trace(rec["trace_id"])
    return out


def breakdown_check(records: list[dict], tolerance_pct: float = 5.0) -> dict:
    """How many traced tasks' parts add up to their end-to-end time within the tolerance."""
    traced = [r for r in records if r.get("hops")]
    within = [r for r in traced if r["hops"]["sum_error_pct"] <= tolerance_pct]
    return {"traced": len(traced), "within_tolerance": len(within), "tolerance_pct": tolerance_pct,
            "records": len(records), "incomplete": sum(1 for r in records if r.get("trace_id") and not r.get("hops")),
            "parts": list(PARTS)}

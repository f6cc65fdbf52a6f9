"""A realistic synthetic loadgen artifact (inloop.loadgen/v1) for the report tests.

Numbers are drawn from a seeded generator with the shapes real runs have: log-normal
latencies, the external route slower by a profile-dependent factor, faults that cause
retries, errors and long tails. Every derived number (matrix cells, hop rows) is computed
from the generated runs, so the tables the tests look for are consistent with the plots.
"""
from __future__ import annotations

import math
import random

from inloop.loadgen.matrix import cell
from inloop.loadgen.report.schema import SCHEMA

FAMILIES = ("calculator", "kv", "search")
PROFILES = (  # name, description, ext/int factor, fault rate
    ("p00", "no faults", 1.15, 0.0),
    ("p01", "tools abort every 3rd call (UNAVAILABLE)", 1.6, 0.3),
    ("p02", "tools delay 300 ms on 25% of calls", 2.4, 0.25),
    ("p03", "controller→runtime delay 50 ms", 1.4, 0.1),
    ("p04", "abort 10% + delay 10%", 1.9, 0.2),
    ("p05", "per-try timeout 250 ms, 3 attempts", 1.3, 0.15),
)
SERVICES = {"external": ("controller", "runtime", "tools"), "internal": ("loadgen", "runtime")}


def _cell(internal: list[dict], external: list[dict]) -> dict:
    """A matrix cell as the matrix computes it (paired comparisons, like for like, deltas)."""
    return cell(internal + external, seed=0)


def _trace(rng: random.Random, trace_id: str, route: str, n_spans: int, t0: int) -> list[dict]:
    """A task's spans: a root `invoke_agent`, then alternating model and tool hops, each a
    client span with a server child on the next service (so the tree nests three deep)."""
    services = SERVICES[route]
    front = services[0]
    spans: list[dict] = []

    def span(name, service, parent, start, dur_ms, kind="INTERNAL", status="OK", **attrs):
        sid = f"{len(spans) + 1:016x}"
        spans.append({"trace_id": trace_id, "span_id": sid, "parent_span_id": parent, "name": name,
                      "service": service, "kind": kind, "start_ns": start, "end_ns": start + int(dur_ms * 1e6),
                      "status": status, "attributes": attrs})
        return sid

    root = span(f"invoke_agent {route}", front, "", t0, 0, kind="SERVER")
    t, step = t0 + int(2e6), 0
    while len(spans) < n_spans - 1:
        model_ms = rng.uniform(40, 120)
        c = span("chat smollm2", front, root, t, model_ms + 3, kind="CLIENT", **{"gen_ai.operation.name": "chat"})
        span("chat smollm2", "runtime", c, t + int(1.5e6), model_ms, kind="SERVER",
             **{"gen_ai.usage.output_tokens": rng.randint(8, 40)})
        t += int((model_ms + 4) * 1e6)
        tool_ms = rng.uniform(2, 30)
        failed = route == "external" and step == 1
        c = span("execute_tool calculator", front, root, t, tool_ms + 2, kind="CLIENT",
                 status="ERROR" if failed else "OK", **{"gen_ai.tool.name": "calculator"})
        child = span("execute_tool calculator", services[-1], c, t + int(1e6), tool_ms, kind="SERVER")
        if len(spans) < n_spans - 1:
            span("calculator.eval", services[-1], child, t + int(1.5e6), tool_ms * 0.6)
        t += int((tool_ms + 3) * 1e6)
        step += 1
    spans[0]["end_ns"] = t + int(1e6)
    return spans[:n_spans]


def make_artifact(n_profiles: int = 3, runs_per_cell: int = 12, spans_per_trace: int = 12,
                  seed: int = 7) -> dict:
    """An artifact of kind matrix that also carries loops, coldwarm, load and hops sections."""
    rng = random.Random(seed)
    profiles = PROFILES[:n_profiles]
    runs: list[dict] = []
    for name, _, factor, fault in profiles:
        for rep in range(runs_per_cell):
            family = FAMILIES[rep % len(FAMILIES)]
            base = rng.lognormvariate(math.log(180), 0.35)
            for route in ("internal", "external"):
                faulted = route == "external" and rng.random() < fault
                retries = rng.randint(1, 2) if faulted else 0
                lat = base * (factor if route == "external" else 1.0) * (1 + 0.8 * retries)
                error = "UNAVAILABLE" if faulted and rng.random() < 0.4 else ""
                runs.append({"profile": name, "case": f"{family}-{rep:03d}", "family": family, "route": route,
                             "rep": rep, "first": rep == 0, "ok": not error, "passed": not error and rng.random() > 0.05,
                             "error_type": error, "latency_ms": lat, "retries": retries,
                             "steps": rng.randint(2, 4), "trace_id": f"{rng.getrandbits(128):032x}"})
    # Keep the spans of the first p00 run on each route, as a runner keeps its sample traces.
    traces = {}
    for route in ("external", "internal"):
        run = next(r for r in runs if r["profile"] == "p00" and r["route"] == route)
        traces[run["trace_id"]] = _trace(rng, run["trace_id"], route, spans_per_trace, 1_764_000_000_000_000_000)

    def pick(profile, route, family=None):
        return [r for r in runs if r["profile"] == profile and r["route"] == route
                and (family is None or r["family"] == family)]

    matrix = {"profiles": [{"name": n, "description": d, "overall": _cell(pick(n, "internal"), pick(n, "external")),
                            "families": {f: _cell(pick(n, "internal", f), pick(n, "external", f)) for f in FAMILIES}}
                           for n, d, _, _ in profiles]}
    hops = {"rows": []}
    for n, _, _, _ in profiles:
        for route in ("internal", "external"):
            e2e = sum(r["latency_ms"] for r in pick(n, route)) / len(pick(n, route))
            model, tools = e2e * 0.62, e2e * 0.08
            ctrl, wire = (e2e * 0.07, e2e * 0.09) if route == "external" else (0.0, 0.0)
            retry = e2e * 0.1 if route == "external" and n != "p00" else 0.0
            other = e2e - model - tools - ctrl - wire - retry
            hops["rows"].append({"profile": n, "route": route, "n": len(pick(n, route)), "end_to_end_ms": e2e,
                                 "controller_ms": ctrl, "wire_ms": wire, "model_ms": model, "tools_ms": tools,
                                 "retry_ms": retry, "other_ms": other, "sum_error_pct": 0.4})
    stats = lambda m: {"mean": m, "median": m * 0.93, "p90": m * 1.4, "p95": m * 1.7, "p99": m * 2.6, "std": m * 0.3}
    return {
        "schema": SCHEMA, "kind": "matrix", "created": "2026-11-27T10:00:00Z",
        "meta": {"commit": "9248004c0ffee", "command": "inloop loadgen matrix --profiles p00-p05 --reps 7",
                 "host": {"cpu": "AMD EPYC 9654", "cores": 16, "gpu": "NVIDIA H100 80GB HBM3"}, "backend": "cuda",
                 "model": {"name": "SmolLM2-135M-Instruct", "sha256": "3f1c0a9e" * 8}, "seeds": [0, 1, 2],
                 "packages": {"grpcio": "1.85.1", "numpy": "2.3.1", "inloop": "0.1.0"},
                 "profiles": {n: f'[tools.fault]\nabort = "every=3;status=UNAVAILABLE"\n# {d}\n'
                              for n, d, _, _ in profiles},
                 "args": {"reps": runs_per_cell, "max_tokens": 96, "deadline_ms": 8000}},
        "matrix": matrix,
        "loops": {"arms": [{"scenario_set": s, "route": r, "gate": g, "n": 40, "success_rate": 0.9 - 0.2 * (s == "stress") + 0.05 * g,
                            "mean_latency_ms": 900 * (1.5 if r == "external" else 1) * (1.1 if g else 1), "mean_steps": 3.2 + g}
                           for s in ("baseline", "stress") for r in ("internal", "external") for g in (False, True)],
                  "ratios": [{"scenario_set": s, "gate": g, "ext_int_latency_ratio": 1.5}
                             for s in ("baseline", "stress") for g in (False, True)],
                  "deltas": [{"scenario_set": s, "route": r, "success_delta": 0.05, "ci95": [-0.021, 0.118]}
                             for s in ("baseline", "stress") for r in ("internal", "external")],
                  "gate": {"statistic": "mean_entropy", "threshold": 1.85, "source": "calibration split, p90"}},
        "coldwarm": {"start_to_healthy_ms": 1420.0, "cold_ttft_ms": 88.5, "cold_e2e_ms": 612.0,
                     "warm": {"n": 50, "mean_ms": 141.2, "p95_ms": 188.0, "p99_ms": 243.9}},
        "load": {"mode": "concurrency", "concurrency": 8, "rate": None, "completed": 480, "failed": 3,
                 "duration_s": 62.4, "request_throughput": 7.69, "output_throughput": 492.3,
                 "total_token_throughput": 1877.0, "goodput": 7.1, "ttft_ms": stats(24.0),
                 "tpot_ms": stats(3.1), "itl_ms": stats(3.0), "e2el_ms": stats(1040.0)},
        "hops": hops, "runs": runs, "traces": traces,
    }

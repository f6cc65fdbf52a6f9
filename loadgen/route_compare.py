"""Comparing the two routes so that a claim says whether it is signal or noise.

A latency ratio over all pairs mixes in tasks that failed: a route whose failed tasks end
early looks faster under faults. So each comparison is made over like-for-like pairs too:

- `both_succeeded`: pairs in which both routes answered and the checker passed;
- `both_finished`: pairs in which both routes ended without a typed error;

with the success-rate and error-rate deltas (external minus internal) beside them, and a
cost per correct answer: a route's total task time (retries, backoff and failed tasks
included) over its number of passed tasks.

Each ratio is classified as the users' results page does: "internal faster" (its 95% CI lies
above 1: the external route is slower), "external faster" (below 1), or "parity within
noise" (the CI includes 1). A CI is shown only from MIN_PAIRS_FOR_CI pairs up and a p99 only
from MIN_SAMPLES_FOR_P99 samples up: below that a CI is "n too small" and a p99 is the max.
"""
from __future__ import annotations

import math

import numpy as np

from inloop.loadgen.stats import bootstrap_ci

MIN_PAIRS_FOR_CI = 10
MIN_SAMPLES_FOR_P99 = 100
N_BOOT = 2000
INTERNAL_FASTER, EXTERNAL_FASTER, PARITY, N_TOO_SMALL = (
    "internal faster", "external faster", "parity within noise", "n too small")

NO_CI = [math.nan, math.nan]  # too few pairs (the artifact keeps a two-number ci95 everywhere)

# which pairs a like-for-like comparison keeps: (internal record, external record) -> bool
SUBSETS = {
    "all": lambda i, e: True,
    "both_finished": lambda i, e: i["ok"] and e["ok"],
    "both_succeeded": lambda i, e: i["passed"] and e["passed"],
}


def has_ci(ci95) -> bool:
    return bool(ci95) and len(ci95) == 2 and all(isinstance(x, (int, float)) and math.isfinite(x) for x in ci95)


def classify(ci95: list[float] | None) -> str:
    """The verdict of an external/internal ratio from its 95% CI (NaNs or None: too few pairs)."""
    if not has_ci(ci95):
        return N_TOO_SMALL
    low, high = ci95
    if low > 1.0:
        return INTERNAL_FASTER
    if high < 1.0:
        return EXTERNAL_FASTER
    return PARITY


def pairs_of(recs: list[dict]) -> list[tuple[dict, dict]]:
    """(internal, external) records of the same case and repetition, in first-seen order."""
    by_key: dict[tuple, dict] = {}
    for r in recs:
        by_key.setdefault((r["case"], r["rep"]), {})[r["route"]] = r
    return [(v["internal"], v["external"]) for v in by_key.values() if len(v) == 2]


def ratio(pairs: list[tuple[dict, dict]], statistic: str, seed: int) -> dict:
    """An external/internal latency ratio over `pairs`: value, CI (from MIN_PAIRS_FOR_CI pairs
    up; for a ratio of p99s from MIN_SAMPLES_FOR_P99 up) and verdict."""
    n = len(pairs)
    out = {"n": n, "value": math.nan, "ci95": NO_CI, "verdict": N_TOO_SMALL}
    if n == 0:
        return out
    lat = np.array([(i["latency_ms"], e["latency_ms"]) for i, e in pairs], dtype=float)
    need = MIN_SAMPLES_FOR_P99 if "p99" in statistic else MIN_PAIRS_FOR_CI
    if n < need:
        if "p99" not in statistic:  # a mean ratio of few pairs is still a number; a "p99" of few is a max
            out["value"] = float(lat[:, 1].mean() / lat[:, 0].mean())
        return out
    ci = bootstrap_ci(lat, statistic, n_boot=N_BOOT, seed=seed)
    out.update(value=ci.estimate, ci95=[ci.low, ci.high], verdict=classify([ci.low, ci.high]))
    return out


def rate_delta(pairs: list[tuple[dict, dict]], hit, seed: int) -> dict:
    """external minus internal rate of `hit(record)` over paired tasks, with a paired
    bootstrap CI from MIN_PAIRS_FOR_CI pairs up."""
    n = len(pairs)
    out = {"n": n, "value": math.nan, "ci95": NO_CI}
    if n == 0:
        return out
    diff = np.array([float(bool(hit(e))) - float(bool(hit(i))) for i, e in pairs])
    out["value"] = float(diff.mean())
    if n >= MIN_PAIRS_FOR_CI:
        ci = bootstrap_ci(diff, "mean", n_boot=N_BOOT, seed=seed)
        out["ci95"] = [ci.low, ci.high]
    return out


def cost_per_correct(recs: list[dict]) -> dict:
    """Per route: total task time (every task, failed ones and retries included) over the
    number of passed tasks; None for a route with no passed task. Plus ext/int."""
    out: dict = {}
    for route in ("internal", "external"):
        mine = [r for r in recs if r["route"] == route]
        passed = sum(bool(r["passed"]) for r in mine)
        out[route] = sum(r["latency_ms"] for r in mine) / passed if passed else None
    both = out["internal"] and out["external"]
    out["ratio"] = out["external"] / out["internal"] if both else None
    return out


def p99_or_max(values: list[float]) -> tuple[float, str]:
    """(value, label): the p99 from MIN_SAMPLES_FOR_P99 samples up, else the max, so labelled."""
    if not values:
        return math.nan, "p99"
    if len(values) < MIN_SAMPLES_FOR_P99:
        return float(max(values)), "max"
    return float(np.percentile(values, 99)), "p99"


def compare(recs: list[dict], seed: int) -> dict:
    """Everything the report says about one cell's two routes."""
    pairs = pairs_of(recs)
    like = {}
    for name, keep in SUBSETS.items():
        chosen = [(i, e) for i, e in pairs if keep(i, e)]
        like[name] = {"pairs": len(chosen), "ratio_mean": ratio(chosen, "ratio_of_means", seed),
                      "ratio_p99": ratio(chosen, "ratio_of_p99", seed)}
    return {"like_for_like": like,
            "success_delta": rate_delta(pairs, lambda r: r["passed"], seed),
            "error_delta": rate_delta(pairs, lambda r: not r["ok"], seed),
            "cost_per_correct": cost_per_correct([r for pair in pairs for r in pair])}


def ci_half_width(entry: dict) -> float:
    """Half the width of a ratio's 95% CI, in the ratio's units (inf without a CI)."""
    ci = entry.get("ci95")
    return (ci[1] - ci[0]) / 2 if has_ci(ci) else math.inf

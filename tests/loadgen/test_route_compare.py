"""The route comparison statistics (loadgen/route_compare.py) on synthetic data with known
answers: a ratio's CI, parity under pure noise, the like-for-like split that undoes the
"failures end early" illusion, the CI and p99 thresholds, deltas, cost per correct answer,
and a matrix that grows until its CI is tight."""
from __future__ import annotations

import math
import random

import pytest

from inloop.loadgen import route_compare as rc
from inloop.loadgen.matrix import Growth, run_matrix


def rec(case: int, route: str, ms: float, ok: bool = True, passed: bool | None = None, rep: int = 0) -> dict:
    return {"case": f"c{case}", "rep": rep, "route": route, "latency_ms": ms, "ok": ok,
            "passed": ok if passed is None else passed}


def pairs(n: int, factor: float, seed: int = 1, sigma: float = 0.2) -> list[dict]:
    """n pairs: internal log-normal around 100 ms, external = internal x factor x its own noise."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        base = rng.lognormvariate(math.log(100), sigma)
        out += [rec(i, "internal", base), rec(i, "external", base * factor * rng.lognormvariate(0, 0.05))]
    return out


def test_a_known_ratio_is_inside_its_ci_and_called_internal_faster():
    out = rc.compare(pairs(400, 1.5), seed=0)["like_for_like"]["all"]["ratio_mean"]
    low, high = out["ci95"]
    assert low < 1.5 < high and high - low < 0.1 and abs(out["value"] - 1.5) < 0.03
    assert out["verdict"] == rc.INTERNAL_FASTER
    faster = rc.compare(pairs(400, 0.7), seed=0)["like_for_like"]["all"]["ratio_mean"]
    assert faster["verdict"] == rc.EXTERNAL_FASTER and faster["ci95"][1] < 1


def test_noise_alone_is_parity():
    """Both routes drawn from one distribution, unpaired noise: the CI must include 1."""
    rng = random.Random(5)
    recs = []
    for i in range(60):
        recs += [rec(i, route, rng.lognormvariate(math.log(100), 0.3)) for route in ("internal", "external")]
    out = rc.compare(recs, seed=0)["like_for_like"]["all"]["ratio_mean"]
    assert out["ci95"][0] < 1 < out["ci95"][1] and out["verdict"] == rc.PARITY


def test_failures_that_end_early_do_not_make_the_external_route_look_faster():
    """Every 3rd external task fails fast (10 ms): over all pairs the external route looks
    faster; like for like (both succeeded) it is 1.3x slower, and the deltas say why."""
    recs = []
    for i in range(60):
        recs.append(rec(i, "internal", 100.0))
        failed = i % 3 == 0
        recs.append(rec(i, "external", 10.0 if failed else 130.0, ok=not failed))
    out = rc.compare(recs, seed=0)
    assert out["like_for_like"]["all"]["ratio_mean"]["value"] < 1.0
    ok = out["like_for_like"]["both_succeeded"]
    assert ok["pairs"] == 40 and ok["ratio_mean"]["value"] == pytest.approx(1.3)
    assert ok["ratio_mean"]["verdict"] == rc.INTERNAL_FASTER
    assert out["success_delta"]["value"] == pytest.approx(-1 / 3) and out["error_delta"]["value"] == pytest.approx(1 / 3)
    # cost per correct answer: internal 6000 ms / 60, external (40 x 130 + 20 x 10) / 40
    cost = out["cost_per_correct"]
    assert cost["internal"] == pytest.approx(100.0) and cost["external"] == pytest.approx(135.0)
    assert cost["ratio"] == pytest.approx(1.35)


def test_a_ci_needs_10_pairs_and_a_p99_100_samples():
    nine, ten = rc.compare(pairs(9, 1.5), 0), rc.compare(pairs(10, 1.5), 0)
    assert nine["like_for_like"]["all"]["ratio_mean"]["verdict"] == rc.N_TOO_SMALL
    assert all(math.isnan(v) for v in nine["like_for_like"]["all"]["ratio_mean"]["ci95"])
    assert not math.isnan(nine["like_for_like"]["all"]["ratio_mean"]["value"])  # the ratio itself is shown
    assert rc.has_ci(ten["like_for_like"]["all"]["ratio_mean"]["ci95"])
    assert math.isnan(ten["success_delta"]["ci95"][0]) is False and math.isnan(nine["success_delta"]["ci95"][0])
    # a ratio of p99s: from 100 pairs up only
    assert rc.compare(pairs(99, 1.5), 0)["like_for_like"]["all"]["ratio_p99"]["verdict"] == rc.N_TOO_SMALL
    assert rc.has_ci(rc.compare(pairs(100, 1.5), 0)["like_for_like"]["all"]["ratio_p99"]["ci95"])
    assert rc.p99_or_max(list(range(99))) == (98.0, "max")
    value, label = rc.p99_or_max([float(v) for v in range(100)])
    assert label == "p99" and value == pytest.approx(98.01)


def test_no_pairs_and_no_passes_say_so_rather_than_divide_by_zero():
    out = rc.compare([rec(0, "internal", 100.0, ok=False), rec(0, "external", 50.0, ok=False)], 0)
    assert out["like_for_like"]["both_succeeded"]["pairs"] == 0
    assert math.isnan(out["like_for_like"]["both_succeeded"]["ratio_mean"]["value"])
    assert out["cost_per_correct"] == {"internal": None, "external": None, "ratio": None}


class FakeRunner:
    """Tasks that take no time: external 1.2x internal with noise, every 4th external fails."""

    def __init__(self):
        self.rng = random.Random(3)
        self.calls = 0

    def run(self, case, route, *, run_id, profile, rep, first=False):
        self.calls += 1
        base = 100 * self.rng.lognormvariate(0, 0.1)
        failed = route == "external" and self.calls % 8 == 0
        return {"profile": profile.name, "case": case, "family": "f", "route": route, "rep": rep,
                "ok": not failed, "passed": not failed, "error_type": "x" if failed else "",
                "latency_ms": base * (1.2 if route == "external" else 1.0), "retries": 0}


class Profile:
    def __init__(self, name):
        self.name = name


def test_the_matrix_grows_until_enough_pairs_succeeded_on_both_routes():
    runner = FakeRunner()
    profiles = [Profile("p00"), Profile("p04")]
    grow = Growth(len(profiles), min_pairs=20, half_width=0.0, budget_s=60, seed=0)
    recs = run_matrix(runner, profiles, ["a", "b", "c"], runs=1, warmups=0, run_id="t", grow=grow)
    for p in ("p00", "p04"):
        mine = [r for r in recs if r["profile"] == p]
        both = rc.compare(mine, 0)["like_for_like"]["both_succeeded"]["pairs"]
        # grown a repetition (3 pairs) at a time, stopped at the first that reached 20
        assert 20 <= both < 20 + 3 and len(mine) % 6 == 0


def test_growth_stops_at_its_budget():
    grow = Growth(1, min_pairs=10_000, half_width=0.0, budget_s=0.0, seed=0)
    recs = run_matrix(FakeRunner(), [Profile("p00")], ["a"], runs=2, warmups=0, run_id="t", grow=grow)
    assert len(recs) == 4  # the fixed runs, nothing more

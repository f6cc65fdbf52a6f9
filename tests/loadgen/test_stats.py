"""inloop.loadgen.stats: vLLM-style latency summaries and the bootstrap CI, against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from inloop.loadgen.stats import STAT_KEYS, bootstrap_ci, summarize_ms


def test_summary_of_one_to_ten_matches_hand_computed_values():
    s = summarize_ms([float(v) for v in range(1, 11)])
    assert tuple(s) == STAT_KEYS
    # numpy's default (linear) percentile: position p/100 * (n - 1) between sorted values.
    assert s["mean"] == pytest.approx(5.5)
    assert s["median"] == pytest.approx(5.5)
    assert s["p90"] == pytest.approx(9.1)     # 0.9 * 9 = 8.1 -> 9 + 0.1 * (10 - 9)
    assert s["p95"] == pytest.approx(9.55)    # 8.55 -> 9 + 0.55
    assert s["p99"] == pytest.approx(9.91)    # 8.91 -> 9 + 0.91
    assert s["std"] == pytest.approx(math.sqrt(8.25))  # population std, as np.std


def test_summary_matches_numpy_on_a_skewed_sample():
    x = np.random.default_rng(3).lognormal(mean=3.0, sigma=0.8, size=513)
    s = summarize_ms(list(x))
    assert s["median"] == pytest.approx(np.median(x))
    assert s["p99"] == pytest.approx(np.percentile(x, 99))
    assert s["std"] == pytest.approx(np.std(x))
    assert s["p99"] >= s["p95"] >= s["p90"] >= s["median"]


def test_empty_summary_is_zeros_like_vllm():
    assert summarize_ms([]) == {k: 0.0 for k in STAT_KEYS}


def test_bootstrap_is_a_percentile_bootstrap_over_resampled_indices():
    x = np.array([3.0, 9.0, 1.0, 7.0])
    ci = bootstrap_ci(x, "mean", n_boot=5, seed=11)
    # By hand: the same generator draws a (5, 4) index matrix; each row's mean is one replicate.
    idx = np.random.default_rng(11).integers(0, 4, size=(5, 4))
    reps = x[idx].mean(axis=1)
    assert ci.estimate == pytest.approx(5.0)
    assert ci.low == pytest.approx(np.percentile(reps, 2.5))
    assert ci.high == pytest.approx(np.percentile(reps, 97.5))


def test_bootstrap_is_deterministic_per_seed():
    x = np.random.default_rng(0).normal(100, 15, size=60)
    assert bootstrap_ci(x, "p99", seed=5) == bootstrap_ci(x, "p99", seed=5)
    assert bootstrap_ci(x, "p99", seed=5) != bootstrap_ci(x, "p99", seed=6)


def test_bootstrap_mean_ci_matches_the_normal_approximation():
    x = np.random.default_rng(1).normal(50.0, 10.0, size=400)
    ci = bootstrap_ci(x, "mean", n_boot=2000, seed=2)
    half = 1.96 * np.std(x, ddof=1) / np.sqrt(len(x))
    assert ci.low < ci.estimate < ci.high
    assert (ci.high - ci.low) == pytest.approx(2 * half, rel=0.15)
    assert ci.estimate == pytest.approx(np.mean(x))


def test_paired_rows_are_resampled_together():
    # candidate = 2 x baseline on every row: any resample of whole rows has ratio exactly 2,
    # while resampling the columns independently would scatter it widely (values span 1..1000).
    base = np.random.default_rng(4).uniform(1, 1000, size=50)
    pairs = np.column_stack([base, 2 * base])
    for stat in ("ratio_of_means", "ratio_of_p99", "ratio_of_medians"):
        ci = bootstrap_ci(pairs, stat, n_boot=300, seed=0)
        assert ci == pytest.approx((2.0, 2.0, 2.0)), stat


def test_ratio_ci_brackets_a_real_slowdown():
    rng = np.random.default_rng(7)
    internal = rng.lognormal(4.0, 0.3, size=120)
    external = internal * 1.5 + rng.normal(0, 5, size=120)  # same cases, a hop costs ~1.5x
    ci = bootstrap_ci(list(zip(internal, external)), "ratio_of_means", seed=1)
    assert ci.low < 1.5 < ci.high
    assert ci.low > 1.3 and ci.high < 1.7


def test_callable_statistic_and_constant_sample():
    ci = bootstrap_ci([4.0] * 10, lambda a: float(np.max(a)), n_boot=50, seed=0)
    assert ci == (4.0, 4.0, 4.0)


def test_zero_baseline_ratio_gives_nan_instead_of_raising():
    ci = bootstrap_ci([[0.0, 1.0], [0.0, 2.0]], "ratio_of_means", n_boot=20)
    assert math.isnan(ci.estimate) and math.isnan(ci.low) and math.isnan(ci.high)


@pytest.mark.parametrize("data, stat, match", [
    ([], "mean", "empty"),
    ([[1.0, 2.0, 3.0]], "mean", "pairs"),
    ([1.0, 2.0], "p42", "unknown statistic"),
])
def test_bad_input_is_rejected_with_a_message(data, stat, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(data, stat)

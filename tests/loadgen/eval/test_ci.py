"""Wilson score intervals against published values and a coverage simulation."""
from __future__ import annotations

import math
import random

import pytest
from inloop.loadgen.eval.ci import wilson


@pytest.mark.parametrize("passed,n,low,high", [
    (0, 10, 0.0, 0.2775),        # the rule-of-three-like upper bound of an all-fail sample
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),   # Newcombe (1998), method 3 example
])
def test_known_intervals(passed, n, low, high):
    p = wilson(passed, n)
    assert p.low == pytest.approx(low, abs=1e-4) and p.high == pytest.approx(high, abs=1e-4)


def test_symmetric_and_inside_unit_interval():
    for n in (1, 7, 50, 400):
        for k in range(n + 1):
            a, b = wilson(k, n), wilson(n - k, n)
            assert 0.0 <= a.low <= a.rate <= a.high <= 1.0
            assert a.low == pytest.approx(1 - b.high) and a.high == pytest.approx(1 - b.low)


def test_coverage_close_to_95_percent_at_n_50():
    rng = random.Random(7)
    for true_p in (0.05, 0.3, 0.5):
        hits = 0
        for _ in range(2000):
            k = sum(rng.random() < true_p for _ in range(50))
            p = wilson(k, 50)
            hits += p.low <= true_p <= p.high
        assert 0.92 <= hits / 2000 <= 0.985


def test_empty_and_bad_counts():
    assert math.isnan(wilson(0, 0).low)
    with pytest.raises(ValueError):
        wilson(3, 2)

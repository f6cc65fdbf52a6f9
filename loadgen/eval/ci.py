"""Confidence intervals for pass rates: Wilson's score interval for a binomial proportion.

Wilson rather than the normal approximation because BFCL's per-category counts are small
(50-400 items) and small models score near 0 or 1, where the normal interval leaves [0, 1]
and covers badly; Wilson stays inside and keeps close to its nominal coverage there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054   # the 97.5th percentile of the standard normal


@dataclass(frozen=True)
class Proportion:
    passed: int
    n: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.passed / self.n if self.n else float("nan")


def wilson(passed: int, n: int, z: float = Z95) -> Proportion:
    """The Wilson score interval of passed/n; (nan, nan) for n = 0."""
    if not 0 <= passed <= n:
        raise ValueError(f"passed must be in [0, n], got {passed} of {n}")
    if n == 0:
        return Proportion(0, 0, float("nan"), float("nan"))
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0 or n passes the bound is exactly 0 or 1; rounding would leave ~1e-17 on the wrong side
    low = 0.0 if passed == 0 else max(0.0, centre - half)
    high = 1.0 if passed == n else min(1.0, centre + half)
    return Proportion(passed, n, low, high)

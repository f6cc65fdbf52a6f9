"""Latency statistics shared by the loadgen commands and the routing matrix.

Two helpers:

- `summarize_ms(values_ms)`: mean / median / p90 / p95 / p99 / std, computed the way vLLM's
  `benchmarks/benchmark_serving.py` computes its TTFT/TPOT/ITL/E2EL rows: plain numpy
  (`np.percentile` with its default linear interpolation, population std), and an empty
  list counts as `[0]` (vLLM's `np.mean(ttfts or 0)`), so a run where every request failed
  still renders, with zeros next to `completed: 0`.
- `bootstrap_ci(values_or_pairs, statistic, n_boot, seed)`: a percentile-bootstrap
  confidence interval. Pass a 1-D sample for a statistic of one sample (mean, p99), or
  paired samples as rows `(baseline, candidate)` for a ratio such as external/internal
  latency: rows are resampled together, so the pairing (same case, same seed) survives.

Values are in milliseconds throughout; callers convert from seconds once, when measuring.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

PERCENTILES = (90, 95, 99)
STAT_KEYS = ("mean", "median", "p90", "p95", "p99", "std")


def summarize_ms(values_ms: Sequence[float]) -> dict[str, float]:
    """{"mean", "median", "p90", "p95", "p99", "std"} of values in ms (all 0.0 when empty)."""
    data = np.asarray(values_ms if len(values_ms) else [0.0], dtype=np.float64)
    out = {"mean": float(np.mean(data)), "median": float(np.median(data))}
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(data, p))
    out["std"] = float(np.std(data))
    return out


# ---- bootstrap ----------------------------------------------------------------------
def _ratio(stat: Callable[[np.ndarray], float]) -> Callable[[np.ndarray], float]:
    """stat(candidate) / stat(baseline) over paired rows (baseline, candidate)."""
    def ratio(pairs: np.ndarray) -> float:
        base = stat(pairs[:, 0])
        return float(stat(pairs[:, 1]) / base) if base != 0 else float("nan")
    return ratio


def _p(q: float) -> Callable[[np.ndarray], float]:
    return lambda x: float(np.percentile(x, q))


# Named statistics, so callers (and JSON configs) can say "ratio_of_p99" instead of a lambda.
# One-sample names take a 1-D array; "ratio_of_*" take (n, 2) rows of (baseline, candidate).
STATISTICS: dict[str, Callable[[np.ndarray], float]] = {
    "mean": lambda x: float(np.mean(x)),
    "median": lambda x: float(np.median(x)),
    "p90": _p(90),
    "p95": _p(95),
    "p99": _p(99),
    "ratio_of_means": _ratio(lambda x: float(np.mean(x))),
    "ratio_of_medians": _ratio(lambda x: float(np.median(x))),
    "ratio_of_p95": _ratio(_p(95)),
    "ratio_of_p99": _ratio(_p(99)),
}


class BootstrapCI(NamedTuple):
    """A point estimate (the statistic of the full sample) and its confidence interval."""
    estimate: float
    low: float
    high: float


def bootstrap_ci(values_or_pairs: Sequence[float] | Sequence[Sequence[float]] | np.ndarray,
                 statistic: str | Callable[[np.ndarray], float],
                 n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> BootstrapCI:
    """Percentile-bootstrap CI of `statistic` over `values_or_pairs`.

    values_or_pairs: a 1-D sample, or an (n, 2) array of paired rows (baseline, candidate).
        Rows are drawn with replacement as units, n at a time, `n_boot` times.
    statistic: a name from STATISTICS ("mean", "p99", "ratio_of_means", "ratio_of_p99", ...)
        or a callable taking the resampled array (same shape as the input) to a float.
    seed: the resampling is fully determined by it (numpy's PCG64 generator).
    Returns BootstrapCI(estimate, low, high) with low/high the (1 -/+ confidence)/2
    percentiles of the bootstrap distribution; resamples whose statistic is not finite
    (a ratio over an all-zero baseline) are dropped, and all-NaN gives NaN bounds.
    """
    data = np.asarray(values_or_pairs, dtype=np.float64)
    if data.ndim not in (1, 2) or (data.ndim == 2 and data.shape[1] != 2):
        raise ValueError(f"values_or_pairs must be 1-D or (n, 2) pairs, got shape {data.shape}")
    if len(data) == 0:
        raise ValueError("values_or_pairs is empty")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if isinstance(statistic, str):
        if statistic not in STATISTICS:
            raise ValueError(f"unknown statistic {statistic!r}: use one of {', '.join(STATISTICS)} or a callable")
        stat = STATISTICS[statistic]
    else:
        stat = statistic
    rng = np.random.default_rng(seed)
    # One (n_boot, n) index matrix up front: the draws then do not depend on `stat`.
    idx = rng.integers(0, len(data), size=(n_boot, len(data)))
    boots = np.fromiter((stat(data[row]) for row in idx), dtype=np.float64, count=n_boot)
    boots = boots[np.isfinite(boots)]
    alpha = (1.0 - confidence) / 2.0
    if boots.size == 0:
        low = high = float("nan")
    else:
        low, high = (float(v) for v in np.percentile(boots, [100 * alpha, 100 * (1 - alpha)]))
    return BootstrapCI(float(stat(data)), low, high)

"""Small order statistics over an artifact's `runs`, shared by the tables and the plots.

The runners already summarise each cell (matrix CELL, load STATS); these helpers only
describe the raw per-run latencies that the report plots and the runs table show, so they
use the same definition of a percentile as numpy's default (linear interpolation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ROUTES = ("internal", "external")


def percentile(values: list[float], q: float) -> float:
    """numpy's q-th percentile (0..100, linear interpolation) of the finite values; NaN if none."""
    xs = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.percentile(xs, q)) if xs else math.nan


@dataclass(frozen=True)
class Box:
    """Tukey box: quartiles, whiskers at the furthest points within 1.5 IQR, the rest outliers."""
    n: int
    q1: float
    median: float
    q3: float
    lo_whisker: float
    hi_whisker: float
    mean: float
    p99: float
    outliers: tuple[float, ...]


def box_stats(values: list[float]) -> Box | None:
    xs = sorted(v for v in values if isinstance(v, (int, float)) and math.isfinite(v))
    if not xs:
        return None
    q1, med, q3 = (percentile(xs, q) for q in (25, 50, 75))
    fence_lo, fence_hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    inside = [v for v in xs if fence_lo <= v <= fence_hi] or xs
    return Box(n=len(xs), q1=q1, median=med, q3=q3, lo_whisker=inside[0], hi_whisker=inside[-1],
               mean=sum(xs) / len(xs), p99=percentile(xs, 99),
               outliers=tuple(v for v in xs if v < fence_lo or v > fence_hi))


def profiles_in_order(doc: dict) -> list[str]:
    """Profile names as the matrix lists them, then any others in the order runs/hops show them."""
    names: list[str] = [p["name"] for p in (doc.get("matrix") or {}).get("profiles", [])]
    for row in list(doc.get("runs") or []) + list((doc.get("hops") or {}).get("rows", [])):
        if row.get("profile") not in names:
            names.append(row.get("profile"))
    return names


def runs_by_cell(doc: dict) -> dict[tuple[str, str], list[dict]]:
    """Runs grouped by (profile, route), profiles in report order, internal before external."""
    runs = doc.get("runs") or []
    cells: dict[tuple[str, str], list[dict]] = {}
    for profile in profiles_in_order(doc):
        for route in ROUTES + tuple(sorted({r["route"] for r in runs} - set(ROUTES))):
            rows = [r for r in runs if r["profile"] == profile and r["route"] == route]
            if rows:
                cells[(profile, route)] = rows
    return cells

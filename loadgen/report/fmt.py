"""Number formatting shared by the Markdown and HTML reports.

Every formatter takes what an artifact may hold (a number, None, NaN) and returns a short
string: a missing or non-finite value prints as an en dash so that a table never shows
`nan` or `None`. Durations carry their unit in the cell (`0.42 ms`, `523 ms`, `1.52 s`)
because one column can span microseconds to seconds.
"""
from __future__ import annotations

import math

MISSING = "–"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def num(x, digits: int = 3) -> str:
    """A plain number with about `digits` significant figures (no exponent below 1e6)."""
    if not _finite(x):
        return MISSING
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    return f"{x:,.{decimals}f}"


def ms(x) -> str:
    """A duration given in milliseconds, in ms below 10 s and in s above."""
    if not _finite(x):
        return MISSING
    if x == 0:
        return "0 ms"
    if abs(x) >= 10_000:
        return f"{x / 1e3:,.1f} s"
    if abs(x) >= 1_000:
        return f"{x / 1e3:.2f} s"
    if abs(x) >= 100:
        return f"{x:.0f} ms"
    if abs(x) >= 10:
        return f"{x:.1f} ms"
    return f"{x:.2f} ms" if abs(x) >= 0.1 else f"{x * 1e3:.0f} µs"


def seconds(x) -> str:
    """A duration given in seconds."""
    return ms(x * 1e3) if _finite(x) else MISSING


def ratio(x) -> str:
    """An ext/int ratio: two decimals (1.00 means no overhead)."""
    return f"{x:.2f}" if _finite(x) else MISSING


def ci(value, bounds, fmt=ratio) -> str:
    """`1.23 [1.10, 1.37]`: a point estimate with its 95% interval."""
    if not _finite(value):
        return MISSING
    lo, hi = (list(bounds) + [None, None])[:2] if bounds else (None, None)
    return f"{fmt(value)} [{fmt(lo)}, {fmt(hi)}]"


def pct(x, decimals: int = 1) -> str:
    """A fraction in [0, 1] as a percentage."""
    return f"{x * 100:.{decimals}f}%" if _finite(x) else MISSING


def signed_pp(x) -> str:
    """A difference of two fractions in percentage points, always signed (`+5.0`, `-2.5`)."""
    return f"{x * 100:+.1f}" if _finite(x) else MISSING


def per_s(x, unit: str) -> str:
    """A throughput: `12.3 req/s`."""
    return f"{num(x)} {unit}/s" if _finite(x) else MISSING


def count(x) -> str:
    return f"{x:,d}" if isinstance(x, int) and not isinstance(x, bool) else (num(x) if _finite(x) else MISSING)


def errors(counts: dict | None) -> str:
    """`timeout×3, unavailable×1`, most frequent first; an en dash when there were none."""
    items = sorted(((k, v) for k, v in (counts or {}).items() if v), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k}×{v}" for k, v in items) or MISSING


def ci_or_n(entry: dict | None) -> str:
    """A ratio entry ({"value", "ci95", "n"}): `1.23 [1.10, 1.37]` with a CI, `1.23 (n=7: no CI)`
    below the threshold for one, an en dash with no value."""
    if not entry or not _finite(entry.get("value")):
        return MISSING if not entry or not entry.get("n") else f"{MISSING} (n={entry['n']}: too small)"
    if has_ci(entry.get("ci95")):
        return ci(entry["value"], entry["ci95"])
    return f"{ratio(entry['value'])} (n={entry.get('n', 0)}: no CI)"


def has_ci(bounds) -> bool:
    """Whether `bounds` is a two-number interval of finite numbers (NaNs mean: no CI)."""
    return bool(bounds) and len(bounds) == 2 and all(_finite(b) for b in bounds)


def ratio_verdict(entry: dict | None) -> str:
    """`ci_or_n` followed by what it means: internal faster / external faster / parity within
    noise, or nothing when there is no CI."""
    text = ci_or_n(entry)
    if entry and has_ci(entry.get("ci95")) and entry.get("verdict"):
        text += f" {entry['verdict']}"
    return text


def p99(value, label: str = "p99") -> str:
    """A p99, or below 100 samples the max, said so."""
    return ms(value) if label == "p99" else f"max {ms(value)}"

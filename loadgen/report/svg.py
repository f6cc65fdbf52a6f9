"""Inline-SVG building blocks for the HTML report: scales, axes, legends, colours.

The report must open offline from a single file, so plots are SVG strings generated here
rather than a bundled JS charting library. Every plot element that carries a number also
carries a `data-tip` attribute; the page's small script shows it as a hover tooltip.
"""
from __future__ import annotations

import html
import math

FONT_PX = 12
CHAR_PX = 6.6  # mean advance of a 12 px sans-serif glyph: enough to lay out labels

# Paul Tol's colour-blind-safe palettes.
ROUTE_COLOURS = {"internal": "#4477AA", "external": "#EE7733"}
HOP_COLOURS = {"controller": "#AA3377", "wire": "#66CCEE", "model": "#4477AA", "tools": "#228833",
               "retry": "#EE6677", "other": "#CCBB44"}
SERVICE_COLOURS = {"controller": "#AA3377", "runtime": "#4477AA", "tools": "#228833", "loadgen": "#999999"}
PALETTE = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB", "#EE7733")


def finite(x) -> bool:
    """A plottable number: artifacts may hold NaN (an empty sample) or None, which SVG cannot draw."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def esc(text) -> str:
    """Text or attribute value, escaped for HTML/SVG."""
    return html.escape(str(text), quote=True)


def colour_for(name: str, known: dict[str, str], order: list[str]) -> str:
    """A fixed colour for known names, else the next palette colour by first appearance."""
    if name in known:
        return known[name]
    return PALETTE[order.index(name) % len(PALETTE)] if name in order else PALETTE[-1]


def text_width(text: str, px: int = FONT_PX) -> float:
    return len(str(text)) * CHAR_PX * px / FONT_PX


def clip_text(text: str, max_px: float) -> str:
    """Shorten a label to fit `max_px`, ending with an ellipsis when cut."""
    text = str(text)
    limit = max(1, int(max_px / CHAR_PX))
    return text if len(text) <= limit else text[: max(1, limit - 1)] + "…"


class Scale:
    """Maps a data domain onto pixels, linearly or by log10 (for domains wider than ~20×)."""

    def __init__(self, lo: float, hi: float, r0: float, r1: float, log: bool = False):
        if log:
            lo = max(lo, 1e-9)
            hi = max(hi, lo * 1.0001)
        elif hi <= lo:
            hi = lo + (abs(lo) or 1.0)
        self.lo, self.hi, self.r0, self.r1, self.log = lo, hi, r0, r1, log

    def _t(self, v: float) -> float:
        return math.log10(max(v, 1e-9)) if self.log else v

    def __call__(self, v: float) -> float:
        t0, t1 = self._t(self.lo), self._t(self.hi)
        return self.r0 + (self._t(v) - t0) / (t1 - t0) * (self.r1 - self.r0)

    def ticks(self, target: int = 6) -> list[float]:
        """Round tick values inside the domain: 1-2-5 steps, or decades (with 2 and 5) for log."""
        if self.log:
            out = []
            decades = math.log10(self.hi / self.lo)
            mults = (1, 2, 5) if decades <= 3 else (1,)
            for e in range(math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi)) + 1):
                out += [m * 10 ** e for m in mults if self.lo <= m * 10 ** e <= self.hi]
            return out or [self.lo, self.hi]
        raw = (self.hi - self.lo) / max(1, target)
        mag = 10 ** math.floor(math.log10(raw))
        step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
        first = math.ceil(self.lo / step) * step
        return [round(first + i * step, 10) for i in range(int((self.hi - first) / step + 1e-9) + 1)]


def data_range(values: list[float], pad: float = 0.05, log_ratio: float = 20.0) -> tuple[float, float, bool]:
    """(lo, hi, log) for a value axis: log when all values are positive and span > `log_ratio`×."""
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return 0.0, 1.0, False
    lo, hi = min(vals), max(vals)
    if lo > 0 and hi / lo > log_ratio:
        return lo / (1 + 4 * pad), hi * (1 + 4 * pad), True
    lo = 0.0 if lo >= 0 else lo - pad * (hi - lo)
    return lo, hi + pad * (hi - lo or 1), False


def axis_label(v: float, unit: str = "ms") -> str:
    """A tick label: ms below 1 s, seconds above, no trailing zeros."""
    if unit == "ms" and abs(v) >= 1000:
        return f"{v / 1000:g} s"
    return f"{v:g}{unit}" if unit == "×" else f"{v:g}{' ' + unit if unit else ''}"


def y_axis(scale: Scale, x: float, x_end: float, unit: str = "ms") -> str:
    """Horizontal grid lines with labels left of `x`."""
    parts = []
    for t in scale.ticks():
        y = scale(t)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x_end:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{x - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{esc(axis_label(t, unit))}</text>')
    return "".join(parts)


def x_axis(scale: Scale, y: float, y_end: float, unit: str = "ms", label_y: float | None = None) -> str:
    """Vertical grid lines from `y` to `y_end` with labels at `label_y` (default above `y`)."""
    ly = y - 6 if label_y is None else label_y
    parts = []
    for t in scale.ticks():
        x = scale(t)
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{y:.1f}" y2="{y_end:.1f}"/>'
                     f'<text class="tick" x="{x:.1f}" y="{ly:.1f}" text-anchor="middle">{esc(axis_label(t, unit))}</text>')
    return "".join(parts)


def legend(items: list[tuple[str, str]], x: float, y: float) -> str:
    """A one-line legend of coloured squares, starting at (x, y)."""
    parts = []
    for label, colour in items:
        parts.append(f'<rect class="swatch" x="{x:.1f}" y="{y - 10:.1f}" width="11" height="11" fill="{colour}"/>'
                     f'<text class="legend" x="{x + 15:.1f}" y="{y:.1f}">{esc(label)}</text>')
        x += 15 + text_width(label) + 16
    return "".join(parts)


def figure(plot_id: str, width: float, height: float, body: str, title: str, **data) -> str:
    """The `<svg>` element: fixed viewBox, scales down on narrow screens, titled for readers."""
    attrs = "".join(f' data-{k.replace("_", "-")}="{esc(v)}"' for k, v in data.items())
    return (f'<svg class="plot" id="{esc(plot_id)}" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
            f'height="{height:.0f}" role="img" aria-label="{esc(title)}"{attrs}><title>{esc(title)}</title>'
            f'{body}</svg>')

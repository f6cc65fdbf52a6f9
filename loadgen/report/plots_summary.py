"""Charts of a section's summary numbers: the hop breakdown, cold/warm start, load percentiles.

`hop_bars`: one stacked horizontal bar per `hops.rows` entry, its segments the mean
controller, wire, model, tools, retry and other milliseconds; a black tick marks the measured
end-to-end mean, so a gap between the bar's end and the tick is the decomposition's sum
error. A negative part (possible for `other` when the parts overshoot) is not drawn but is
named in the tooltip.

`load_percentiles`: vLLM bench-style latency percentiles, one line per metric (TTFT, TPOT,
ITL, E2EL) across median → p90 → p95 → p99, on a log axis because per-token and per-request
times differ by orders of magnitude. `load_sweep_curves`: a concurrency sweep as curves over
the levels, output tokens/s on one chart and TTFT/TPOT p50/p99 on another. `coldwarm_bars`: one bar per measure, so the cost of a
cold start reads directly against a warm request's mean and tail.
"""
from __future__ import annotations

from inloop.loadgen.report import fmt
from inloop.loadgen.report.svg import (
    HOP_COLOURS, PALETTE, Scale, data_range, esc, figure, finite, legend, text_width, x_axis, y_axis,
)
from inloop.loadgen.report.tables import HOP_PARTS, LOAD_METRICS

PERCENTILES = (("median", "median"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99"))


def hop_bars(hops: dict) -> str:
    """'' when the section has no rows."""
    rows = [r for r in hops.get("rows") or [] if finite(r.get("end_to_end_ms"))]
    if not rows:
        return ""
    labels = [f"{r['profile']} · {r['route']}" for r in rows]
    left = 20 + max(text_width(label) for label in labels)
    width, bar_h, row_h, top = 860.0, 18.0, 28.0, 54.0
    height = top + row_h * len(rows) + 10
    totals = [max(r["end_to_end_ms"], sum(r[f"{p}_ms"] for p in HOP_PARTS if finite(r[f"{p}_ms"]) and r[f"{p}_ms"] > 0))
              for r in rows]
    right_pad = 90.0  # room for the end-to-end label after the longest bar
    x = Scale(0.0, max(totals) * 1.02 or 1.0, left, width - right_pad)
    body = [x_axis(x, top - 6, height - 6)]
    for i, (r, label) in enumerate(zip(rows, labels)):
        y0 = top + i * row_h + (row_h - bar_h) / 2
        segs, start = [], 0.0
        for part in HOP_PARTS:
            v = r[f"{part}_ms"]
            share = v / r["end_to_end_ms"] if r["end_to_end_ms"] else 0.0
            tip = esc(f"{label}\n{part}: {fmt.ms(v)} ({fmt.pct(share)} of {fmt.ms(r['end_to_end_ms'])})")
            if not (finite(v) and v > 0):
                continue
            segs.append(f'<rect class="hop-seg" data-part="{part}" x="{x(start):.1f}" y="{y0:.1f}" '
                        f'width="{max(x(start + v) - x(start), 0.5):.1f}" height="{bar_h:.1f}" '
                        f'fill="{HOP_COLOURS[part]}" data-tip="{tip}"/>')
            start += v
        negative = [f"{p} {fmt.ms(r[f'{p}_ms'])}" for p in HOP_PARTS if r[f"{p}_ms"] < 0]
        row_tip = esc(f"{label}: {r['n']} tasks, end to end {fmt.ms(r['end_to_end_ms'])}, "
                      f"sum error {fmt.num(r['sum_error_pct'], 2)}%"
                      + (f"\nnegative (not drawn): {', '.join(negative)}" if negative else ""))
        xe = x(r["end_to_end_ms"])
        body.append(f'<g class="hop-row" data-profile="{esc(r["profile"])}" data-route="{esc(r["route"])}">'
                    f'<text class="label" x="{left - 6:.1f}" y="{y0 + bar_h - 4:.1f}" text-anchor="end" '
                    f'data-tip="{row_tip}">{esc(label)}</text>{"".join(segs)}'
                    f'<line class="e2e" x1="{xe:.1f}" x2="{xe:.1f}" y1="{y0 - 3:.1f}" y2="{y0 + bar_h + 3:.1f}"/>'
                    f'<text class="value" x="{x(max(start, r["end_to_end_ms"])) + 6:.1f}" y="{y0 + bar_h - 4:.1f}">'
                    f'{esc(fmt.ms(r["end_to_end_ms"]))}</text></g>')
    body.append(legend([(p, HOP_COLOURS[p]) for p in HOP_PARTS], left, 20))
    return figure("plot-hops", width, height, "".join(body), "Hop-overhead breakdown", rows=len(rows))


def load_percentiles(load: dict) -> str:
    """One line per load metric over median/p90/p95/p99; '' when nothing was measured."""
    series = [(label, load[key]) for key, label in LOAD_METRICS if isinstance(load.get(key), dict)
              and all(finite(load[key].get(k)) for k, _ in PERCENTILES)]  # NaN: no such tokens measured
    if not series:
        return ""
    width, height, left, right, top, bottom = 680.0, 340.0, 76.0, 70.0, 44.0, 40.0
    values = [s[k] for _, s in series for k, _ in PERCENTILES]
    lo, hi, log = data_range(values, log_ratio=20)
    y = Scale(lo, hi, height - bottom, top, log=log)
    step = (width - left - right) / (len(PERCENTILES) - 1)
    xs = [left + 10 + i * step * 0.96 for i in range(len(PERCENTILES))]
    body = [y_axis(y, left, width - right + 10)]
    for xi, (_, label) in zip(xs, PERCENTILES):
        body.append(f'<text class="tick" x="{xi:.1f}" y="{height - bottom + 18:.1f}" text-anchor="middle">{label}</text>')
    for i, (name, stats) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(xi, y(stats[k])) for xi, (k, _) in zip(xs, PERCENTILES)]
        body.append(f'<g class="pct-series" data-metric="{esc(name)}"><polyline fill="none" stroke="{colour}" '
                    f'stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}"/>')
        for (px, py), (k, label) in zip(pts, PERCENTILES):
            tip = esc(f"{name} {label}: {fmt.ms(stats[k])}\nmean {fmt.ms(stats['mean'])}, std {fmt.ms(stats['std'])}")
            body.append(f'<circle class="pct-pt" cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}" data-tip="{tip}"/>')
        body.append("</g>")
    body += _end_labels([(name, PALETTE[i % len(PALETTE)], y(stats[PERCENTILES[-1][0]]))
                         for i, (name, stats) in enumerate(series)], xs[-1] + 8)
    body.append(legend([(name, PALETTE[i % len(PALETTE)]) for i, (name, _) in enumerate(series)], left, 20))
    body.append(f'<text class="note" x="{width - 12:.1f}" y="20" text-anchor="end">'
                f'{"log" if log else "linear"} scale</text>')
    return figure("plot-load", width, height, "".join(body), "Load latency percentiles", series=len(series))


def _end_labels(items: list[tuple[str, str, float]], x: float, gap: float = 13.0) -> list[str]:
    """Series names at the lines' right ends, nudged apart so that close lines stay legible."""
    placed: list[tuple[str, str, float]] = []
    for name, colour, yy in sorted(items, key=lambda it: it[2]):
        if placed and yy - placed[-1][2] < gap:
            yy = placed[-1][2] + gap
        placed.append((name, colour, yy))
    return [f'<text class="label" x="{x:.1f}" y="{yy + 4:.1f}" style="fill:{colour}">{esc(name)}</text>'
            for name, colour, yy in placed]


def coldwarm_bars(cw: dict) -> str:
    """Start-up, cold-request and warm-request times as bars; '' when none is a number."""
    warm = cw.get("warm") or {}
    items = [("process start → healthy", cw.get("start_to_healthy_ms"), "#999999"),
             ("cold: time to first token", cw.get("cold_ttft_ms"), "#EE6677"),
             ("cold: end to end", cw.get("cold_e2e_ms"), "#EE6677"),
             ("warm: mean", warm.get("mean_ms"), "#4477AA"),
             ("warm: p95", warm.get("p95_ms"), "#4477AA"),
             ("warm: p99", warm.get("p99_ms"), "#4477AA")]
    items = [(label, v, c) for label, v, c in items if finite(v)]
    if not items:
        return ""
    left = 20 + max(text_width(label) for label, _, _ in items)
    width, row_h, top = 720.0, 26.0, 40.0
    height = top + row_h * len(items) + 10
    lo, hi, log = data_range([v for _, v, _ in items if v > 0] or [1.0], log_ratio=20)
    x = Scale(lo if log else 0.0, hi, left, width - 80, log=log)
    body = [x_axis(x, top - 4, height - 6)]
    for i, (label, v, colour) in enumerate(items):
        y0 = top + i * row_h + 5
        x0 = x(lo) if log else x(0)
        body.append(f'<text class="label" x="{left - 6:.1f}" y="{y0 + 12:.1f}" text-anchor="end">{esc(label)}</text>'
                    f'<rect class="cw-bar" x="{x0:.1f}" y="{y0:.1f}" width="{max(x(max(v, lo)) - x0, 1):.1f}" '
                    f'height="{row_h - 10:.1f}" fill="{colour}" data-tip="{esc(f"{label}: {fmt.ms(v)}")}"/>'
                    f'<text class="value" x="{x(max(v, lo)) + 5:.1f}" y="{y0 + 12:.1f}">{esc(fmt.ms(v))}</text>')
    body.append(f'<text class="note" x="{width - 12:.1f}" y="14" text-anchor="end">{"log" if log else "linear"} scale</text>')
    return figure("plot-coldwarm", width, height, "".join(body), "Cold and warm start", bars=len(items))


SWEEP_LATENCIES = (("ttft_ms", "median", "TTFT p50"), ("ttft_ms", "p99", "TTFT p99"),
                   ("tpot_ms", "median", "TPOT p50"), ("tpot_ms", "p99", "TPOT p99"))


def load_sweep_curves(load: dict) -> str:
    """Two charts over the sweep's levels (x: concurrency, log2 spaced): output tokens/s, and
    TTFT/TPOT p50/p99 in ms; '' without a sweep of at least two levels."""
    sweep = [lv for lv in load.get("sweep") or [] if finite(lv.get("output_throughput"))]
    if len(sweep) < 2:
        return ""
    levels = [lv["concurrency"] for lv in sweep]
    width, height, left, right, top, bottom = 680.0, 300.0, 76.0, 90.0, 44.0, 40.0
    x = Scale(min(levels), max(levels), left + 10, width - right, log=min(levels) > 0 and max(levels) > min(levels))
    ticks = "".join(f'<text class="tick" x="{x(c):.1f}" y="{height - bottom + 18:.1f}" text-anchor="middle">{c}</text>'
                    for c in levels)

    def chart(plot_id, title, series, unit):
        values = [v for _, _, pts in series for v in pts if finite(v)]
        lo, hi, log = data_range(values, log_ratio=20)
        y = Scale(lo, hi, height - bottom, top, log=log)
        body = [y_axis(y, left, width - right + 10, unit), ticks]
        for name, colour, pts in series:
            xy = [(x(c), y(v)) for c, v in zip(levels, pts) if finite(v)]
            body.append(f'<g class="sweep-series" data-metric="{esc(name)}"><polyline fill="none" stroke="{colour}" '
                        f'stroke-width="2" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in xy)}"/>')
            for (px, py), c, v in zip(xy, levels, pts):
                tip = esc(f"{name} at concurrency {c}: {fmt.num(v)} {unit}")
                body.append(f'<circle class="sweep-pt" cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}" data-tip="{tip}"/>')
            body.append("</g>")
        body += _end_labels([(name, colour, y(pts[-1])) for name, colour, pts in series if finite(pts[-1])],
                            x(levels[-1]) + 8)
        body.append(f'<text class="note" x="{width - 12:.1f}" y="20" text-anchor="end">x: concurrency</text>')
        body.append(legend([(name, colour) for name, colour, _ in series], left, 20))
        return figure(plot_id, width, height, "".join(body), title, levels=len(levels))

    throughput = chart("plot-sweep-throughput", "Output tokens/s per concurrency level",
                       [("output tok/s", PALETTE[0], [lv["output_throughput"] for lv in sweep])], "tok/s")
    latency = chart("plot-sweep-latency", "TTFT and TPOT per concurrency level",
                    [(name, PALETTE[(i + 1) % len(PALETTE)], [lv[key].get(stat) for lv in sweep])
                     for i, (key, stat, name) in enumerate(SWEEP_LATENCIES)], "ms")
    return throughput + latency

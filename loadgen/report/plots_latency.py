"""Latency plots: per-run distributions by profile and route, and the matrix's ratio CIs.

The box plot is the report's main picture: one group per fault profile, the internal and
external route side by side, every run drawn as a jittered dot over a Tukey box, so a
reader sees both the summary and the tail (and which runs failed). The value axis turns
logarithmic when latencies span more than ~20×, as a fault-injected tail easily does.
"""
from __future__ import annotations

from inloop.loadgen.report import fmt
from inloop.loadgen.report.stats import box_stats, runs_by_cell
from inloop.loadgen.report.svg import (
    ROUTE_COLOURS, Scale, data_range, esc, figure, finite, legend, text_width, x_axis, y_axis,
)

MAX_DOTS_PER_CELL = 400  # keeps a 6 × 2 × 2000-run report small; the box still uses every run
FAIL_COLOUR = "#CC3311"


def _tip(*lines: str) -> str:
    return esc("\n".join(lines))


def _dots(runs: list[dict], cx: float, half: float, y: Scale, colour: str) -> str:
    """Every run as a dot, jittered horizontally by a fixed low-discrepancy sequence."""
    runs = [r for r in runs if finite(r.get("latency_ms"))]
    step = max(1, -(-len(runs) // MAX_DOTS_PER_CELL))
    parts = []
    for i, r in enumerate(runs[::step]):
        dx = ((i * 0.6180339887) % 1.0 - 0.5) * 2 * half
        ok = r.get("ok", True)
        tip = _tip(f"{r.get('case', '?')} rep {r.get('rep', '?')}: {fmt.ms(r['latency_ms'])}",
                   f"retries {r.get('retries', 0)}, steps {r.get('steps', 0)}",
                   "ok" if ok else f"failed: {r.get('error_type') or 'error'}")
        style = (f'fill="{colour}" fill-opacity="0.45"' if ok else
                 f'fill="none" stroke="{FAIL_COLOUR}" stroke-width="1.4"')
        parts.append(f'<circle class="pt{"" if ok else " fail"}" cx="{cx + dx:.1f}" '
                     f'cy="{y(r["latency_ms"]):.1f}" r="{2.2 if ok else 3}" {style} data-tip="{tip}"/>')
    return "".join(parts)


def _box(profile: str, route: str, runs: list[dict], cx: float, w: float, y: Scale) -> str:
    b = box_stats([r["latency_ms"] for r in runs])
    if b is None:
        return ""
    colour = ROUTE_COLOURS.get(route, "#777777")
    failed = sum(not r.get("ok", True) for r in runs)
    tip = _tip(f"{profile} · {route}: {b.n} runs ({failed} failed)", f"median {fmt.ms(b.median)}",
               f"IQR {fmt.ms(b.q1)} – {fmt.ms(b.q3)}", f"mean {fmt.ms(b.mean)}, p99 {fmt.ms(b.p99)}",
               f"whiskers {fmt.ms(b.lo_whisker)} – {fmt.ms(b.hi_whisker)}")
    x0, x1 = cx - w / 2, cx + w / 2
    top, bot = y(b.q3), y(b.q1)
    return (f'<g class="box" data-profile="{esc(profile)}" data-route="{esc(route)}" data-n="{b.n}" data-tip="{tip}">'
            f'<line class="whisker" x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(b.hi_whisker):.1f}" y2="{top:.1f}" stroke="{colour}"/>'
            f'<line class="whisker" x1="{cx:.1f}" x2="{cx:.1f}" y1="{bot:.1f}" y2="{y(b.lo_whisker):.1f}" stroke="{colour}"/>'
            f'<line class="cap" x1="{cx - w / 4:.1f}" x2="{cx + w / 4:.1f}" y1="{y(b.hi_whisker):.1f}" y2="{y(b.hi_whisker):.1f}" stroke="{colour}"/>'
            f'<line class="cap" x1="{cx - w / 4:.1f}" x2="{cx + w / 4:.1f}" y1="{y(b.lo_whisker):.1f}" y2="{y(b.lo_whisker):.1f}" stroke="{colour}"/>'
            f'<rect class="iqr" x="{x0:.1f}" y="{top:.1f}" width="{w:.1f}" height="{max(bot - top, 1):.1f}" '
            f'fill="{colour}" fill-opacity="0.18" stroke="{colour}"/>'
            f'<line class="median" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y(b.median):.1f}" y2="{y(b.median):.1f}" stroke="{colour}"/>'
            f'<path class="mean" d="M{cx:.1f},{y(b.mean) - 4:.1f}l4,4l-4,4l-4,-4z" fill="#fff" stroke="#222"/>'
            f'</g>')


def latency_boxplot(doc: dict) -> str:
    """Runs' end-to-end latency per profile, internal vs external side by side; '' without runs."""
    cells = runs_by_cell(doc)
    if not cells:
        return ""
    profiles = list(dict.fromkeys(p for p, _ in cells))
    routes = list(dict.fromkeys(r for _, r in cells))
    slot, gap, box_w = 58.0, 30.0, 30.0
    left, top, bottom = 76.0, 44.0, 56.0
    group_w = slot * len(routes) + gap
    width = max(640.0, left + group_w * len(profiles) + 20)
    height = 400.0
    lo, hi, log = data_range([r["latency_ms"] for rows in cells.values() for r in rows])
    y = Scale(lo, hi, height - bottom, top, log=log)
    body = [y_axis(y, left, width - 10)]
    for gi, profile in enumerate(profiles):
        gx = left + gap / 2 + gi * group_w
        for ri, route in enumerate(routes):
            rows = cells.get((profile, route))
            if not rows:
                continue
            cx = gx + slot * (ri + 0.5)
            colour = ROUTE_COLOURS.get(route, "#777777")
            body.append(_dots(rows, cx, box_w * 0.55, y, colour))
            body.append(_box(profile, route, rows, cx, box_w, y))
            body.append(f'<text class="tick" x="{cx:.1f}" y="{height - bottom + 16:.1f}" '
                        f'text-anchor="middle">{esc(route[:3])}</text>')
        body.append(f'<text class="group" x="{gx + slot * len(routes) / 2:.1f}" y="{height - bottom + 36:.1f}" '
                    f'text-anchor="middle">{esc(profile)}</text>')
    scale_note = "log scale" if log else "linear scale"
    body.append(f'<text class="axis-title" x="14" y="{(top + height - bottom) / 2:.1f}" '
                f'transform="rotate(-90 14 {(top + height - bottom) / 2:.1f})" text-anchor="middle">'
                f'end-to-end latency ({scale_note})</text>')
    body.append(legend([(r, ROUTE_COLOURS.get(r, "#777777")) for r in routes] + [("failed run", FAIL_COLOUR)],
                       left, 20))
    body.append(f'<text class="note" x="{width - 12:.1f}" y="20" text-anchor="end">box: quartiles · '
                f'whiskers: 1.5 IQR · ◇ mean · dots: runs</text>')
    return figure("plot-latency", width, height, "".join(body), "Latency per profile and route",
                  boxes=len(cells), log=int(log))


def ratio_forest(matrix: dict) -> str:
    """Each profile's ext/int mean and p99 latency ratios with their 95% CIs, against 1."""
    profiles = matrix.get("profiles") or []
    if not profiles:
        return ""
    # all pairs, and like for like: the pairs in which both routes succeeded (artifacts from
    # before that split carry the p99 ratio instead)
    like = all("like_for_like" in p["overall"] for p in profiles)
    series = ((("all pairs", "#4477AA"), ("both succeeded", "#AA3377")) if like
              else (("mean", "#4477AA"), ("p99", "#AA3377")))

    def estimate(p: dict, j: int) -> dict:
        if like:
            return p["overall"]["ratio_mean"] if j == 0 else p["overall"]["like_for_like"]["both_succeeded"]["ratio_mean"]
        return p["overall"]["ratio_mean" if j == 0 else "ratio_p99"]

    values = [1.0]
    for p in profiles:
        for j in range(2):
            values += [v for v in (estimate(p, j)["value"], *estimate(p, j)["ci95"]) if finite(v)]
    left = 24 + max(text_width(p["name"]) for p in profiles)
    width, row_h, top = 720.0, 34.0, 50.0
    height = top + row_h * len(profiles) + 16
    lo, hi, log = data_range(values, log_ratio=10)
    x = Scale(min(lo, 0.9) if log else lo, hi, left + 10, width - 20, log=log)
    body = [x_axis(x, top - 4, height - 12, unit="×"),
            f'<line class="ref" x1="{x(1):.1f}" x2="{x(1):.1f}" y1="{top - 4:.1f}" y2="{height - 12:.1f}"/>']
    for i, p in enumerate(profiles):
        cy = top + row_h * (i + 0.5)
        body.append(f'<text class="label" x="{left - 6:.1f}" y="{cy + 4:.1f}" text-anchor="end">{esc(p["name"])}</text>')
        for j, (label, colour) in enumerate(series):
            est = estimate(p, j)
            lo_ci, hi_ci = est["ci95"]
            if not all(finite(v) for v in (est["value"], lo_ci, hi_ci)):
                continue  # too few pairs for a CI: the table says so
            yy = cy + (j - 0.5) * 10
            tip = _tip(f'{p["name"]}: mean latency ratio (ext/int), {label}' if like
                       else f'{p["name"]}: {label} latency ratio (ext/int)', fmt.ci(est["value"], est["ci95"]),
                       p.get("description", ""))
            body.append(f'<g class="ci" data-tip="{tip}"><line x1="{x(lo_ci):.1f}" x2="{x(hi_ci):.1f}" '
                        f'y1="{yy:.1f}" y2="{yy:.1f}" stroke="{colour}" stroke-width="2"/>'
                        f'<circle cx="{x(est["value"]):.1f}" cy="{yy:.1f}" r="4.5" fill="{colour}"/></g>')
    body.append(legend([(f"{series[0][0]}" if like else "mean ratio", series[0][1]),
                        (f"{series[1][0]}" if like else "p99 ratio", series[1][1])], left, 18))
    body.append(f'<text class="note" x="{width - 12:.1f}" y="18" text-anchor="end">external / internal, 95% CI; '
                f'1 = no overhead</text>')
    return figure("plot-ratios", width, height, "".join(body), "External/internal latency ratios",
                  rows=len(profiles))

"""The trace waterfall: one sample task's spans on a shared time axis.

Spans are laid out depth-first from the roots (a span whose parent is not in the trace is
a root), each on its own row, indented by depth, coloured by `service` and labelled with
its name and duration, as Jaeger and Tempo draw a trace. `sample_traces` picks which of
the stored traces to draw: the median-latency run's trace on each route when runs point
at stored traces, else the first stored traces.
"""
from __future__ import annotations

from inloop.loadgen.report import fmt
from inloop.loadgen.report.stats import percentile
from inloop.loadgen.report.svg import (
    SERVICE_COLOURS, Scale, clip_text, colour_for, esc, figure, legend, text_width, x_axis,
)

MAX_SPANS = 200  # a deeper trace is cut (and says so) to keep the page light


def sample_traces(doc: dict, limit: int = 2) -> list[tuple[str, str]]:
    """[(trace_id, caption)] of up to `limit` stored traces worth drawing."""
    traces = {k: v for k, v in (doc.get("traces") or {}).items() if v}
    picked: list[tuple[str, str]] = []
    runs = [r for r in doc.get("runs") or [] if r.get("trace_id") in traces]
    for route in dict.fromkeys(r["route"] for r in runs):
        rows = sorted((r for r in runs if r["route"] == route), key=lambda r: r["latency_ms"])
        median = percentile([r["latency_ms"] for r in rows], 50)
        run = min(rows, key=lambda r: abs(r["latency_ms"] - median))
        caption = (f"{run['profile']} · {route} · {run['case']} rep {run['rep']} "
                   f"({fmt.ms(run['latency_ms'])}, {'ok' if run['ok'] else 'failed'})")
        picked.append((run["trace_id"], caption))
    for tid in traces:
        if len(picked) >= limit:
            break
        if tid not in (t for t, _ in picked):
            picked.append((tid, f"trace {tid[:16]}"))
    return picked[:limit]


def span_rows(spans: list[dict]) -> list[tuple[dict, int]]:
    """(span, depth) in depth-first order, children by start time; cycles cannot loop."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[dict]] = {}
    roots = []
    for s in sorted(spans, key=lambda s: (s["start_ns"], s["end_ns"])):
        parent = s.get("parent_span_id") or ""
        if parent and parent in ids and parent != s["span_id"]:
            children.setdefault(parent, []).append(s)
        else:
            roots.append(s)
    out, seen = [], set()

    def walk(span: dict, depth: int) -> None:
        if span["span_id"] in seen:
            return
        seen.add(span["span_id"])
        out.append((span, depth))
        for child in children.get(span["span_id"], []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    # Spans only reachable through a cycle have no root; show them flat rather than drop them.
    out += [(s, 0) for s in spans if s["span_id"] not in seen]
    return out


def trace_waterfall(trace_id: str, spans: list[dict], plot_id: str) -> str:
    """One trace as an SVG waterfall ('' for no spans); the page captions it (see sample_traces)."""
    rows = span_rows(spans)[:MAX_SPANS]
    if not rows:
        return ""
    t0 = min(s["start_ns"] for s, _ in rows)
    t1 = max(max(s["end_ns"], s["start_ns"]) for s, _ in rows)
    services = list(dict.fromkeys(s["service"] for s, _ in rows))
    label_w, width, row_h, top = 300.0, 1000.0, 20.0, 56.0
    height = top + row_h * len(rows) + 12
    x = Scale(0.0, max((t1 - t0) / 1e6, 1e-3), label_w + 10, width - 110)
    body = [x_axis(x, top - 6, height - 6)]
    for i, (s, depth) in enumerate(rows):
        y0 = top + i * row_h
        start_ms, dur_ms = (s["start_ns"] - t0) / 1e6, max(0, s["end_ns"] - s["start_ns"]) / 1e6
        colour = colour_for(s["service"], SERVICE_COLOURS, services)
        indent = 8 + 12 * depth
        name = clip_text(s["name"], label_w - indent - 8)
        error = s.get("status", "").upper() in ("ERROR", "STATUS_CODE_ERROR")
        attrs = "\n".join(f"{k} = {v}" for k, v in list((s.get("attributes") or {}).items())[:8])
        tip = esc(f"{s['name']} ({s['service']}, {s.get('kind', '')})\nstart +{fmt.ms(start_ms)}, "
                  f"duration {fmt.ms(dur_ms)}, status {s.get('status', '')}" + (f"\n{attrs}" if attrs else ""))
        bx, bw = x(start_ms), max(x(start_ms + dur_ms) - x(start_ms), 1.5)
        dur_label = fmt.ms(dur_ms)
        inside = bx + bw + 6 + text_width(dur_label) > width - 4
        lx, anchor = (bx + bw - 4, "end") if inside else (bx + bw + 4, "start")
        outline = ' stroke="#CC3311" stroke-width="2"' if error else ""
        body.append(f'<g class="span{" error" if error else ""}" data-span-id="{esc(s["span_id"])}" data-depth="{depth}">'
                    f'<rect class="row-bg" x="0" y="{y0:.1f}" width="{width:.0f}" height="{row_h:.1f}"/>'
                    f'<text class="label" x="{indent:.1f}" y="{y0 + 14:.1f}">{esc(name)}</text>'
                    f'<rect class="span-bar" x="{bx:.1f}" y="{y0 + 3:.1f}" width="{bw:.1f}" height="{row_h - 6:.1f}" '
                    f'rx="2" fill="{colour}"{outline} '
                    f'data-service="{esc(s["service"])}" data-tip="{tip}"/>'
                    f'<text class="value{" on-bar" if inside else ""}" x="{lx:.1f}" y="{y0 + 14:.1f}" '
                    f'text-anchor="{anchor}">{esc(dur_label)}</text></g>')
    cut = len(spans) - len(rows)
    body.append(legend([(svc, colour_for(svc, SERVICE_COLOURS, services)) for svc in services], label_w + 10, 20))
    body.append('<text class="note" x="8" y="20">span (indented by depth)</text>')
    if cut:
        body.append(f'<text class="note" x="{width - 8:.0f}" y="20" text-anchor="end">{cut} more spans not shown</text>')
    return figure(plot_id, width, height, "".join(body), f"Trace {trace_id}", trace_id=trace_id, spans=len(rows))

"""`render_html(doc)`: a loadgen artifact as ONE self-contained HTML page.

No network at all: CSS and two small scripts are inline, plots are inline SVG built in
Python (plots_latency.py, plots_summary.py, plots_trace.py), and a Content-Security-Policy
forbids every external fetch, so the file reads the same from a laptop, a CI artifact store or an air-gapped host. The first script
records any script error, blocked fetch or console.error into the page (`#report-errors`,
and `data-errors` on <html>), which both warns a reader and lets the tests check the page;
the last one shows each plot element's `data-tip` as a hover tooltip.
"""
from __future__ import annotations

from inloop.loadgen.report.plots_latency import latency_boxplot, ratio_forest
from inloop.loadgen.report.plots_summary import coldwarm_bars, hop_bars, load_percentiles, load_sweep_curves
from inloop.loadgen.report.plots_trace import sample_traces, trace_waterfall
from inloop.loadgen.report.stats import runs_by_cell
from inloop.loadgen.report.svg import esc
from inloop.loadgen.report.tables import SECTION_TITLES, Table, meta_rows, section_tables

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

ERROR_CAPTURE_JS = """(function () {
  var errs = [];
  function show() {  // the banner may not exist yet when an early error is recorded
    document.documentElement.setAttribute("data-errors", String(errs.length));
    var el = document.getElementById("report-errors");
    if (el && errs.length) { el.textContent = "This page hit errors:\\n" + errs.join("\\n"); el.hidden = false; }
  }
  function record(msg) { errs.push(String(msg)); show(); }
  window.addEventListener("error", function (e) {
    record("error: " + (e.message || (e.target && e.target.tagName) || e.type) +
           (e.filename ? " at " + e.filename + ":" + e.lineno : ""));
  }, true);
  window.addEventListener("unhandledrejection", function (e) { record("unhandled rejection: " + e.reason); });
  document.addEventListener("securitypolicyviolation", function (e) {
    record("blocked fetch: " + e.blockedURI + " (" + e.violatedDirective + ")");
  });
  var original = console.error;
  console.error = function () { record(Array.prototype.join.call(arguments, " ")); return original.apply(console, arguments); };
  document.documentElement.setAttribute("data-errors", "0");
  document.addEventListener("DOMContentLoaded", show);
})();"""

TOOLTIP_JS = """(function () {
  var tip = document.getElementById("tip");
  function place(e) {
    var t = e.target && e.target.closest ? e.target.closest("[data-tip]") : null;
    if (!t) { tip.hidden = true; return; }
    tip.textContent = t.getAttribute("data-tip");
    tip.hidden = false;
    var r = tip.getBoundingClientRect(), x = e.clientX + 14, y = e.clientY + 14;
    if (x + r.width > window.innerWidth - 8) x = e.clientX - r.width - 14;
    if (y + r.height > window.innerHeight - 8) y = e.clientY - r.height - 14;
    tip.style.left = Math.max(4, x) + "px";
    tip.style.top = Math.max(4, y) + "px";
  }
  document.addEventListener("mousemove", place);
  document.addEventListener("mouseleave", function () { tip.hidden = true; });
  document.documentElement.setAttribute("data-ready", "1");
})();"""

CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --zebra: #f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1120px; padding: 24px 28px 64px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 36px 0 8px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); } h3 { font-size: 15px; margin: 18px 0 6px; }
.sub, .note, figcaption { color: var(--muted); } .note { font-size: 12.5px; margin: 4px 0 12px; }
nav { margin: 10px 0 0; font-size: 13px; } nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 4px 0 6px; font-size: 13px; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: 6px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: var(--zebra); font-weight: 600; } td.num, th.num { text-align: right; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
table.meta td:first-child { color: var(--muted); width: 110px; } table.meta td { white-space: normal; }
code, pre { font: 12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: var(--zebra); padding: 8px 10px; border-radius: 6px; overflow-x: auto; }
figure { margin: 10px 0 16px; } figcaption { font-size: 13px; margin-bottom: 4px; }
svg.plot { max-width: 100%; height: auto; display: block; font-family: inherit; }
svg.plot text { font-size: 12px; fill: var(--ink); }
svg.plot .tick, svg.plot .note, svg.plot .value { font-size: 11px; fill: var(--muted); }
svg.plot .group { font-size: 13px; font-weight: 600; } svg.plot .value.on-bar { fill: #fff; }
svg.plot .axis-title { font-size: 12px; fill: var(--muted); }
svg.plot .grid { stroke: #e6e9ed; stroke-width: 1; } svg.plot .ref { stroke: #444; stroke-dasharray: 4 3; }
svg.plot .whisker, svg.plot .cap { stroke-width: 1.4; } svg.plot .median { stroke-width: 2.6; }
svg.plot .e2e { stroke: #222; stroke-width: 2; } svg.plot .row-bg { fill: transparent; }
svg.plot g.span:nth-of-type(even) .row-bg { fill: var(--zebra); }
svg.plot [data-tip]:hover { opacity: 0.8; }
#tip { position: fixed; z-index: 10; pointer-events: none; background: #24292f; color: #fff; padding: 6px 9px;
       border-radius: 5px; font-size: 12px; white-space: pre; box-shadow: 0 2px 8px rgba(0,0,0,.25); }
#report-errors { background: #ffebe9; border: 1px solid #cf222e; color: #82071e; padding: 8px 10px; }
"""


def table_html(table: Table) -> str:
    head = "".join(f'<th class="{"num" if a == "r" else ""}">{esc(c)}</th>' for c, a in zip(table.columns, table.align))
    body = "".join("<tr>" + "".join(f'<td class="{"num" if a == "r" else ""}">{esc(v)}</td>'
                                    for v, a in zip(row, table.align)) + "</tr>" for row in table.rows)
    note = f'<p class="note">{esc(table.note)}</p>' if table.note else ""
    return (f'<div class="scroll"><table><caption>{esc(table.title)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>{note}")


def _figure(svg: str, caption: str = "") -> str:
    if not svg:
        return ""
    return f"<figure>{f'<figcaption>{esc(caption)}</figcaption>' if caption else ''}{svg}</figure>"


def _meta_html(doc: dict) -> str:
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{f'<code>{esc(v)}</code>' if k in ('command', 'commit') else esc(v)}</td></tr>"
                   for k, v in meta_rows(doc))
    profiles = doc.get("meta", {}).get("profiles") or {}
    toml = "".join(f"<h3>{esc(name)}</h3><pre>{esc(text)}</pre>" for name, text in profiles.items())
    details = (f"<details><summary>Fault profiles ({len(profiles)}), as run</summary>{toml}</details>"
               if profiles else "")
    return f'<table class="meta"><tbody>{rows}</tbody></table>{details}'


def _traces_html(doc: dict) -> str:
    figs = []
    for i, (tid, caption) in enumerate(sample_traces(doc)):
        svg = trace_waterfall(tid, doc["traces"][tid], f"plot-trace-{i}")
        figs.append(_figure(svg, f"Sample task: {caption}, trace {tid}"))
    return "".join(figs)


def _sections(doc: dict) -> list[tuple[str, str, str]]:
    """(anchor, title, inner HTML) in reading order; sections absent from `doc` are skipped."""
    tables = dict(section_tables(doc))
    html_tables = {k: "".join(table_html(t) for t in ts) for k, ts in tables.items()}
    out = []
    if "matrix" in tables:
        out.append(("matrix", SECTION_TITLES["matrix"], _figure(ratio_forest(doc["matrix"])) + html_tables["matrix"]))
    if runs_by_cell(doc):
        out.append(("latency", "Latency per run", _figure(latency_boxplot(doc),
                    "End-to-end latency of every run, by fault profile; internal and external route side by side.")
                    + html_tables.get("runs", "")))
    if "hops" in tables:
        out.append(("hops", SECTION_TITLES["hops"], _figure(hop_bars(doc["hops"]),
                    "Mean milliseconds per hop; the black tick is the measured end-to-end mean.") + html_tables["hops"]))
    traces = _traces_html(doc)
    if traces:
        out.append(("traces", "Traces", traces))
    if "loops" in tables:
        out.append(("loops", SECTION_TITLES["loops"], html_tables["loops"]))
    if "coldwarm" in tables:
        out.append(("coldwarm", SECTION_TITLES["coldwarm"], _figure(coldwarm_bars(doc["coldwarm"])) + html_tables["coldwarm"]))
    if "load" in tables:
        sweep = load_sweep_curves(doc["load"])
        out.append(("load", SECTION_TITLES["load"], (_figure(sweep, "A concurrency sweep: throughput and "
                    "latency per level.") if sweep else "") + _figure(load_percentiles(doc["load"]),
                    "Latency percentiles per metric (vLLM bench serve names).") + html_tables["load"]))
    return out


def render_html(doc: dict) -> str:
    """The whole page as one string (UTF-8 when written)."""
    kind, created = doc.get("kind", "?"), doc.get("created", "?")
    sections = _sections(doc)
    n_runs = len(doc.get("runs") or [])
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t, _ in [("run", "Run", "")] + sections)
    body = "".join(f'<section id="{a}"><h2>{esc(t)}</h2>{inner}</section>' for a, t, inner in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>inloop loadgen report: {esc(kind)} ({esc(created)})</title>"
            f"<script>{ERROR_CAPTURE_JS}</script><style>{CSS}</style></head><body>"
            f'<pre id="report-errors" hidden></pre>'
            f"<header><h1>inloop loadgen report: {esc(kind)}</h1>"
            f'<p class="sub">Created {esc(created)} · {n_runs} runs · {len(doc.get("traces") or {})} traces · '
            f"{esc(doc.get('schema', ''))}</p><nav>{nav}</nav></header>"
            f'<section id="run"><h2>Run</h2>{_meta_html(doc)}</section>{body}'
            f'<div id="tip" role="tooltip" hidden></div><script>{TOOLTIP_JS}</script></body></html>\n')

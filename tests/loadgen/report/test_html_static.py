"""The HTML report as text: self-contained, plots sized by the document, escaped, small."""
from __future__ import annotations

import re

from inloop.loadgen.report.html import render_html
from inloop.loadgen.report.plots_trace import sample_traces, span_rows
from tests.loadgen.report.synthetic import make_artifact


def _count(html: str, pattern: str) -> int:
    return len(re.findall(pattern, html))


def test_page_is_self_contained(artifact):
    html = render_html(artifact)
    assert html.startswith("<!DOCTYPE html>")
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    # Nothing to fetch: no src/href other than in-page anchors, no CSS imports or url().
    assert not re.search(r'\b(src|href)\s*=\s*"(?!#)', html)
    assert "@import" not in html and "url(" not in html
    assert "http://" not in html and "https://" not in html


def test_plots_have_one_mark_per_thing_in_the_doc(artifact):
    html = render_html(artifact)
    assert _count(html, r'<g class="box" ') == 6  # 3 profiles × 2 routes
    assert _count(html, r'<circle class="pt[ "]') == len(artifact["runs"])
    assert _count(html, r'<circle class="pt fail"') == sum(not r["ok"] for r in artifact["runs"])
    assert _count(html, r'<g class="ci" ') == 2 * len(artifact["matrix"]["profiles"])
    assert _count(html, r'<g class="hop-row" ') == len(artifact["hops"]["rows"])
    positive = sum(v > 0 for r in artifact["hops"]["rows"] for k, v in r.items()
                   if k.endswith("_ms") and k != "end_to_end_ms")
    assert _count(html, r'<rect class="hop-seg" ') == positive
    assert _count(html, r'<rect class="span-bar" ') == sum(len(s) for s in artifact["traces"].values())
    assert _count(html, r'<circle class="pct-pt" ') == 16  # 4 metrics × median/p90/p95/p99
    assert _count(html, r'<rect class="cw-bar" ') == 6


def test_sample_traces_are_the_median_runs_traces(artifact):
    picked = sample_traces(artifact)
    assert {tid for tid, _ in picked} == set(artifact["traces"])
    assert any("external" in caption for _, caption in picked)


def test_span_rows_nest_children_under_parents(artifact):
    spans = next(iter(artifact["traces"].values()))
    rows = span_rows(spans)
    assert len(rows) == len(spans)
    order = {s["span_id"]: i for i, (s, _) in enumerate(rows)}
    depth = {s["span_id"]: d for s, d in rows}
    for s, d in rows:
        if s["parent_span_id"]:
            assert order[s["parent_span_id"]] < order[s["span_id"]]
            assert d == depth[s["parent_span_id"]] + 1
        else:
            assert d == 0
    assert max(depth.values()) == 3


def test_span_rows_survive_orphans_and_cycles():
    def span(sid, parent, start):
        return {"span_id": sid, "parent_span_id": parent, "start_ns": start, "end_ns": start + 5}
    rows = span_rows([span("a", "missing", 0), span("b", "c", 1), span("c", "b", 2), span("d", "a", 3)])
    assert sorted(s["span_id"] for s, _ in rows) == ["a", "b", "c", "d"]
    assert {s["span_id"]: d for s, d in rows}["d"] == 1


def test_absent_sections_and_plots_are_omitted():
    full = make_artifact()
    doc = {k: full[k] for k in ("schema", "created", "meta", "coldwarm")} | {"kind": "coldwarm"}
    html = render_html(doc)
    assert 'id="plot-coldwarm"' in html
    for plot in ("plot-latency", "plot-ratios", "plot-hops", "plot-trace-0", "plot-load"):
        assert f'id="{plot}"' not in html
    assert '<section id="matrix">' not in html


def test_text_from_the_artifact_is_escaped(artifact):
    artifact["matrix"]["profiles"][0]["description"] = "<script>alert(1)</script>"
    artifact["meta"]["command"] = 'run --x "<b>"'
    html = render_html(artifact)
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_large_run_stays_small():
    """6 profiles × 2 routes × 200 runs and a 40-span trace stay well under 2 MB."""
    doc = make_artifact(n_profiles=6, runs_per_cell=200, spans_per_trace=40)
    html = render_html(doc)
    assert len(html.encode()) < 2_000_000
    assert _count(html, r'<g class="box" ') == 12
    assert _count(html, r'<rect class="span-bar" ') == 80

"""The HTML report in headless Chromium: no errors, no fetches, every plot drawn and sized.

A probe script, appended to a copy of the page (the report itself stays as written),
measures what the browser actually laid out: the marks in each SVG, that none falls outside
its plot, the waterfall's indentation, and that hovering a box shows its tooltip. It
writes its findings into the DOM, which `--dump-dom` returns. The report's own first
script counts script errors, console.error calls and blocked fetches into `data-errors`.
A full-page screenshot is kept in the test's tmp dir and copied to $INLOOP_TEST_ARTIFACTS.
"""
from __future__ import annotations

import math

import html as htmllib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from inloop.loadgen.report.html import render_html
from tests.loadgen.report import browser
from tests.loadgen.report.synthetic import make_artifact

pytestmark = pytest.mark.skipif(browser.chromium_binary() is None,
                                reason="chromium not installed (listed in scripts/system-packages.txt; "
                                       "bash scripts/system_packages.sh installs it)")

MARKS = ["g.box", "circle.pt", "circle.pt.fail", "g.ci", "g.hop-row", "rect.hop-seg", "rect.span-bar",
         "circle.pct-pt", "rect.cw-bar"]

PROBE_JS = """(function () {
  var out = {errors: document.documentElement.getAttribute("data-errors"),
             ready: document.documentElement.getAttribute("data-ready"),
             errorText: document.getElementById("report-errors").textContent,
             resources: performance.getEntriesByType("resource").map(function (e) { return e.name; }),
             height: document.documentElement.scrollHeight, counts: {}, plots: {}, traces: {}};
  MARKS.forEach(function (s) { out.counts[s] = document.querySelectorAll(s).length; });
  document.querySelectorAll("svg.plot").forEach(function (svg) {
    var r = svg.getBoundingClientRect(), outside = [];
    svg.querySelectorAll("rect:not(.row-bg), circle, line, path, polyline, text").forEach(function (el) {
      var b = el.getBoundingClientRect();  // on screen, so rotated labels count as drawn
      if (b.left < r.left - 1 || b.top < r.top - 1 || b.right > r.right + 1 || b.bottom > r.bottom + 1)
        outside.push(el.tagName + "." + el.getAttribute("class") + " " + (el.textContent || "").slice(0, 30));
    });
    out.plots[svg.id] = {width: r.width, height: r.height, outside: outside,
                         marks: svg.querySelectorAll("rect, circle, path, polyline").length};
  });
  document.querySelectorAll("svg[data-trace-id]").forEach(function (svg) {
    out.traces[svg.dataset.traceId] = Array.prototype.map.call(svg.querySelectorAll("g.span"), function (g) {
      var bar = g.querySelector("rect.span-bar"), label = g.querySelector("text.label");
      return {id: g.dataset.spanId, depth: +g.dataset.depth, labelX: label.getBBox().x, barX: bar.getBBox().x,
              barW: bar.getBBox().width, service: bar.dataset.service, fill: getComputedStyle(bar).fill};
    });
  });
  var box = document.querySelector("g.box rect.iqr");
  if (box) {
    var b = box.getBoundingClientRect();
    box.dispatchEvent(new MouseEvent("mousemove", {bubbles: true, clientX: b.x + b.width / 2, clientY: b.y + b.height / 2}));
    var tip = document.getElementById("tip");
    out.tooltip = {hidden: tip.hidden, text: tip.textContent};
  }
  var pre = document.createElement("pre");
  pre.id = "probe"; pre.style.display = "none"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();"""


def _probe(report: Path) -> tuple[dict, str]:
    probed = report.with_name(report.stem + ".probe.html")
    probe = f"<script>var MARKS = {json.dumps(MARKS)};\n{PROBE_JS}</script></body>"
    probed.write_text(report.read_text().replace("</body>", probe), encoding="utf-8")
    dom, stderr = browser.dump_dom(probed)
    found = re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', dom, re.DOTALL)
    assert found, f"the probe did not run; chromium said: {stderr[-1500:]}"
    return json.loads(htmllib.unescape(found.group(1))), stderr


def _keep_screenshot(report: Path, name: str, height: int) -> Path:
    png = report.with_name(name)
    width, shot_height = browser.screenshot(report, png, 1200, min(height, 16000))
    assert (width, shot_height) == (1200, min(height, 16000))
    # A blank page compresses to a few kB; a page of plots and tables does not.
    assert png.stat().st_size > 50_000, f"screenshot {png} looks blank ({png.stat().st_size} bytes)"
    if os.environ.get("INLOOP_TEST_ARTIFACTS"):
        dest = Path(os.environ["INLOOP_TEST_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, dest / name)
    return png


def _check_clean(found: dict, stderr: str) -> None:
    assert found["errors"] == "0", found["errorText"]
    assert found["ready"] == "1", "the tooltip script did not finish"
    assert found["resources"] == [], f"the page fetched {found['resources']}"
    assert browser.console_problems(stderr) == []
    for plot_id, plot in found["plots"].items():
        assert plot["width"] > 300 and plot["height"] > 80, f"{plot_id} is not laid out: {plot}"
        assert plot["outside"] == [], f"{plot_id} draws outside its box: {plot['outside'][:5]}"


def test_report_renders_cleanly_with_every_plot(artifact, tmp_path):
    report = tmp_path / "report.html"
    report.write_text(render_html(artifact), encoding="utf-8")
    found, stderr = _probe(report)
    _check_clean(found, stderr)

    assert set(found["plots"]) == {"plot-ratios", "plot-latency", "plot-hops", "plot-trace-0", "plot-trace-1",
                                   "plot-coldwarm", "plot-load"}
    counts = found["counts"]
    runs = artifact["runs"]
    assert counts["g.box"] == len({(r["profile"], r["route"]) for r in runs}) == 6
    assert counts["circle.pt"] == len(runs)
    assert counts["circle.pt.fail"] == sum(not r["ok"] for r in runs)
    assert counts["g.ci"] == 2 * len(artifact["matrix"]["profiles"])
    assert counts["g.hop-row"] == len(artifact["hops"]["rows"])
    assert counts["rect.span-bar"] == sum(len(v) for v in artifact["traces"].values())
    assert counts["circle.pct-pt"] == 16 and counts["rect.cw-bar"] == 6

    # The waterfall: every span once, children indented and starting no earlier than parents,
    # one colour per service.
    assert set(found["traces"]) == set(artifact["traces"])
    for trace_id, rows in found["traces"].items():
        spans = {s["span_id"]: s for s in artifact["traces"][trace_id]}
        assert sorted(r["id"] for r in rows) == sorted(spans)
        by_id = {r["id"]: r for r in rows}
        for r in rows:
            parent = spans[r["id"]]["parent_span_id"]
            if parent:
                assert r["labelX"] > by_id[parent]["labelX"]
                assert r["barX"] >= by_id[parent]["barX"] - 0.5
        fills = {r["service"]: r["fill"] for r in rows}
        assert len(set(fills.values())) == len(fills) == len({s["service"] for s in spans.values()})
    assert max(len({r["service"] for r in rows}) for rows in found["traces"].values()) == 3

    assert found["tooltip"]["hidden"] is False and "median" in found["tooltip"]["text"]
    _keep_screenshot(report, "loadgen-report.png", found["height"])


def test_large_report_renders_cleanly(tmp_path):
    doc = make_artifact(n_profiles=6, runs_per_cell=200, spans_per_trace=40)
    report = tmp_path / "report-large.html"
    report.write_text(render_html(doc), encoding="utf-8")
    assert report.stat().st_size < 2_000_000
    found, stderr = _probe(report)
    _check_clean(found, stderr)
    assert found["counts"]["g.box"] == 12
    assert found["counts"]["circle.pt"] == len(doc["runs"]) == 2400
    assert found["counts"]["rect.span-bar"] == 80
    _keep_screenshot(report, "loadgen-report-large.png", found["height"])


def test_a_script_error_is_caught_and_shown(artifact, tmp_path):
    """The page's own error capture works: a broken script shows up in data-errors and the banner."""
    report = tmp_path / "broken.html"
    report.write_text(render_html(artifact).replace("</body>", "<script>notDefined();</script></body>"))
    found, _ = _probe(report)
    assert found["errors"] == "1"
    assert "notDefined" in found["errorText"]


def _degenerate_artifact() -> dict:
    """What an interrupted or tiny run leaves: NaN estimates, few runs, all of one latency,
    a zero-length hop row, an empty trace and a span that ends before it starts."""
    nan = float("nan")
    doc = make_artifact(n_profiles=2, runs_per_cell=12)
    doc["matrix"]["profiles"][1]["overall"]["ratio_mean"] = {"value": nan, "ci95": [nan, nan]}
    for run in doc["runs"]:
        run["latency_ms"] = 250.0
    doc["runs"][-1]["latency_ms"] = nan
    doc["hops"]["rows"][0].update(end_to_end_ms=0.0, model_ms=0.0, tools_ms=0.0, other_ms=-3.0)
    doc["hops"]["rows"][1].update(end_to_end_ms=nan)
    first = next(iter(doc["traces"]))
    doc["traces"][first] = doc["traces"][first][:1]
    doc["traces"][first][0]["end_ns"] = doc["traces"][first][0]["start_ns"] - 5
    doc["traces"]["empty"] = []
    doc["coldwarm"]["warm"] = {"n": 0, "mean_ms": nan, "p95_ms": nan, "p99_ms": nan}
    doc["load"]["itl_ms"] = {k: nan for k in doc["load"]["itl_ms"]}
    return doc


def test_degenerate_numbers_render_without_errors(tmp_path):
    from inloop.loadgen.report.schema import validate

    doc = _degenerate_artifact()
    validate(doc)
    report = tmp_path / "degenerate.html"
    report.write_text(render_html(doc), encoding="utf-8")
    assert not re.search(r'="[^"]*\b(nan|NaN|inf)\b', report.read_text()), "a non-finite number reached the SVG"
    found, stderr = _probe(report)
    _check_clean(found, stderr)
    assert found["counts"]["circle.pt"] == len(doc["runs"]) - 1  # the NaN run has no dot
    drawn = [p["overall"]["ratio_mean"] for p in doc["matrix"]["profiles"]] + \
        [p["overall"]["like_for_like"]["both_succeeded"]["ratio_mean"] for p in doc["matrix"]["profiles"]]
    assert found["counts"]["g.ci"] == sum(all(math.isfinite(v) for v in (e["value"], *e["ci95"])) for e in drawn)
    assert found["counts"]["g.ci"] >= 2  # p01's all-pairs ratio has no estimate; the others have CIs
    assert found["counts"]["circle.pct-pt"] == 12  # ITL measured nothing
    assert found["counts"]["rect.cw-bar"] == 3

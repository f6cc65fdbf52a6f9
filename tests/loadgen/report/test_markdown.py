"""The Markdown summary: run metadata, one table per section present, units and CIs."""
from __future__ import annotations

import math

from inloop.loadgen.report import fmt
from inloop.loadgen.report.markdown import render_markdown
from tests.loadgen.report.synthetic import make_artifact


def _table_rows(md: str, title: str) -> list[list[str]]:
    """The body rows (cells stripped) of the table under `**title**`."""
    lines = md.splitlines()
    start = lines.index(f"**{title}**") + 4  # title, blank, header, separator
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_formatters_pick_units_and_rounding():
    assert fmt.ms(0.042) == "42 µs"
    assert fmt.ms(3.14159) == "3.14 ms"
    assert fmt.ms(31.4159) == "31.4 ms"
    assert fmt.ms(314.159) == "314 ms"
    assert fmt.ms(1234.5) == "1.23 s"
    assert fmt.ms(12345) == "12.3 s"
    assert fmt.ms(0) == "0 ms"
    assert fmt.ms(math.nan) == fmt.ms(None) == "–"
    assert fmt.ci(1.2345, [1.1, 1.37]) == "1.23 [1.10, 1.37]"
    assert fmt.ci(0.05, [-0.021, 0.118], fmt.signed_pp) == "+5.0 [-2.1, +11.8]"
    assert fmt.pct(0.857142) == "85.7%"
    assert fmt.per_s(1877.0, "tok") == "1,877 tok/s"
    assert fmt.errors({"UNAVAILABLE": 1, "DEADLINE_EXCEEDED": 3, "x": 0}) == "DEADLINE_EXCEEDED×3, UNAVAILABLE×1"


def test_metadata_comes_first(artifact):
    md = render_markdown(artifact)
    assert md.startswith("# inloop loadgen report: matrix\n")
    run = md.index("## Run")
    assert run < md.index("## Routing matrix")
    assert f"| commit | `{artifact['meta']['commit']}` |" in md
    assert "| host | AMD EPYC 9654 (16 cores), GPU NVIDIA H100 80GB HBM3 |" in md
    assert "| seeds | 0, 1, 2 |" in md
    assert f"Created 2026-11-27T10:00:00Z; {len(artifact['runs'])} runs, 2 traces." in md


def test_matrix_tables_carry_each_profile_with_cis(artifact):
    md = render_markdown(artifact)
    overall = _table_rows(md, "Overall: external / internal")
    assert [r[0] for r in overall] == [p["name"] for p in artifact["matrix"]["profiles"]]
    for row, prof in zip(overall, artifact["matrix"]["profiles"]):
        est = prof["overall"]["ratio_mean"]
        assert row[3].startswith(f"{est['value']:.2f} [{est['ci95'][0]:.2f}, {est['ci95'][1]:.2f}]")
        assert row[3].endswith(est["verdict"]) and est["verdict"] in ("internal faster", "parity within noise")
        like = prof["overall"]["like_for_like"]["both_succeeded"]
        assert row[4] == str(like["pairs"]) and like["pairs"] <= prof["overall"]["pairs"]
    per_route = _table_rows(md, "Overall: per route")
    assert len(per_route) == 2 * len(artifact["matrix"]["profiles"])
    p01_ext = next(r for r in per_route if r[:2] == ["p01", "external"])
    cell = artifact["matrix"]["profiles"][1]["overall"]["external"]
    assert p01_ext[6] == f"{cell['success_rate'] * 100:.1f}%"
    assert len(_table_rows(md, "Per family")) == 3 * len(artifact["matrix"]["profiles"])


def test_loops_coldwarm_load_hops_runs_tables(artifact):
    md = render_markdown(artifact)
    assert len(_table_rows(md, "Arms")) == len(artifact["loops"]["arms"])
    assert ["baseline", "internal", "+5.0 [-2.1, +11.8]"] in _table_rows(md, "Effect of the gate on success")
    assert "Gate: mean_entropy threshold 1.85" in md
    cold = dict(map(tuple, _table_rows(md, "Start-up and first requests")))
    assert cold["process start → healthy"] == "1.42 s"
    assert cold["cold request: end to end"] == "612 ms"
    latency = {r[0]: r[1:] for r in _table_rows(md, "Latency")}
    assert latency["TTFT"] == ["24.0 ms", "22.3 ms", "33.6 ms", "40.8 ms", "62.4 ms", "7.20 ms"]
    assert latency["E2EL"][0] == "1.04 s"
    summary = dict(map(tuple, _table_rows(md, "Summary")))
    assert summary["offered load"] == "concurrency 8" and summary["goodput"] == "7.10 req/s"
    hops = _table_rows(md, "Mean time per hop")
    assert len(hops) == len(artifact["hops"]["rows"])
    runs = _table_rows(md, "Per profile and route")
    assert sum(int(r[2]) for r in runs) == len(artifact["runs"])


def test_profiles_toml_is_quoted(artifact):
    md = render_markdown(artifact)
    assert "```toml\n[tools.fault]" in md


def test_absent_sections_are_omitted():
    full = make_artifact()
    doc = {k: full[k] for k in ("schema", "created", "meta", "load")} | {"kind": "load"}
    md = render_markdown(doc)
    assert "## Load" in md
    for title in ("## Routing matrix", "## Agent loops", "## Cold and warm start", "## Hop overhead", "## Runs"):
        assert title not in md


def test_pipes_in_values_do_not_break_tables(artifact):
    artifact["matrix"]["profiles"][0]["description"] = "abort | delay"
    md = render_markdown(artifact)
    row = next(line for line in md.splitlines() if line.startswith("| p00 | abort"))
    assert "abort \\| delay" in row

"""`inloop loadgen summary DIR`: the one page a person opens first.

Reads every result in an output directory (the loadgen artifacts matrix-*, loops-*,
coldwarm-*, load-*, and the JSON of `loadgen backends` and `eval bfcl`), and writes
`summary.md` and a self-contained `summary.html` beside them: each result's headline
numbers side by side, and a list of claims, each marked as holding (its 95% CI excludes the
no-effect value) or noise (the CI includes it, or there are too few samples for one). The
newest artifact of each kind is the one summarised; the others are listed.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from inloop.loadgen.report import fmt
from inloop.loadgen.report.tables import Table

HOLDS, NOISE = "holds", "noise"


@dataclass(frozen=True)
class Claim:
    source: str   # the artifact it comes from
    text: str     # what it says, with its number and CI
    status: str   # holds | noise


def load_results(out_dir: Path) -> dict[str, list[tuple[Path, dict]]]:
    """Every JSON result in `out_dir` by kind, newest first (by the name's timestamp or mtime)."""
    found: dict[str, list[tuple[Path, dict]]] = {}
    for path in sorted(out_dir.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(doc, dict):
            continue
        kind = doc.get("kind") or ("backends" if "backends" in doc else "")
        if kind:
            found.setdefault(kind, []).append((path, doc))
    return found


# ---- claims ---------------------------------------------------------------------------------
def matrix_claims(source: str, sec: dict) -> list[Claim]:
    out = []
    for prof in sec.get("profiles", []):
        cell = prof["overall"]
        for subset, label in (("both_succeeded", "where both routes succeeded"), ("all", "over all pairs")):
            est = ((cell.get("like_for_like") or {}).get(subset) or {}).get("ratio_mean")
            if not est:
                continue
            verdict = est.get("verdict", "")
            status = HOLDS if verdict in ("internal faster", "external faster") else NOISE
            out.append(Claim(source, f"{prof['name']}: external/internal mean latency {label} "
                                     f"{fmt.ratio_verdict(est)}", status))
        delta = cell.get("success_delta") or {}
        if fmt.has_ci(delta.get("ci95")):
            lo, hi = delta["ci95"]
            out.append(Claim(source, f"{prof['name']}: success, external minus internal "
                                     f"{fmt.ci(delta['value'], delta['ci95'], fmt.signed_pp)} pp",
                             HOLDS if lo > 0 or hi < 0 else NOISE))
    return out


def loops_claims(source: str, sec: dict) -> list[Claim]:
    out = []
    for d in sec.get("deltas", []):
        lo, hi = d.get("ci95") or (None, None)
        holds = fmt.has_ci(d.get("ci95")) and (lo > 0 or hi < 0)
        out.append(Claim(source, f"uncertainty gate on {d['route']} ({d['scenario_set']}): success "
                                 f"{fmt.ci(d['success_delta'], d.get('ci95'), fmt.signed_pp)} pp",
                         HOLDS if holds else NOISE))
    return out


def eval_claims(source: str, doc: dict) -> list[Claim]:
    """`eval bfcl`: each arm's accuracy per category with its CI (a measurement, not a
    comparison: it holds when it has a CI)."""
    out = []
    for row in doc.get("rows") or doc.get("results") or []:
        acc, ci = row.get("accuracy"), row.get("ci95")
        if acc is None:
            continue
        out.append(Claim(source, f"{row.get('arm', '?')} on {row.get('category', '?')}: accuracy "
                                 f"{fmt.ci(acc, ci, fmt.pct) if fmt.has_ci(ci) else fmt.pct(acc)} "
                                 f"(n={row.get('n', '?')})", HOLDS if fmt.has_ci(ci) else NOISE))
    return out


# ---- headline tables ------------------------------------------------------------------------
def headline_tables(results: dict[str, list[tuple[Path, dict]]]) -> list[Table]:
    tables = []
    if "matrix" in results:
        path, doc = results["matrix"][0]
        t = Table(f"Routing matrix ({path.name})", ["profile", "pairs", "ext/int, all pairs", "both ok",
                  "ext/int, both succeeded", "success int", "success ext", "cost/correct ratio"], "lrrrrrrr")
        for prof in doc["matrix"].get("profiles", []):
            c = prof["overall"]
            like = (c.get("like_for_like") or {}).get("both_succeeded") or {}
            t.rows.append([prof["name"], fmt.count(c["pairs"]), fmt.ci_or_n(c["ratio_mean"]),
                           fmt.count(like.get("pairs")), fmt.ratio_verdict(like.get("ratio_mean")),
                           fmt.pct(c["internal"]["success_rate"]), fmt.pct(c["external"]["success_rate"]),
                           fmt.ratio((c.get("cost_per_correct") or {}).get("ratio"))])
        settings = doc["matrix"].get("settings") or {}
        if settings:
            t.note = "Runtime settings: " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
        tables.append(t)
    if "loops" in results:
        path, doc = results["loops"][0]
        t = Table(f"Agent loops ({path.name})", ["scenario set", "route", "gate", "n", "success", "mean latency"],
                  "lllrrr")
        for a in doc["loops"].get("arms", []):
            t.rows.append([a["scenario_set"], a["route"], "on" if a["gate"] else "off", fmt.count(a["n"]),
                           fmt.pct(a["success_rate"]), fmt.ms(a["mean_latency_ms"])])
        tables.append(t)
    if "coldwarm" in results:
        path, doc = results["coldwarm"][0]
        s = doc["coldwarm"]
        t = Table(f"Cold and warm ({path.name})", ["start → healthy", "cold TTFT", "cold end to end",
                  "warm mean", "warm p99"], "rrrrr")
        t.rows.append([fmt.ms(s["start_to_healthy_ms"]), fmt.ms(s["cold_ttft_ms"]), fmt.ms(s["cold_e2e_ms"]),
                       fmt.ms(s["warm"].get("mean_ms")), fmt.ms(s["warm"].get("p99_ms"))])
        tables.append(t)
    if "load" in results:
        path, doc = results["load"][0]
        s = doc["load"]
        t = Table(f"Load ({path.name})", ["offered", "completed", "output tok/s", "TTFT p50", "TTFT p99",
                  "TPOT p50", "TPOT p99"], "lrrrrrr")
        t.rows.append([f"concurrency {s.get('concurrency')}" if s["mode"] == "concurrency" else f"rate {s.get('rate')}",
                       fmt.count(s["completed"]), fmt.num(s["output_throughput"]), fmt.ms(s["ttft_ms"]["median"]),
                       fmt.ms(s["ttft_ms"]["p99"]), fmt.ms(s["tpot_ms"]["median"]), fmt.ms(s["tpot_ms"]["p99"])])
        tables.append(t)
    if "backends" in results:
        path, doc = results["backends"][0]
        t = Table(f"Backends ({path.name})", ["backend", "start → healthy", "TTFT", "decode tok/s",
                  "load out tok/s", "load TTFT p50"], "lrrrrr",
                  note="Run one at a time on the same machine; compare within this table only.")
        for r in doc["backends"]:
            if r.get("error"):
                t.rows.append([r["backend"], f"error: {r['error'][:60]}", "", "", "", ""])
                continue
            t.rows.append([r["backend"], fmt.seconds(r.get("start_to_healthy_s")), fmt.ms(r.get("ttft_ms")),
                           fmt.num(r.get("decode_tok_s")), fmt.num(r.get("load_output_tok_s")),
                           fmt.ms(r.get("load_ttft_median_ms"))])
        tables.append(t)
    return tables


def all_claims(results: dict[str, list[tuple[Path, dict]]]) -> list[Claim]:
    claims = []
    if "matrix" in results:
        path, doc = results["matrix"][0]
        claims += matrix_claims(path.name, doc["matrix"])
    if "loops" in results:
        path, doc = results["loops"][0]
        claims += loops_claims(path.name, doc["loops"])
    for kind in ("bfcl", "eval"):
        if kind in results:
            path, doc = results[kind][0]
            claims += eval_claims(path.name, doc)
    return claims


def claims_tables(claims: list[Claim]) -> list[Table]:
    holds = Table("Claims that hold", ["claim", "from"], "ll",
                  note="Each 95% CI excludes the no-effect value (a ratio of 1, a delta of 0).")
    noise = Table("Noise, or too few samples to tell", ["claim", "from"], "ll",
                  note="The CI includes the no-effect value, or there were too few pairs for a CI (under 10).")
    for c in claims:
        (holds if c.status == HOLDS else noise).rows.append([c.text, c.source])
    return [t for t in (holds, noise) if t.rows]


def write_summary(out_dir: Path) -> dict[str, Path]:
    from inloop.loadgen.report.html import CSP, CSS, table_html
    from inloop.loadgen.report.markdown import table_markdown
    from inloop.loadgen.report.svg import esc

    results = load_results(out_dir)
    if not results:
        raise FileNotFoundError(f"no loadgen results (*.json) in {out_dir}")
    tables = claims_tables(all_claims(results)) + headline_tables(results)
    listed = [f"{kind}: " + ", ".join(p.name for p, _ in docs) for kind, docs in sorted(results.items())]
    md = ["# inloop results summary", "", f"Directory `{out_dir}`; newest result of each kind.", ""]
    for t in tables:
        md += table_markdown(t)
    md += ["## Files", ""] + [f"- {line}" for line in listed]
    html = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><title>inloop results summary</title>'
            f"<style>{CSS}</style></head><body><header><h1>inloop results summary</h1>"
            f'<p class="sub">{esc(str(out_dir))}: newest result of each kind</p></header>'
            + "".join(f"<section>{table_html(t)}</section>" for t in tables)
            + "<section><h2>Files</h2><ul>" + "".join(f"<li>{esc(line)}</li>" for line in listed)
            + "</ul></section></body></html>\n")
    paths = {"md": out_dir / "summary.md", "html": out_dir / "summary.html"}
    paths["md"].write_text("\n".join(md).rstrip("\n") + "\n", encoding="utf-8")
    paths["html"].write_text(html, encoding="utf-8")
    return paths


def _cmd(args: argparse.Namespace) -> int:
    try:
        paths = write_summary(Path(args.dir))
    except FileNotFoundError as exc:
        print(f"loadgen summary: {exc}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind:5} {path}")
    return 0


def register_summary(lsub) -> None:
    s = lsub.add_parser("summary", help="one page over every result in an output directory, claims first",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("dir", metavar="DIR", help="an output directory (e.g. loadgen-out)")
    s.set_defaults(func=_cmd)

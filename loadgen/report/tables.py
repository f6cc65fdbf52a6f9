"""An artifact's sections as plain tables of formatted strings.

Both renderers (Markdown and HTML) print exactly these tables, so the two reports always
agree on what they show and how each number is rounded. A section builder takes the
section's dict and returns its tables; `section_tables` lists the sections present in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from inloop.loadgen.report import fmt
from inloop.loadgen.report.stats import percentile, runs_by_cell

HOP_PARTS = ("controller", "wire", "model", "tools", "retry", "other")
LOAD_METRICS = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("itl_ms", "ITL"), ("e2el_ms", "E2EL"))
SECTION_TITLES = {"matrix": "Routing matrix", "loops": "Agent loops", "coldwarm": "Cold and warm start",
                  "load": "Load", "hops": "Hop overhead", "runs": "Runs"}


@dataclass
class Table:
    """A titled table; `align` has one letter per column, l or r (numbers align right)."""
    title: str
    columns: list[str]
    align: str
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


def meta_rows(doc: dict) -> list[tuple[str, str]]:
    """The run's identity as (label, value) pairs, in the order a reader asks for them."""
    meta = doc.get("meta", {})
    host, model = meta.get("host", {}), meta.get("model", {})
    host_text = f"{host.get('cpu', '?')} ({host.get('cores', '?')} cores)"
    host_text += f", GPU {host['gpu']}" if host.get("gpu") else ", no GPU"
    packages = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("packages", {}).items()))
    args = ", ".join(f"{k}={v}" for k, v in meta.get("args", {}).items())
    return [("kind", doc.get("kind", "")), ("created", doc.get("created", "")),
            ("schema", doc.get("schema", "")), ("commit", meta.get("commit", "")),
            ("command", meta.get("command", "")), ("host", host_text),
            ("backend", meta.get("backend", "")),
            ("model", f"{model.get('name', '?')} (sha256 {model.get('sha256', '')[:12]})"),
            ("seeds", ", ".join(str(s) for s in meta.get("seeds", [])) or fmt.MISSING),
            ("packages", packages or fmt.MISSING), ("args", args or fmt.MISSING)]


def _like(cell: dict, subset: str) -> dict:
    return (cell.get("like_for_like") or {}).get(subset) or {}


def _delta(d: dict | None) -> str:
    """A rate difference in percentage points, with its CI where there is one."""
    d = d or {}
    return fmt.ci(d.get("value"), d["ci95"], fmt.signed_pp) if fmt.has_ci(d.get("ci95")) else fmt.signed_pp(d.get("value"))


def _comparison_row(cell: dict) -> list[str]:
    """all pairs, both succeeded, both finished; success and error deltas; cost per correct."""
    cost = cell.get("cost_per_correct") or {}
    every = _like(cell, "all").get("ratio_mean") or cell.get("ratio_mean")
    ok, done = _like(cell, "both_succeeded"), _like(cell, "both_finished")
    return [fmt.count(cell["pairs"]), fmt.ratio_verdict(every),
            fmt.count(ok.get("pairs")), fmt.ratio_verdict(ok.get("ratio_mean")),
            fmt.count(done.get("pairs")), fmt.ratio_verdict(done.get("ratio_mean")),
            _delta(cell.get("success_delta")), _delta(cell.get("error_delta")),
            fmt.ms(cost.get("internal")), fmt.ms(cost.get("external")), fmt.ratio(cost.get("ratio"))]


COMPARISON_COLUMNS = ["pairs", "ext/int mean, all pairs", "both ok", "ext/int mean, both succeeded",
                      "both done", "ext/int mean, both finished", "success Δ pp", "error Δ pp",
                      "cost/correct int", "cost/correct ext", "cost ratio"]
COMPARISON_NOTE = ("Ratios above 1: the external route is slower. Like for like: only pairs in which both "
                   "routes succeeded (answered, checker passed), or both finished without a typed error. "
                   "A verdict (internal faster / external faster / parity within noise) comes from the "
                   "bootstrap 95% CI, shown from 10 pairs up; deltas are external minus internal; cost per "
                   "correct answer is a route's total task time, failures and retries included, over its "
                   "passed tasks.")


def matrix_tables(sec: dict) -> list[Table]:
    overall = Table("Overall: external / internal", ["profile", "description"] + COMPARISON_COLUMNS,
                    "ll" + "r" * len(COMPARISON_COLUMNS), note=COMPARISON_NOTE)
    split = Table("Model-only vs tool families (the task-family parity split)", ["profile", "families"]
                  + COMPARISON_COLUMNS, "ll" + "r" * len(COMPARISON_COLUMNS),
                  note="Model-only: families that offer no tool, so the external route adds only its model hop.")
    routes = Table("Overall: per route", ["profile", "route", "n", "mean", "p50", "p99", "success",
                   "errors", "retries/task", "error types"], "llrrrrrrrl",
                   note="A p99 from 100 tasks up; below that the column shows the max, so labelled.")
    families = Table("Per family", ["profile", "family", "pairs", "ext/int mean", "both ok",
                     "ext/int mean, both succeeded", "p50 int", "p50 ext", "success int", "success ext"],
                     "llrrrrrrrr")
    for prof in sec.get("profiles", []):
        cell = prof["overall"]
        overall.rows.append([prof["name"], prof.get("description", "")] + _comparison_row(cell))
        for name, label in (("model_only", "model-only"), ("tools", "with tools")):
            if name in (prof.get("split") or {}):
                split.rows.append([prof["name"], label] + _comparison_row(prof["split"][name]))
        for route in ("internal", "external"):
            r = cell[route]
            routes.rows.append([prof["name"], route, fmt.count(r["n"]), fmt.ms(r["mean_ms"]),
                                fmt.ms(r["p50_ms"]), fmt.p99(r["p99_ms"], r.get("p99_label", "p99")),
                                fmt.pct(r["success_rate"]), fmt.pct(r["error_rate"]), fmt.num(r["retries_per_task"]),
                                fmt.errors(r.get("errors"))])
        for family, fc in sorted(prof.get("families", {}).items()):
            families.rows.append([prof["name"], family, fmt.count(fc["pairs"]), fmt.ci_or_n(fc["ratio_mean"]),
                                  fmt.count(_like(fc, "both_succeeded").get("pairs")),
                                  fmt.ci_or_n(_like(fc, "both_succeeded").get("ratio_mean")),
                                  fmt.ms(fc["internal"]["p50_ms"]), fmt.ms(fc["external"]["p50_ms"]),
                                  fmt.pct(fc["internal"]["success_rate"]),
                                  fmt.pct(fc["external"]["success_rate"])])
    tables = [overall, split, routes, families, *arms_tables(sec), settings_table(sec), *lab_tables(sec.get("lab"))]
    return [t for t in tables if t.rows]


def settings_table(sec: dict) -> Table:
    """What the runtime ran with (GetModelInfo's settings): prefix caching above all, since it
    changes what the external route's session-less calls prefill."""
    t = Table("Runtime settings in force", ["setting", "value"], "ll",
              note="As the runtime reported them at the start of the run.")
    t.rows = [[k, v] for k, v in sorted((sec.get("settings") or {}).items())]
    return t


def arms_tables(sec: dict) -> list[Table]:
    """Extra arms (--arm): the same matrix with the runtime restarted with other settings."""
    out = []
    for arm in sec.get("arms") or ():
        changed = ", ".join(f"{k}={v}" for k, v in sorted(arm.get("settings", {}).items())
                            if (sec.get("settings") or {}).get(k) != v)
        t = Table(f"Arm {arm['name']}: external / internal", ["profile"] + COMPARISON_COLUMNS,
                  "l" + "r" * len(COMPARISON_COLUMNS),
                  note=f"Settings that differ from the main run: {changed or 'none'}.")
        t.rows = [[prof["name"]] + _comparison_row(prof["overall"]) for prof in arm.get("profiles", [])]
        out.append(t)
    return out


def lab_tables(lab: dict | None) -> list[Table]:
    """The two-host lab (`inloop lab run`): the wire time of each hop, cross-host vs same-host."""
    if not lab:
        return []
    c = lab.get("comparison", {})
    table = Table(f"Two-host lab: wire time per hop ({lab.get('mechanism', '?')}, delay "
                  f"{lab.get('delay_ms', 0):g} ms ± {lab.get('jitter_ms', 0):g} ms each way)",
                  ["hop", "from", "to", "cross-host", "n", "mean", "median"], "llllrrr",
                  note=f"Cross-host hops {fmt.ms(c.get('cross_host_mean_ms'))} vs same-host "
                       f"{fmt.ms(c.get('same_host_mean_ms'))} on average: "
                       f"{fmt.ms(c.get('excess_ms'))} more, for a configured round trip of "
                       f"{fmt.ms(c.get('round_trip_ms'))}.")
    for hop, row in lab.get("wire_by_hop", {}).items():
        table.rows.append([hop, row.get("from", ""), row.get("to", ""), "yes" if row.get("cross_host") else "no",
                           fmt.count(row.get("n", 0)), fmt.ms(row.get("mean_ms")), fmt.ms(row.get("median_ms"))])
    return [table]


def loops_tables(sec: dict) -> list[Table]:
    gate = sec.get("gate") or {}
    arms = Table("Arms", ["scenario set", "route", "gate", "n", "success", "mean latency", "mean steps"],
                 "lllrrrr", note=(f"Gate: {gate.get('statistic', '?')} threshold "
                                  f"{fmt.num(gate.get('threshold'))} (from {gate.get('source', '?')})."
                                  if gate else ""))
    for a in sec.get("arms", []):
        arms.rows.append([a["scenario_set"], a["route"], "on" if a["gate"] else "off", fmt.count(a["n"]),
                          fmt.pct(a["success_rate"]), fmt.ms(a["mean_latency_ms"]), fmt.num(a["mean_steps"])])
    ratios = Table("External / internal latency", ["scenario set", "gate", "ratio"], "llr")
    for r in sec.get("ratios", []):
        ratios.rows.append([r["scenario_set"], "on" if r["gate"] else "off", fmt.ratio(r["ext_int_latency_ratio"])])
    deltas = Table("Effect of the gate on success", ["scenario set", "route",
                   "success Δ, pp [95% CI]"], "llr", note="Gate on minus gate off, in percentage points.")
    for d in sec.get("deltas", []):
        deltas.rows.append([d["scenario_set"], d["route"], fmt.ci(d["success_delta"], d["ci95"], fmt.signed_pp)])
    return [t for t in (arms, ratios, deltas) if t.rows]


def coldwarm_tables(sec: dict) -> list[Table]:
    warm = sec.get("warm", {})
    t = Table("Start-up and first requests", ["measure", "value"], "lr")
    t.rows = [["process start → healthy", fmt.ms(sec["start_to_healthy_ms"])],
              ["cold request: time to first token", fmt.ms(sec["cold_ttft_ms"])],
              ["cold request: end to end", fmt.ms(sec["cold_e2e_ms"])],
              [f"warm requests (n={warm.get('n', 0)}): mean", fmt.ms(warm.get("mean_ms"))],
              ["warm requests: p95", fmt.ms(warm.get("p95_ms"))],
              ["warm requests: p99", fmt.ms(warm.get("p99_ms"))]]
    if warm.get("mean_ms"):
        t.rows.append(["cold end to end / warm mean", f"{fmt.num(sec['cold_e2e_ms'] / warm['mean_ms'])}×"])
    return [t]


def load_tables(sec: dict) -> list[Table]:
    offered = (f"concurrency {sec['concurrency']}" if sec["mode"] == "concurrency"
               else f"Poisson arrivals at {fmt.per_s(sec.get('rate'), 'req')}")
    summary = Table("Summary", ["measure", "value"], "lr")
    summary.rows = [["offered load", offered], ["completed", fmt.count(sec["completed"])],
                    ["failed", fmt.count(sec["failed"])], ["duration", fmt.seconds(sec["duration_s"])],
                    ["request throughput", fmt.per_s(sec["request_throughput"], "req")],
                    ["output token throughput", fmt.per_s(sec["output_throughput"], "tok")],
                    ["total token throughput", fmt.per_s(sec["total_token_throughput"], "tok")],
                    ["goodput", fmt.per_s(sec.get("goodput"), "req")]]
    stats = Table("Latency", ["metric", "mean", "median", "p90", "p95", "p99", "std"], "lrrrrrr",
                  note="TTFT: time to first token; TPOT: time per output token after the first; "
                       "ITL: inter-token latency; E2EL: end-to-end request latency.")
    for key, label in LOAD_METRICS:
        s = sec[key]
        stats.rows.append([label] + [fmt.ms(s[k]) for k in ("mean", "median", "p90", "p95", "p99", "std")])
    if sec.get("sweep"):
        return [sweep_table(sec["sweep"]), summary, stats]
    return [summary, stats]


def sweep_table(levels: list[dict]) -> Table:
    """A concurrency sweep, one row per level (the summary and latency tables are the first's)."""
    t = Table("Concurrency sweep", ["concurrency", "output tok/s", "× first level", "TTFT p50", "TTFT p99",
                                    "TPOT p50", "TPOT p99", "completed", "failed"], "rrrrrrrrr",
              note="Each level ran its own prompts against the same runtime; the tables below are the first level's.")
    base = levels[0].get("output_throughput") or 0.0
    for lv in levels:
        out = lv["output_throughput"]
        t.rows.append([str(lv["concurrency"]), fmt.per_s(out, "tok"), f"{fmt.num(out / base)}×" if base else "–",
                       fmt.ms(lv["ttft_ms"].get("median")), fmt.ms(lv["ttft_ms"].get("p99")),
                       fmt.ms(lv["tpot_ms"].get("median")), fmt.ms(lv["tpot_ms"].get("p99")),
                       fmt.count(lv["completed"]), fmt.count(lv["failed"])])
    return t


def hops_tables(sec: dict) -> list[Table]:
    t = Table("Mean time per hop", ["profile", "route", "n", "end to end"] + list(HOP_PARTS) + ["sum error"],
              "llrr" + "r" * len(HOP_PARTS) + "r",
              note="Sum error: how far the parts' sum is from the end-to-end mean.")
    per_token = Table("Mean time per hop, per completion token", ["profile", "route", "tokens/task", "end to end"]
                      + list(HOP_PARTS), "llrr" + "r" * len(HOP_PARTS),
                      note="Each part over the task's completion tokens (all model steps): runs on models that "
                           "write more or fewer tokens compare.")
    for r in sec.get("rows", []):
        t.rows.append([r["profile"], r["route"], fmt.count(r["n"]), fmt.ms(r["end_to_end_ms"])]
                      + [fmt.ms(r[f"{p}_ms"]) for p in HOP_PARTS] + [f"{fmt.num(r['sum_error_pct'], 2)}%"])
        if r.get("end_to_end_ms_per_token") is not None:
            per_token.rows.append([r["profile"], r["route"], fmt.num(r.get("completion_tokens_mean")),
                                   fmt.ms(r["end_to_end_ms_per_token"])]
                                  + [fmt.ms(r.get(f"{p}_ms_per_token")) for p in HOP_PARTS])
    return [x for x in (t, per_token) if x.rows]


def runs_tables(doc: dict) -> list[Table]:
    """Per (profile, route): what the raw runs say (the matrix's CELLs summarise pairs instead)."""
    t = Table("Per profile and route", ["profile", "route", "runs", "ok", "passed", "p50", "p90", "p99",
              "max", "retries/run", "error types"], "llrrrrrrrrl")
    for (profile, route), rows in runs_by_cell(doc).items():
        lat = [r["latency_ms"] for r in rows]
        errs: dict[str, int] = {}
        for r in rows:
            if r.get("error_type"):
                errs[r["error_type"]] = errs.get(r["error_type"], 0) + 1
        t.rows.append([profile, route, fmt.count(len(rows)), fmt.pct(sum(r["ok"] for r in rows) / len(rows)),
                       fmt.pct(sum(r["passed"] for r in rows) / len(rows))]
                      + [fmt.ms(percentile(lat, q)) for q in (50, 90, 99)]
                      + [fmt.ms(max(lat)), fmt.num(sum(r["retries"] for r in rows) / len(rows)), fmt.errors(errs)])
    return [t] if t.rows else []


_BUILDERS = {"matrix": matrix_tables, "loops": loops_tables, "coldwarm": coldwarm_tables,
             "load": load_tables, "hops": hops_tables}


def section_tables(doc: dict) -> list[tuple[str, list[Table]]]:
    """(section key, tables) for every section the document carries, in report order."""
    out = [(key, build(doc[key])) for key, build in _BUILDERS.items() if doc.get(key)]
    if doc.get("runs"):
        out.append(("runs", runs_tables(doc)))
    return [(key, tables) for key, tables in out if tables]

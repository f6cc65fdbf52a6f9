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


def matrix_tables(sec: dict) -> list[Table]:
    overall = Table("Overall: external / internal latency", ["profile", "description", "pairs",
                    "mean ratio [95% CI]", "p99 ratio [95% CI]"], "llrrr",
                    note="Ratios above 1 mean the external route is slower than the internal one.")
    routes = Table("Overall: per route", ["profile", "route", "n", "mean", "p50", "p99", "success",
                   "errors", "retries/task", "error types"], "llrrrrrrrl")
    families = Table("Per family", ["profile", "family", "pairs", "mean ratio [95% CI]",
                     "p99 ratio [95% CI]", "p50 int", "p50 ext", "success int", "success ext"], "llrrrrrrr")
    for prof in sec.get("profiles", []):
        cell = prof["overall"]
        overall.rows.append([prof["name"], prof.get("description", ""), fmt.count(cell["pairs"]),
                             fmt.ci(cell["ratio_mean"]["value"], cell["ratio_mean"]["ci95"]),
                             fmt.ci(cell["ratio_p99"]["value"], cell["ratio_p99"]["ci95"])])
        for route in ("internal", "external"):
            r = cell[route]
            routes.rows.append([prof["name"], route, fmt.count(r["n"]), fmt.ms(r["mean_ms"]),
                                fmt.ms(r["p50_ms"]), fmt.ms(r["p99_ms"]), fmt.pct(r["success_rate"]),
                                fmt.pct(r["error_rate"]), fmt.num(r["retries_per_task"]),
                                fmt.errors(r.get("errors"))])
        for family, fc in sorted(prof.get("families", {}).items()):
            families.rows.append([prof["name"], family, fmt.count(fc["pairs"]),
                                  fmt.ci(fc["ratio_mean"]["value"], fc["ratio_mean"]["ci95"]),
                                  fmt.ci(fc["ratio_p99"]["value"], fc["ratio_p99"]["ci95"]),
                                  fmt.ms(fc["internal"]["p50_ms"]), fmt.ms(fc["external"]["p50_ms"]),
                                  fmt.pct(fc["internal"]["success_rate"]),
                                  fmt.pct(fc["external"]["success_rate"])])
    return [t for t in (overall, routes, families, *lab_tables(sec.get("lab"))) if t.rows]


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
    for r in sec.get("rows", []):
        t.rows.append([r["profile"], r["route"], fmt.count(r["n"]), fmt.ms(r["end_to_end_ms"])]
                      + [fmt.ms(r[f"{p}_ms"]) for p in HOP_PARTS] + [f"{fmt.num(r['sum_error_pct'], 2)}%"])
    return [t] if t.rows else []


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

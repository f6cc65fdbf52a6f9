"""`inloop loadgen matrix`: the routing matrix — every profile × task, internal vs external.

For each profile (loadgen/profiles/*.toml), the same task cases run as interleaved pairs:
case i of repetition r runs on both routes back to back, internal first when i + r is even
and external first otherwise, so drift in the machine's speed hits both routes alike. A few
warm-up tasks per profile run first and are not recorded. The profile reaches the services
per request (route policy + fault spec in the TaskRequest); nothing restarts between them.

Reported per profile, per task family and overall: the external/internal latency ratio of
the means and of the p99s with bootstrap 95% confidence intervals (pairs resampled
together), latency mean/p50/p99, success rate (the task answered and its checker passed),
error rate (a typed error), retries per task; and, from the traces, where the time went
(loadgen/hop_overhead.py). Writes a JSON artifact, a Markdown summary and an HTML report.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from inloop.loadgen.stats import bootstrap_ci
from inloop.loadgen.task_runner import ROUTES, add_step_max_tokens

N_BOOT = 2000


def pair_order(i: int, rep: int) -> tuple[str, str]:
    return ROUTES if (i + rep) % 2 == 0 else ROUTES[::-1]


def run_matrix(runner, profiles, cases, *, runs: int, warmups: int, run_id: str, progress=None) -> list[dict]:
    records = []
    for profile in profiles:
        for w in range(warmups):
            case = cases[w % len(cases)]
            for route in ROUTES:
                runner.run(case, route, run_id=f"{run_id}w", profile=profile, rep=w)
                if progress:
                    progress.update(1)
        for rep in range(runs):
            for i, case in enumerate(cases):
                order = pair_order(i, rep)
                for route in order:
                    rec = runner.run(case, route, run_id=run_id, profile=profile, rep=rep, first=route == order[0])
                    records.append(rec)
                    if progress:
                        progress.update(1)
                        progress.set_postfix_str(f"{profile.name} {case.family} {route} "
                                                 f"{'ok' if rec['ok'] else rec['error_type']}", refresh=False)
    return records


def route_summary(recs: list[dict]) -> dict:
    lat = np.array([r["latency_ms"] for r in recs], dtype=float)
    n = len(recs)
    if n == 0:
        return {"n": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "success_rate": 0.0, "error_rate": 0.0,
                "retries_per_task": 0.0, "errors": {}}
    return {"n": n, "mean_ms": float(lat.mean()), "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "success_rate": sum(r["passed"] for r in recs) / n,
            "error_rate": sum(not r["ok"] for r in recs) / n,
            "retries_per_task": sum(r["retries"] for r in recs) / n,
            "errors": dict(Counter(r["error_type"] for r in recs if r["error_type"]))}


def cell(recs: list[dict], seed: int) -> dict:
    """One table cell: both routes' summaries and the paired external/internal ratios."""
    by_key = defaultdict(dict)
    for r in recs:
        by_key[(r["case"], r["rep"])][r["route"]] = r["latency_ms"]
    pairs = np.array([(v["internal"], v["external"]) for v in by_key.values() if len(v) == 2], dtype=float)
    out = {"pairs": len(pairs)}
    for name, stat in (("ratio_mean", "ratio_of_means"), ("ratio_p99", "ratio_of_p99")):
        if len(pairs):
            ci = bootstrap_ci(pairs, stat, n_boot=N_BOOT, seed=seed)
            out[name] = {"value": ci.estimate, "ci95": [ci.low, ci.high]}
        else:
            out[name] = {"value": float("nan"), "ci95": [float("nan"), float("nan")]}
    for route in ROUTES:
        out[route] = route_summary([r for r in recs if r["route"] == route])
    return out


def summarize(records: list[dict], profiles, seed: int) -> dict:
    rows = []
    for profile in profiles:
        recs = [r for r in records if r["profile"] == profile.name]
        families = sorted({r["family"] for r in recs})
        rows.append({"name": profile.name, "description": profile.description, "overall": cell(recs, seed),
                     "families": {f: cell([r for r in recs if r["family"] == f], seed) for f in families}})
    return {"profiles": rows}


def _print_table(summary: dict) -> None:
    print(f"{'profile':8} {'pairs':>5} {'ext/int mean':>22} {'ext/int p99':>22} "
          f"{'int ok':>7} {'ext ok':>7} {'ext retries':>11}")
    for p in summary["profiles"]:
        c = p["overall"]
        rm, rp = c["ratio_mean"], c["ratio_p99"]
        print(f"{p['name']:8} {c['pairs']:5d} {rm['value']:7.2f} [{rm['ci95'][0]:5.2f}, {rm['ci95'][1]:5.2f}]"
              f" {rp['value']:7.2f} [{rp['ci95'][0]:5.2f}, {rp['ci95'][1]:5.2f}]"
              f" {c['internal']['success_rate']:7.0%} {c['external']['success_rate']:7.0%}"
              f" {c['external']['retries_per_task']:11.2f}")


def _cmd(args: argparse.Namespace) -> int:
    from inloop.loadgen.harness import check_counts, run_traced
    from inloop.loadgen.profiles import ProfileError, load_profiles
    from inloop.loadgen.reporting import finish_report
    from inloop.loadgen.tasks import load_cases
    from inloop.loadgen.trace_analysis import breakdown_check

    problem = check_counts(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        profiles = load_profiles(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cases = load_cases(args.family, split="eval", limit_per_family=args.per_family)
    if not cases:
        print("error: no task cases match --family/--per-family", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    run_id = f"m{int(time.time())}"
    total = len(profiles) * 2 * (args.warmups + args.runs * len(cases))
    print(f"matrix: {len(profiles)} profiles x {len(cases)} cases x {args.runs} runs x 2 routes "
          f"(+{args.warmups} warm-up pairs per profile) = {total} tasks", file=sys.stderr)
    started = time.monotonic()
    done = run_traced(args, out_dir, total, "matrix", lambda runner, bar: run_matrix(
        runner, profiles, cases, runs=args.runs, warmups=args.warmups, run_id=run_id, progress=bar))
    records = done.records
    section = summarize(records, profiles, args.seed)
    section["breakdown_check"] = breakdown_check(records)
    section["wall_s"] = round(time.monotonic() - started, 1)
    _print_table(section)
    check = section["breakdown_check"]
    print(f"hop overhead: {check['within_tolerance']}/{check['traced']} traced tasks add up within "
          f"{check['tolerance_pct']:.0f}% ({check['incomplete']} incomplete traces)")
    finish_report(args, "matrix", section, done.report_extra(), out_dir, model=done.model,
                  seeds=[args.seed], profiles={p.name: p.source for p in profiles})
    return 0


def register(lsub) -> None:
    from inloop.loadgen.harness import add_harness_args
    from inloop.loadgen.profiles import BUILTIN
    from inloop.loadgen.tasks import FAMILIES

    m = lsub.add_parser("matrix", help="the routing matrix: every profile x task, internal vs external",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--profile", action="append",
                   help=f"a profile name ({', '.join(BUILTIN)}) or a .toml path (repeatable; default all)")
    m.add_argument("--family", action="append", choices=FAMILIES, help="a task family (repeatable; default all)")
    m.add_argument("--per-family", type=int, default=1, help="eval cases per family (default 1)")
    m.add_argument("--runs", type=int, default=1, help="repetitions of every pair (default 1)")
    m.add_argument("--warmups", type=int, default=1, help="unrecorded warm-up pairs per profile (default 1)")
    add_step_max_tokens(m)
    m.add_argument("--deadline-ms", type=float, default=60000, help="per task (default 60000)")
    m.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    m.add_argument("--out", default="loadgen-out", help="directory for the JSON/Markdown/HTML report and logs")
    add_harness_args(m)
    m.set_defaults(func=_cmd)

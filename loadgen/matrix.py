"""`inloop loadgen matrix`: the routing matrix — every profile × task, internal vs external.

For each profile (loadgen/profiles/*.toml), the same task cases run as interleaved pairs:
case i of repetition r runs on both routes back to back, internal first when i + r is even
and external first otherwise, so drift in the machine's speed hits both routes alike. A few
warm-up tasks per profile run first and are not recorded. The profile reaches the services
per request (route policy + fault spec in the TaskRequest); nothing restarts between them.

Reported per profile, per task family, for the model-only and the tool families, and overall
(loadgen/route_compare.py): the external/internal latency ratio of the means and of the p99s
over all pairs and like for like (pairs where both routes succeeded; where both finished),
each classified internal faster / external faster / parity within noise from its bootstrap
95% CI (shown from 10 pairs up; a p99 from 100 samples up, else the max); the success and
error-rate deltas; the cost per correct answer; latency, success, errors and retries per
route; and, from the traces, where the time went, per task and per completion token
(loadgen/hop_overhead.py). `--min-pairs`, `--ci-half-width` and `--budget-s` grow a run, one
repetition of every case at a time per profile, until its like-for-like CI is that tight or
the budget ends. Writes a JSON artifact, a Markdown summary and an HTML report.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from inloop.loadgen.route_compare import ci_half_width, compare, p99_or_max, pairs_of
from inloop.loadgen.task_runner import ROUTES, add_step_max_tokens


def pair_order(i: int, rep: int) -> tuple[str, str]:
    return ROUTES if (i + rep) % 2 == 0 else ROUTES[::-1]


def run_matrix(runner, profiles, cases, *, runs: int, warmups: int, run_id: str, progress=None,
               grow=None) -> list[dict]:
    """Every profile's warm-ups, then `runs` repetitions of every case pair; then, while
    `grow(profile, its records)` says so, one repetition more."""
    records = []
    for profile in profiles:
        for w in range(warmups):
            case = cases[w % len(cases)]
            for route in ROUTES:
                runner.run(case, route, run_id=f"{run_id}w", profile=profile, rep=w)
                if progress:
                    progress.update(1)
        mine: list[dict] = []
        rep = 0
        while rep < runs or (grow is not None and grow(profile, mine)):
            if rep >= runs and progress is not None:
                progress.total += 2 * len(cases)
            for i, case in enumerate(cases):
                order = pair_order(i, rep)
                for route in order:
                    rec = runner.run(case, route, run_id=run_id, profile=profile, rep=rep, first=route == order[0])
                    mine.append(rec)
                    if progress:
                        progress.update(1)
                        progress.set_postfix_str(f"{profile.name} {case.family} {route} "
                                                 f"{'ok' if rec['ok'] else rec['error_type']}", refresh=False)
            rep += 1
        records += mine
    return records


class Growth:
    """When a profile gets another repetition: until its like-for-like (both succeeded) pairs
    reach `min_pairs` and the CI half-width of their mean ratio is at most `half_width`, within
    `budget_s` shared out evenly over the profiles still to come."""

    def __init__(self, n_profiles: int, min_pairs: int, half_width: float, budget_s: float, seed: int):
        self.left, self.min_pairs, self.half_width, self.seed = n_profiles, min_pairs, half_width, seed
        self.deadline = time.monotonic() + budget_s
        self.current = None
        self.until = 0.0

    def __call__(self, profile, recs: list[dict]) -> bool:
        if profile is not self.current:  # a new profile: its share of the budget left
            self.current = profile
            self.until = time.monotonic() + max(0.0, self.deadline - time.monotonic()) / max(self.left, 1)
            self.left -= 1
        if time.monotonic() >= self.until:
            return False
        like = compare(recs, self.seed)["like_for_like"]["both_succeeded"]
        if like["pairs"] < self.min_pairs:
            return True
        return self.half_width > 0 and ci_half_width(like["ratio_mean"]) > self.half_width


def route_summary(recs: list[dict]) -> dict:
    lat = [r["latency_ms"] for r in recs]
    n = len(recs)
    if n == 0:
        return {"n": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "p99_label": "p99", "success_rate": 0.0,
                "error_rate": 0.0, "retries_per_task": 0.0, "errors": {}}
    p99, label = p99_or_max(lat)
    return {"n": n, "mean_ms": float(np.mean(lat)), "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": p99, "p99_label": label,
            "success_rate": sum(r["passed"] for r in recs) / n,
            "error_rate": sum(not r["ok"] for r in recs) / n,
            "retries_per_task": sum(r["retries"] for r in recs) / n,
            "errors": dict(Counter(r["error_type"] for r in recs if r["error_type"]))}


def cell(recs: list[dict], seed: int) -> dict:
    """One table cell: both routes' summaries and the paired comparisons (route_compare)."""
    out = {"pairs": len(pairs_of(recs)), **compare(recs, seed)}
    everything = out["like_for_like"]["all"]
    out["ratio_mean"], out["ratio_p99"] = everything["ratio_mean"], everything["ratio_p99"]
    for route in ROUTES:
        out[route] = route_summary([r for r in recs if r["route"] == route])
    return out


def summarize(records: list[dict], profiles, seed: int) -> dict:
    rows = []
    for profile in profiles:
        recs = [r for r in records if r["profile"] == profile.name]
        families = sorted({r["family"] for r in recs})
        # the results page's task-family parity split: no tool offered vs tool calls
        split = {"model_only": [r for r in recs if not r.get("uses_tools")],
                 "tools": [r for r in recs if r.get("uses_tools")]}
        rows.append({"name": profile.name, "description": profile.description, "overall": cell(recs, seed),
                     "families": {f: cell([r for r in recs if r["family"] == f], seed) for f in families},
                     "split": {k: cell(v, seed) for k, v in split.items() if v}})
    return {"profiles": rows}


def _print_table(summary: dict) -> None:
    from inloop.loadgen.report.fmt import ci_or_n, ratio_verdict

    print(f"{'profile':8} {'pairs':>5} {'ext/int mean, all pairs':>30} {'both ok':>7} "
          f"{'ext/int mean, both succeeded':>38} {'success Δ':>9} {'error Δ':>8} {'cost/correct':>12}")
    for p in summary["profiles"]:
        c = p["overall"]
        like = c["like_for_like"]["both_succeeded"]
        cost = c["cost_per_correct"]["ratio"]
        print(f"{p['name']:8} {c['pairs']:5d} {ci_or_n(c['ratio_mean']):>30} {like['pairs']:7d} "
              f"{ratio_verdict(like['ratio_mean']):>38} {c['success_delta']['value'] * 100:+8.1f}p "
              f"{c['error_delta']['value'] * 100:+7.1f}p {cost if cost else float('nan'):12.2f}")


def _cmd(args: argparse.Namespace) -> int:
    from inloop.loadgen.harness import check_counts
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
    if args.arm and args.runtime:
        print("error: --arm restarts the runtime with other settings, so it needs the local stack "
              "(no --runtime/--controller)", file=sys.stderr)
        return 2
    started = time.monotonic()
    done = _run(args, profiles, cases, out_dir, total, run_id)
    records = done.records
    section = summarize(records, profiles, args.seed)
    section["settings"] = done.settings or {}
    section["breakdown_check"] = breakdown_check(records)
    section["wall_s"] = round(time.monotonic() - started, 1)
    _print_table(section)
    section["arms"] = []
    for arm in args.arm or ():
        arm_started = time.monotonic()
        arm_args = argparse.Namespace(**{**vars(args), **ARMS[arm]})
        print(f"matrix: arm {arm}: the same run with the runtime restarted ({ARMS[arm]})", file=sys.stderr)
        arm_done = _run(arm_args, profiles, cases, out_dir / arm, total, f"{run_id}{arm}", traced=False)
        arm_section = summarize(arm_done.records, profiles, args.seed)
        section["arms"].append({"name": arm, "settings": arm_done.settings or {}, "profiles": arm_section["profiles"],
                                "wall_s": round(time.monotonic() - arm_started, 1)})
        print(f"arm {arm}:")
        _print_table(arm_section)
    check = section["breakdown_check"]
    print(f"hop overhead: {check['within_tolerance']}/{check['traced']} traced tasks add up within "
          f"{check['tolerance_pct']:.0f}% ({check['incomplete']} incomplete traces)")
    finish_report(args, "matrix", section, done.report_extra(), out_dir, model=done.model,
                  seeds=[args.seed], profiles={p.name: p.source for p in profiles})
    return 0


# --arm NAME: the same run once more with the local runtime started with other settings
ARMS = {"prefix-cache-off": {"prefix_cache": False}, "prefix-cache-on": {"prefix_cache": True}}


def _run(args, profiles, cases, out_dir: Path, total: int, run_id: str, traced: bool = True):
    from inloop.loadgen.harness import run_traced

    grow = None
    if args.min_pairs or args.ci_half_width:
        grow = Growth(len(profiles), args.min_pairs, args.ci_half_width, args.budget_s, args.seed)
    return run_traced(args, out_dir, total, "matrix", lambda runner, bar: run_matrix(
        runner, profiles, cases, runs=args.runs, warmups=args.warmups, run_id=run_id, progress=bar, grow=grow),
        traced=traced)


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
    m.add_argument("--min-pairs", type=int, default=0,
                   help="grow each profile, a repetition at a time, until this many pairs succeeded on "
                        "both routes (default 0: run --runs repetitions only)")
    m.add_argument("--ci-half-width", type=float, default=0.0,
                   help="... and until the 95%% CI of its like-for-like mean ratio is at most this wide "
                        "on each side, e.g. 0.05 (default 0: not asked)")
    m.add_argument("--budget-s", type=float, default=600.0,
                   help="seconds the growing may take in all, shared evenly over the profiles (default 600)")
    m.add_argument("--arm", action="append", choices=sorted(ARMS),
                   help="also run the whole matrix with the local runtime restarted so (repeatable); "
                        "prefix-cache-off beside a default with it on")
    m.add_argument("--out", default="loadgen-out", help="directory for the JSON/Markdown/HTML report and logs")
    add_harness_args(m)
    m.set_defaults(func=_cmd)

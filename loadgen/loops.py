"""`inloop loadgen loops`: the agentic scenarios, with the uncertainty gate on and off, on both routes.

The scenario families (retrieval_correction, tool_state_adaptation,
confidence_gated_branching; eval split) run as two scenario sets: "baseline" under one
profile (default p00, no faults) and "stress" under another (default p04, aggressive
faults on the tool hops). Each set runs four arms — internal/external × gate off/on — with
the four arms of a case back to back in a rotating order. The gate, when on, uses the
calibrated default threshold (services/common/gate_calibration.json) unless
`--gate-threshold` says otherwise.

Reported per set and arm: success rate (answered and the checker passed), mean latency,
steps to converge (model + tool + gate steps of the task), the external/internal latency
ratio per gate setting, and per route the gate's effect: success(on) - success(off) over
the same cases, with a paired bootstrap 95% CI.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from inloop.loadgen.stats import bootstrap_ci
from inloop.loadgen.task_runner import ROUTES, add_step_max_tokens

ARMS = tuple((route, gate) for route in ROUTES for gate in (False, True))


def run_loops(runner, sets, cases, *, runs: int, gate_msg, run_id: str, progress=None) -> list[dict]:
    records = []
    for set_name, profile in sets:
        for rep in range(runs):
            for i, case in enumerate(cases):
                k = (i + rep) % len(ARMS)
                for route, gate in ARMS[k:] + ARMS[:k]:  # rotate which arm goes first
                    rec = runner.run(case, route, run_id=run_id, profile=profile, rep=rep,
                                     gate=gate_msg if gate else None, label=f"{set_name}-gate{'on' if gate else 'off'}")
                    rec.update(scenario_set=set_name, gate=gate, profile_name=profile.name)
                    records.append(rec)
                    if progress:
                        progress.update(1)
    return records


def _diff_of_means(pairs: np.ndarray) -> float:
    return float(pairs[:, 1].mean() - pairs[:, 0].mean())


def summarize(records: list[dict], seed: int) -> dict:
    arms, ratios, deltas = [], [], []
    for set_name in dict.fromkeys(r["scenario_set"] for r in records):
        recs = [r for r in records if r["scenario_set"] == set_name]
        for route, gate in ARMS:
            arm = [r for r in recs if r["route"] == route and r["gate"] == gate]
            if arm:
                arms.append({"scenario_set": set_name, "route": route, "gate": gate, "n": len(arm),
                             "success_rate": sum(r["passed"] for r in arm) / len(arm),
                             "mean_latency_ms": float(np.mean([r["latency_ms"] for r in arm])),
                             "mean_steps": float(np.mean([r["steps"] for r in arm])),
                             "gate_fired_rate": sum(r["gate_fired"] for r in arm) / len(arm)})
        for gate in (False, True):
            lat = {route: np.mean([r["latency_ms"] for r in recs if r["route"] == route and r["gate"] == gate] or [np.nan])
                   for route in ROUTES}
            ratios.append({"scenario_set": set_name, "gate": gate,
                           "ext_int_latency_ratio": float(lat["external"] / lat["internal"])})
        for route in ROUTES:
            by_case: dict[tuple, dict] = {}
            for r in recs:
                if r["route"] == route:
                    by_case.setdefault((r["case"], r["rep"]), {})[r["gate"]] = float(r["passed"])
            pairs = np.array([(v[False], v[True]) for v in by_case.values() if len(v) == 2])
            if len(pairs):
                ci = bootstrap_ci(pairs, _diff_of_means, seed=seed)
                deltas.append({"scenario_set": set_name, "route": route, "success_delta": ci.estimate,
                               "ci95": [ci.low, ci.high], "pairs": len(pairs)})
    return {"arms": arms, "ratios": ratios, "deltas": deltas}


def _print(section: dict) -> None:
    print(f"{'set':9} {'route':9} {'gate':5} {'n':>3} {'success':>8} {'mean ms':>9} {'steps':>6} {'gated':>6}")
    for a in section["arms"]:
        print(f"{a['scenario_set']:9} {a['route']:9} {'on' if a['gate'] else 'off':5} {a['n']:3d} "
              f"{a['success_rate']:8.0%} {a['mean_latency_ms']:9.0f} {a['mean_steps']:6.2f} {a['gate_fired_rate']:6.0%}")
    for d in section["deltas"]:
        print(f"gate on - off, {d['scenario_set']}/{d['route']}: success {d['success_delta']:+.2f} "
              f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] over {d['pairs']} pairs")


def _cmd(args: argparse.Namespace) -> int:
    from inloop.loadgen.harness import check_counts, run_traced
    from inloop.loadgen.profiles import ProfileError, load_profile
    from inloop.loadgen.reporting import finish_report
    from inloop.loadgen.tasks import SCENARIOS, load_cases
    from inloop.services.common.gate_defaults import default_gate
    from inloop.v1 import runtime_pb2 as pb

    problem = check_counts(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        sets = [("baseline", load_profile(args.baseline_profile)), ("stress", load_profile(args.stress_profile))]
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cases = load_cases(list(args.family or SCENARIOS), split="eval", limit_per_family=args.per_family)
    if args.gate_threshold is None:
        statistic, threshold, source = default_gate(args.gate_statistic or "")
    else:
        statistic, threshold, source = args.gate_statistic or "mean_logprob", args.gate_threshold, "--gate-threshold"
    gate_msg = pb.GateConfig(enabled=True, statistic=statistic, threshold=threshold, tool="search")
    total = len(sets) * len(ARMS) * len(cases) * args.runs
    print(f"loops: {len(cases)} scenario cases x 2 sets x 4 arms x {args.runs} runs = {total} tasks; "
          f"gate {statistic} < {threshold:g} ({source})", file=sys.stderr)
    out_dir = Path(args.out)
    started = time.monotonic()
    done = run_traced(args, out_dir, total, "loops", lambda runner, bar: run_loops(
        runner, sets, cases, runs=args.runs, gate_msg=gate_msg, run_id=f"l{int(time.time())}", progress=bar))
    records = done.records
    section = summarize(records, args.seed)
    section["gate"] = {"statistic": statistic, "threshold": threshold, "source": source}
    section["wall_s"] = round(time.monotonic() - started, 1)
    _print(section)
    finish_report(args, "loops", section, done.report_extra(), out_dir, model=done.model, seeds=[args.seed],
                  profiles={p.name: p.source for _, p in sets})
    return 0


def register(lsub) -> None:
    from inloop.loadgen.harness import add_harness_args
    from inloop.loadgen.tasks import SCENARIOS

    p = lsub.add_parser("loops", help="agentic scenarios: gate on/off x internal/external, baseline and stress",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", action="append", choices=SCENARIOS, help="a scenario family (default all three)")
    p.add_argument("--per-family", type=int, default=2, help="eval cases per scenario family (default 2)")
    p.add_argument("--runs", type=int, default=1, help="repetitions (default 1)")
    p.add_argument("--baseline-profile", default="p00", help="profile of the baseline set (default p00)")
    p.add_argument("--stress-profile", default="p04", help="profile of the stress set (default p04)")
    p.add_argument("--gate-statistic", choices=("mean_logprob", "min_margin"), default=None,
                   help="default: the calibrated statistic")
    p.add_argument("--gate-threshold", type=float, default=None, help="default: the calibrated threshold")
    add_step_max_tokens(p)
    p.add_argument("--deadline-ms", type=float, default=60000)
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", default="loadgen-out", help="directory for the reports and logs")
    add_harness_args(p)
    p.set_defaults(func=_cmd)

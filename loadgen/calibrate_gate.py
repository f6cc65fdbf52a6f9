"""`inloop loadgen calibrate-gate`: fit the uncertainty gate's default threshold.

The gate (services/common/agent_loop.py) branches an answer step to a retrieval tool when
its confidence statistic is under a threshold. Its default is fitted here, on the
calibration split of the task cases (never the eval split the reports use):

1. every calibration case (all families: how confidence tracks correctness is a property of
   the model's answers, and a 135M model passes few enough cases that the families offering
   the gate's tool alone would leave a handful of passed answers; `--offering-tool-only`
   narrows it) runs on the internal route with the gate off, greedy, and its answer step's
   statistics are recorded with whether the checker passed;
2. for each statistic (mean token logprob, minimum top-2 margin), the threshold that best
   separates failed answers from passed ones — the maximum of Youden's J = TPR - FPR, where
   a "positive" is a failed answer and the gate predicts it when the statistic is below the
   threshold — is chosen, halfway between two observed values;
3. the statistic with the larger J wins, and the result is written to
   services/common/gate_calibration.json (with the model, its hash, the cases and the J), which
   the runtime and controller read whenever a task enables the gate without a threshold.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from inloop.services.common.gate_defaults import CALIBRATION_FILE, STATISTICS


def youden_threshold(values: list[float], failed: list[bool]) -> tuple[float, float]:
    """(threshold, J) maximizing TPR - FPR for "value < threshold predicts failure"."""
    pos, neg = sum(failed), len(failed) - sum(failed)
    if not pos or not neg:
        raise ValueError(f"need both passed and failed answers to fit a threshold ({neg} passed, {pos} failed)")
    xs = sorted(set(values))
    candidates = [(a + b) / 2 for a, b in zip(xs, xs[1:])] or xs
    best = (candidates[0], -2.0)
    for t in candidates:
        tpr = sum(1 for v, f in zip(values, failed) if f and v < t) / pos
        fpr = sum(1 for v, f in zip(values, failed) if not f and v < t) / neg
        if tpr - fpr > best[1] + 1e-9:  # on a tie keep the lower threshold: the gate fires less often
            best = (t, tpr - fpr)
    return best


def fit(records: list[dict]) -> dict:
    rows = [r for r in records if r.get("answer_stats")]
    failed = [not r["passed"] for r in rows]
    fits = {}
    for stat in STATISTICS:
        try:
            threshold, j = youden_threshold([r["answer_stats"][stat] for r in rows], failed)
        except ValueError as exc:
            fits[stat] = {"error": str(exc)}
            continue
        fits[stat] = {"threshold": round(threshold, 4), "youden_j": round(j, 4)}
    usable = {k: v for k, v in fits.items() if "threshold" in v}
    if not usable:
        raise ValueError(f"no statistic could be fitted: {fits}")
    statistic = max(usable, key=lambda k: usable[k]["youden_j"])
    return {"statistic": statistic, "threshold": usable[statistic]["threshold"],
            "youden_j": usable[statistic]["youden_j"], "fits": fits, "answers": len(rows),
            "failed": sum(failed), "tasks": len(records)}


def _cmd(args: argparse.Namespace) -> int:
    from inloop.loadgen.harness import check_counts, run_traced
    from inloop.loadgen.run_meta import model_sha256, resolve_model_dir
    from inloop.loadgen.tasks import load_cases

    problem = check_counts(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    cases = [c for c in load_cases(None, split="calibration") if args.tool in c.tools or not args.offering_tool_only]
    if args.limit:
        cases = cases[:args.limit]
    print(f"calibrate-gate: {len(cases)} calibration cases", file=sys.stderr)
    run_id = f"cal{int(time.time())}"

    def run(runner, bar) -> list[dict]:
        records = []
        for case in cases:
            records.append(runner.run(case, "internal", run_id=run_id, label="calibration"))
            bar.update(1)
        return records

    try:
        result = fit(run_traced(args, Path(args.out), len(cases), "calibrate", run, traced=False).records)
    except ValueError as exc:  # e.g. every answer failed: no threshold separates anything
        print(f"error: {exc}", file=sys.stderr)
        return 1
    model_dir = resolve_model_dir(args.model)
    result.update(split="calibration", tool=args.tool, offering_tool_only=args.offering_tool_only,
                  max_tokens=args.max_tokens,
                  model={"name": model_dir.name if model_dir else args.model, "sha256": model_sha256(model_dir)},
                  created=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
                  cases=[c.id for c in cases])
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=1))
    if args.write:
        Path(args.write).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


def register(lsub) -> None:
    from inloop.loadgen.harness import add_harness_args

    p = lsub.add_parser("calibrate-gate", help="fit the uncertainty gate's default threshold on the calibration split",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tool", default="search", help="the gate's tool (default search)")
    p.add_argument("--offering-tool-only", action="store_true", help="fit only on cases that offer --tool")
    from inloop.loadgen.task_runner import add_step_max_tokens
    add_step_max_tokens(p)
    p.add_argument("--deadline-ms", type=float, default=120000)
    p.add_argument("--limit", type=int, default=0, help="use only the first N cases (0 = all)")
    p.add_argument("--write", nargs="?", const=str(CALIBRATION_FILE), default=None,
                   help=f"write the result (default path: the file the services read, {CALIBRATION_FILE.name})")
    p.add_argument("--out", default="loadgen-out", help="directory for the services' logs")
    add_harness_args(p)
    p.set_defaults(func=_cmd)

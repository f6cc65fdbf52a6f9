"""`inloop loadgen compare`: the same cases through both routes, side by side (no faults).

The quick check that the routes agree: for each case, the internal and external results
should have the same answer and the same steps; it prints both routes' checker verdicts and
latencies. (The full routing matrix with fault profiles is `inloop loadgen matrix`.)
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def compare(runtime: str, controller: str, families: list[str] | None, per_family: int,
            max_tokens: int) -> list[dict]:
    from inloop.loadgen.requests import case_to_request, result_steps
    from inloop.loadgen.tasks import check, load_cases
    from inloop.services.common.grpc_client import insecure_channel
    from inloop.v1 import controller_pb2_grpc, runtime_pb2_grpc

    rows = []
    run_id = f"cmp{int(time.time())}"
    with insecure_channel(runtime) as rc, insecure_channel(controller) as cc:
        internal, external = runtime_pb2_grpc.RuntimeStub(rc), controller_pb2_grpc.ControllerStub(cc)
        cases = load_cases(families, split="eval", limit_per_family=per_family)
        for i, case in enumerate(cases):
            row = {"case": case.id, "family": case.family}
            for route, stub in (("internal", internal), ("external", external)):
                req = case_to_request(case, run_id=f"{run_id}-{route}", max_tokens=max_tokens)
                t0 = time.perf_counter()
                res = stub.RunTask(req, timeout=req.deadline_ms / 1e3 + 5)
                verdict = check(case, res.answer if res.ok else None, result_steps(res))
                row[route] = {"ok": res.ok, "error_type": res.error_type, "answer": res.answer,
                              "steps": [(s.kind, s.name, s.arguments_json) for s in res.steps],
                              "passed": verdict.passed, "latency_ms": (time.perf_counter() - t0) * 1e3}
            row["same_answer"] = row["internal"]["answer"] == row["external"]["answer"]
            row["same_steps"] = row["internal"]["steps"] == row["external"]["steps"]
            rows.append(row)
            print(f"[{i + 1}/{len(cases)}] {case.id:32} same answer: {row['same_answer']!s:5} "
                  f"same steps: {row['same_steps']!s:5} checker int/ext: {row['internal']['passed']}/"
                  f"{row['external']['passed']}  ms int/ext: {row['internal']['latency_ms']:.0f}/"
                  f"{row['external']['latency_ms']:.0f}", file=sys.stderr)
    return rows


def _cmd(args: argparse.Namespace) -> int:
    rows = compare(args.runtime, args.controller, args.family, args.per_family, args.max_tokens)
    same = sum(r["same_answer"] and r["same_steps"] for r in rows)
    print(f"{same}/{len(rows)} cases gave the same answer and steps on both routes")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if same == len(rows) else 1


def register_compare(lsub) -> None:
    c = lsub.add_parser("compare", help="run task cases through both routes (no faults) and compare",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--runtime", default="127.0.0.1:50051", help="the runtime (internal route)")
    c.add_argument("--controller", default="127.0.0.1:50071", help="the controller (external route)")
    c.add_argument("--family", action="append", help="a task family (repeatable; default all)")
    c.add_argument("--per-family", type=int, default=2, help="eval cases per family")
    from inloop.loadgen.task_runner import add_step_max_tokens
    add_step_max_tokens(c)
    c.add_argument("--json", help="write every row here")
    c.set_defaults(func=_cmd)

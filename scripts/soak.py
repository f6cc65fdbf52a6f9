"""A bounded soak run with faults on (not in CI): the three services on loopback, tasks on both
routes without pause for --minutes, and two verdicts.

    python scripts/soak.py                        # 10 minutes, the tiny model, profile p04, 4 clients
    python scripts/soak.py --minutes 10 --model default --concurrency 8 --out soak.json

- memory: each service's RSS (from /proc) at the start (after --warmup-s), the middle and the
  end; the middle and the end must be within --rss-tolerance (10%) of the start;
- errors: every failed task's error_type is one of the documented ones (TaskError in
  services/contract/errors.py, plus RESOURCE_EXHAUSTED: documented overload); anything else
  (an rpc_UNKNOWN, a hang past the deadline) fails the run;
- faults: the external route retried some tool hops (the faults fired; a run whose model
  never reaches a tool proves nothing about them).

The runtime's KV block pool is mapped lazily and its blocks are taken least recently used
first (to keep prefix-cache hits), so over hours every block gets touched and the runtime's
RSS climbs to the pool's size (--kv-cache-memory), then stays: a bound, not a leak. The soak
gives the runtime a small pool (--kv-cache-memory, default 64MiB) that warm-up fills, so
that what it measures after warm-up is everything else.

Prints a JSON summary (also written to --out) and exits 0 when both hold, 1 otherwise.
Faults come from a loadgen profile (default p04: every 2nd tool call aborted, every 3rd
delayed 900 ms, one retry), sent per request, so the soak needs no special service flags.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OVERLOAD = "rpc_RESOURCE_EXHAUSTED"  # documented: a full queue answers RESOURCE_EXHAUSTED
SLACK_S = 2.0  # a task may end this long after its deadline (loopback, a busy machine)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def documented_errors() -> set[str]:
    from inloop.services.contract.errors import TaskError

    return {e.value for e in TaskError} | {OVERLOAD}


def resolve_model(name: str, workdir: Path) -> str:
    if name != "tiny":
        return name
    from inloop.services.runtime.model.tiny import make_tiny

    return str(make_tiny("llama", workdir / "tiny-llama"))


class Soak:
    def __init__(self, args: argparse.Namespace, stack):
        from inloop.loadgen.profiles import load_profiles
        from inloop.loadgen.task_runner import TaskRunner
        from inloop.loadgen.tasks import load_cases

        self.args, self.stack = args, stack
        self.profile = load_profiles([args.profile])[0]
        self.cases = load_cases(None, split="eval", limit_per_family=2)
        self.runner = TaskRunner(stack.runtime, stack.controller, max_tokens=args.max_tokens,
                                 deadline_ms=args.deadline_ms)
        self.records: list[dict] = []
        self.lock = threading.Lock()
        self.counter = itertools.count()
        self.run_id = f"soak{int(time.time())}"

    def client(self, stop_at: float) -> None:
        routes = ("internal", "external")
        while time.monotonic() < stop_at:
            n = next(self.counter)
            case, route = self.cases[n % len(self.cases)], routes[n % 2]
            started = time.monotonic()
            record = self.runner.run(case, route, run_id=self.run_id, profile=self.profile, rep=n)
            record["ended_s"] = time.monotonic() - started
            with self.lock:
                self.records.append(record)

    def pids(self) -> dict[str, int]:
        return {name: proc.proc.pid for name, proc in self.stack.procs.items()}

    def sample(self) -> dict[str, float]:
        return {name: round(rss_mib(pid), 1) for name, pid in self.pids().items()}

    def run(self) -> dict:
        args = self.args
        began = time.monotonic()
        stop_at = began + args.minutes * 60
        threads = [threading.Thread(target=self.client, args=(stop_at,), daemon=True)
                   for _ in range(args.concurrency)]
        for t in threads:
            t.start()
        marks = {"start": began + args.warmup_s, "middle": began + args.warmup_s + (args.minutes * 60 - args.warmup_s) / 2,
                 "end": stop_at - 2}
        rss, series = {}, []
        for name, at in marks.items():
            while time.monotonic() < at:
                time.sleep(min(10.0, max(at - time.monotonic(), 0.0)))
                series.append({"t_s": round(time.monotonic() - began), **self.sample()})
            rss[name] = self.sample()
            print(f"soak: {name} rss {rss[name]} MiB, {len(self.records)} tasks so far", file=sys.stderr, flush=True)
        for t in threads:
            t.join(timeout=args.deadline_ms / 1e3 + 30)
        return self.verdict(rss, series, time.monotonic() - began)

    def verdict(self, rss: dict, series: list, wall_s: float) -> dict:
        args, allowed = self.args, documented_errors()
        errors = Counter(r["error_type"] for r in self.records if r["error_type"])
        undocumented = {e: n for e, n in errors.items() if e not in allowed}
        late = [r for r in self.records if r["ended_s"] > args.deadline_ms / 1e3 + SLACK_S]
        growth = {name: round(max(rss["middle"][name], rss["end"][name]) / rss["start"][name] - 1, 4)
                  for name in rss["start"]}
        rss_ok = all(abs(rss[m][n] / rss["start"][n] - 1) <= args.rss_tolerance for n in rss["start"]
                     for m in ("middle", "end"))
        retries = sum(r.get("retries", 0) for r in self.records)
        ok = rss_ok and not undocumented and not late and len(self.records) > 0 and retries > 0
        by_route = Counter((r["route"], "ok" if r["ok"] else r["error_type"]) for r in self.records)
        return {"ok": ok, "wall_s": round(wall_s, 1), "minutes": args.minutes, "profile": self.profile.name,
                "model": args.model, "concurrency": args.concurrency, "tasks": len(self.records),
                "tasks_ok": sum(r["ok"] for r in self.records), "errors": dict(errors),
                "hop_retries": retries, "faults_fired": retries > 0,
                "undocumented_errors": undocumented, "late_tasks": len(late),
                "rss_mib": rss, "rss_growth_vs_start": growth, "rss_within_tolerance": rss_ok,
                "rss_tolerance": args.rss_tolerance, "by_route": {f"{k[0]}:{k[1]}": v for k, v in by_route.items()},
                "rss_series": series}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="how long tasks run (default 10)")
    p.add_argument("--warmup-s", type=float, default=60.0, help="the RSS baseline is taken after this (default 60)")
    p.add_argument("--model", default="tiny", help="'tiny' (a random tiny llama, default), 'default' (SmolLM2) "
                                                    "or an HF-layout directory")
    p.add_argument("--backend", default="cpu", choices=("cpu", "cuda", "auto"), help="runtime backend (default cpu)")
    p.add_argument("--profile", default="p04", help="the fault profile (default p04: mixed aggressive)")
    p.add_argument("--concurrency", type=int, default=4, help="clients sending tasks at once (default 4)")
    p.add_argument("--max-tokens", type=int, default=96,
                   help="per model step (default 96: room for a forced call's JSON from the tiny model)")
    p.add_argument("--kv-cache-memory", default="64MiB",
                   help="the runtime's KV pool, touched whole during warm-up (default 64MiB; see above)")
    p.add_argument("--deadline-ms", type=float, default=20000, help="each task's deadline (default 20000)")
    p.add_argument("--rss-tolerance", type=float, default=0.10, help="allowed RSS change vs the start (default 0.10)")
    p.add_argument("--out", default="", help="also write the JSON summary here")
    args = p.parse_args(argv)
    if args.warmup_s >= args.minutes * 60:
        p.error("--warmup-s must be shorter than the run")
    from inloop.loadgen.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="inloop-soak-") as tmp:
        work = Path(tmp)
        model = resolve_model(args.model, work)
        print(f"soak: starting the services (logs in {work})", file=sys.stderr, flush=True)
        with LocalStack(model, args.backend, work / "logs",
                        runtime_args=("--kv-cache-memory", args.kv_cache_memory)) as stack:
            summary = Soak(args, stack).run()
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

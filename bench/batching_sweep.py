"""Continuous batching against the engine before it, in one run on one machine.

    python bench/batching_sweep.py --baseline-rev <commit before batching> [--rounds 2]

1. Builds the baseline tree from git (`git archive REV`) into a temporary import farm.
2. Interleaves `inloop loadgen load --concurrency 1` against a runtime of the baseline and one
   of this checkout, `--rounds` times each, so that machine noise hits both alike: a lone
   request's decode tokens/s (1000 / median TPOT) and output tokens/s, before and after.
3. Runs this checkout's sweep, `--concurrency 1,2,4,8,16,32`, against one runtime, and prints
   the ratio of each level's output tokens/s to concurrency 1's and to the baseline's.

Each load is its own process (runtime started and stopped by the loadgen, --backend cpu).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def baseline_farm(rev: str, root: Path) -> Path:
    """An import root whose `inloop` package is the tree at `rev` (as this checkout lays it out)."""
    tree, farm = root / "tree", root / "farm" / "inloop"
    tree.mkdir(parents=True)
    archive = root / "tree.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev, "services", "loadgen", "proto"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    farm.mkdir(parents=True)
    (farm / "__init__.py").symlink_to(tree / "proto/inloop/__init__.py")
    (farm / "v1").symlink_to(tree / "proto/inloop/v1")
    (farm / "services").symlink_to(tree / "services")
    (farm / "loadgen").symlink_to(tree / "loadgen")
    return farm.parent


def load(pythonpath: str, concurrency: str, args, out: Path, prompts: int) -> dict:
    """One `inloop loadgen load` run; its artifact's load section."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "inloop.services.cli", "loadgen", "load", "--model", args.model,
           "--backend", "cpu", "--concurrency", concurrency, "--num-prompts", str(prompts),
           "--max-tokens", str(args.max_tokens), "--disable-tqdm", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=pythonpath)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    print(done.stdout, flush=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(next(out.glob("load-*.json")).read_text())["load"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline-rev", required=True, help="the commit whose engine serves one request at a time")
    p.add_argument("--model", default="default")
    p.add_argument("--rounds", type=int, default=2, help="interleaved concurrency-1 runs of each side")
    p.add_argument("--num-prompts", type=int, default=16, help="per interleaved concurrency-1 run")
    p.add_argument("--sweep-prompts", type=int, default=32, help="per sweep level (>= the top level)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--levels", default="1,2,4,8,16,32")
    args = p.parse_args()
    ours = os.environ.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory(prefix="batching-bench-") as tmp:
        root = Path(tmp)
        base = str(baseline_farm(args.baseline_rev, root / "baseline"))
        single = {"baseline": [], "batching": []}
        for r in range(args.rounds):
            for side, path in (("baseline", base), ("batching", ours)):
                sec = load(path, "1", args, root / f"{side}-{r}", args.num_prompts)
                single[side].append(sec)
        sweep_sec = load(ours, args.levels, args, root / "sweep", args.sweep_prompts)
    print("\n== concurrency 1, interleaved (median over rounds) ==")
    summary = {}
    for side, secs in single.items():
        decode = statistics.median(1000.0 / s["tpot_ms"]["median"] for s in secs)
        out = statistics.median(s["output_throughput"] for s in secs)
        summary[side] = {"decode_tok_s": decode, "output_tok_s": out}
        each = ", ".join(f"{1000.0 / s['tpot_ms']['median']:.2f}" for s in secs)
        print(f"{side:>9}: decode {decode:.2f} tok/s (1000 / median TPOT), output {out:.2f} tok/s [{each}]")
    print(f"batching / baseline decode tok/s at concurrency 1: "
          f"{summary['batching']['decode_tok_s'] / summary['baseline']['decode_tok_s']:.3f}")
    print("\n== sweep (this checkout) ==")
    levels = sweep_sec["sweep"]
    c1 = levels[0]["output_throughput"]
    for lv in levels:
        print(f"concurrency {lv['concurrency']:>3}: {lv['output_throughput']:8.2f} out tok/s  "
              f"x{lv['output_throughput'] / c1:5.2f} of c=1  "
              f"x{lv['output_throughput'] / summary['baseline']['output_tok_s']:5.2f} of baseline c=1  "
              f"TTFT p50/p99 {lv['ttft_ms']['median']:.0f}/{lv['ttft_ms']['p99']:.0f} ms  "
              f"TPOT p50/p99 {lv['tpot_ms']['median']:.1f}/{lv['tpot_ms']['p99']:.1f} ms")
    print(json.dumps({"single": summary, "sweep": [
        {k: lv[k] for k in ("concurrency", "output_throughput", "ttft_ms", "tpot_ms", "completed", "failed")}
        for lv in levels]}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Per-kernel GPU time of one prefill (32 tokens) and one decode step, each kernel timed alone
by Nsight Compute, for random models shaped like SmolLM2-135M and Qwen2.5-0.5B. Where the
probes (gpu_check) say how long a step takes, this says which kernels it is spent in.

  scripts/gpu_profile.py [--out DIR] [--ncu PATH]       runs ncu on itself, once per shape
                                                        and part; writes profile.txt under --out
                                                        and ncu_<shape>_<part>.csv under --csv-dir
  scripts/gpu_profile.py --child SHAPE PART WORK        the profiled process: builds the model,
                                                        captures the graphs, and replays one
                                                        between cuProfilerStart and Stop

ncu serializes the kernels, so the times are each kernel alone (no PDL overlap, no launch
gaps): their sum is below the step's time in a graph by the per-node cost.
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT_LEN = 32
METRICS = ("gpu__time_duration.sum", "dram__bytes_read.sum", "launch__registers_per_thread", "launch__grid_size",
           "launch__block_size")


def child(shape: str, part: str, work: Path) -> None:
    from cuda.bindings import driver as cu

    from bench.cuda.models import SHAPES, make_random_model, prompt_ids
    from inloop.services.runtime.backends.cuda.backend import CudaBackend
    from inloop.services.runtime.backends.cuda.loader import load_transformer
    from inloop.services.runtime.model.config import ModelConfig
    from inloop.services.runtime.model.weights import Weights

    be = CudaBackend()
    model_dir = work / shape
    if not (model_dir / "model.safetensors").exists():
        make_random_model(model_dir, shape, list(SHAPES).index(shape))
    cfg = ModelConfig.from_dir(model_dir)
    model = load_transformer(be, cfg, Weights(model_dir))
    ids = prompt_ids(cfg.vocab_size, PROMPT_LEN, seed=2)
    cache = model.new_cache(PROMPT_LEN + 64)
    runner = be.graph_runner(model, cache.capacity)
    first = runner.prefill_sample(ids, 0, cache)[0]  # captures the prefill graph
    dg = runner.decode
    dg.bind(cache)
    for _ in range(2):  # captures, then settles the position past the prompt
        dg.step(first, PROMPT_LEN)
    be.synchronize()
    cu.cuProfilerStart()
    if part == "prefill":
        runner.prefill_sample(ids, 0, cache)
    else:
        dg.step(first, PROMPT_LEN)
    be.synchronize()
    cu.cuProfilerStop()


def find_ncu(given: str | None) -> str:
    for cand in [given, shutil.which("ncu"), *sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu")),
                 "/usr/local/cuda/bin/ncu"]:
        if cand and Path(cand).exists():
            return cand
    raise SystemExit("gpu_profile: no ncu (Nsight Compute) found; pass --ncu PATH")


def parse(text: str) -> list[dict]:
    """ncu --csv --page raw: a header row, a units row, then one row per kernel."""
    lines = text[text.find('"ID"'):] if '"ID"' in text else text
    rows = list(csv.DictReader(io.StringIO(lines)))
    return [r for r in rows if r.get("Kernel Name") and (r.get("ID") or "").strip().isdigit()]


def _f(x) -> float:
    try:
        return float(str(x).replace(",", ""))
    except ValueError:
        return 0.0


def summarize(rows: list[dict]) -> tuple[float, list[str]]:
    by = defaultdict(lambda: [0, 0.0, 0.0, "", ""])
    for r in rows:
        name = r["Kernel Name"].split("(")[0]
        b = by[name]
        b[0] += 1
        b[1] += _f(r.get("gpu__time_duration.sum")) / 1e3  # ns -> us
        b[2] += _f(r.get("dram__bytes_read.sum")) / 1e6   # bytes -> MB
        b[3] = r.get("launch__registers_per_thread", "")
        b[4] = f"{r.get('launch__grid_size', '')}x{r.get('launch__block_size', '')}"
    total = sum(b[1] for b in by.values())
    out = []
    for name, (n, us, mb, regs, launch) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        bw = mb / us * 1e3 if us else 0.0  # MB/us -> GB/s
        out.append(f"    {name:34s} {n:4d}x {us:9.1f} us ({us / n:7.2f} each, {100 * us / total:5.1f}%) "
                   f"DRAM {mb:8.2f} MB {bw:7.1f} GB/s  regs {regs}  grid x block {launch}")
    return total, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_results")
    ap.add_argument("--work", default=os.environ.get("INLOOP_GPU_WORK", "/tmp/inloop-gpu-check"))
    ap.add_argument("--ncu", default=None)
    ap.add_argument("--csv-dir", default=None, help="where ncu's raw CSVs go (default: WORK/ncu)")
    ap.add_argument("--shapes", default="smollm2-135m,qwen2.5-0.5b")
    ap.add_argument("--parts", default="decode,prefill", help="which steps to profile (decode, prefill)")
    ap.add_argument("--child", nargs=3, metavar=("SHAPE", "PART", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], Path(args.child[2]))
        return 0
    ncu = find_ncu(args.ncu)
    out, work = Path(args.out), Path(args.work)
    csv_dir = Path(args.csv_dir) if args.csv_dir else work / "ncu"
    for d in (out, work, csv_dir):
        d.mkdir(parents=True, exist_ok=True)
    report = []
    for shape in args.shapes.split(","):
        for part in args.parts.split(","):
            cmd = [ncu, "--profile-from-start", "off", "--clock-control", "none", "--csv", "--page", "raw",
                   "--print-units", "base",
                   "--metrics", ",".join(METRICS), sys.executable, __file__, "--child", shape, part, str(work)]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
            (csv_dir / f"ncu_{shape}_{part}.csv").write_text(p.stdout + "\n# stderr\n" + p.stderr[-4000:])
            rows = parse(p.stdout)
            if p.returncode or not rows:
                report.append(f"{shape} {part}: ncu rc {p.returncode}, {len(rows)} kernels; "
                              f"stderr tail: {p.stderr[-800:]}")
                continue
            total, lines = summarize(rows)
            report.append(f"{shape} {part}: {len(rows)} kernels, {total:.1f} us summed (each alone)")
            report.extend(lines)
            print("\n".join(report[-len(lines) - 1:]), flush=True)
    (out / "profile.txt").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

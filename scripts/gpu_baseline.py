#!/usr/bin/env python3
"""Another commit's decode and prefill, side by side with this one's on the same card.

Timings from two lent machines do not compare (another card, another clock, another
neighbour), so a change is judged against a baseline benchmarked in the same gpu_check run:

  here:      python3 scripts/gpu_baseline.py prepare ae93aa1    (its services/ and proto/ into .baseline/)
  on the GPU: run(command="bash scripts/gpu_check.sh --baseline .baseline --skip-hf", carry=[".whl", ".baseline"])

gpu_check then runs the baseline tree's own `bench_cuda` in a child process (its own cubin
cache) on the same random models right after ours, and its summary gives both and the ratio.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))  # a sibling script, also where this file is loaded by path
import import_tree  # noqa: E402

KEEP = ("ttft_ms", "decode_ms_per_token", "decode_gpu_ms_per_step", "kernels_per_step", "pdl",
        "decode_kinds", "decode_at_lengths")  # what the summary compares
MARK = "BASELINE_JSON "


def prepare(rev: str, dest: Path) -> str:
    """Export `rev`'s services/, proto/ and bench/ (where it has one) to dest (replacing it);
    returns the short hash."""
    short = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True, capture_output=True,
                           text=True).stdout.strip()
    parts = ["services", "proto"]
    if subprocess.run(["git", "cat-file", "-e", f"{rev}:bench"], cwd=REPO, capture_output=True).returncode == 0:
        parts.append("bench")  # the benchmarks left the services for bench/ with the inloop namespace
    tar = subprocess.run(["git", "archive", "--format=tar", rev, *parts], cwd=REPO, check=True,
                         capture_output=True).stdout
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(dest, filter="data")
    (dest / "COMMIT").write_text(short + "\n")
    return short


def package_of(tree: Path) -> str:
    """How the tree imports its services: `inloop.services` since the installed namespace,
    plain `services` before it (ae93aa1). Read from its services/cli.py, which every tree has."""
    cli = tree / "services" / "cli.py"
    return "inloop.services" if cli.exists() and "from inloop.services" in cli.read_text() else "services"


def bench(tree: Path, model_dir: Path, work: Path, prompt_len: int, decode_tokens: int, timeout: int = 180) -> dict:
    """The baseline tree's bench_cuda on model_dir, in a child process whose imports resolve
    to the tree (not to this checkout), with a cubin cache of its own."""
    tree = tree.resolve()
    src = import_tree.link(tree, work / "baseline-src")
    # this checkout's import roots (as gpu_env.sh sets them: its inloop namespace, the repo) go
    ours = {str(REPO), str(REPO / "proto"), str(src)}
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
            and str(Path(p).resolve()) not in ours and not (Path(p) / "inloop" / "services").exists()]
    env = dict(os.environ, INLOOP_CACHE=str(work / "baseline-cache"),
               PYTHONPATH=os.pathsep.join([str(src), str(tree), str(tree / "proto"), *rest]))
    pkg = package_of(tree)
    benchmark = "bench.cuda.benchmark" if (tree / "bench/cuda/benchmark.py").exists() \
        else f"{pkg}.runtime.backends.cuda.benchmark"  # where it lived before bench/
    code = ("import json\nfrom pathlib import Path\n"
            f"from {pkg}.runtime.backends.cuda.backend import CudaBackend\n"
            f"from {benchmark} import bench_cuda\n"
            f"r = bench_cuda(Path({str(model_dir)!r}), CudaBackend(), {prompt_len}, {decode_tokens})\n"
            f"print({MARK!r} + json.dumps({{k: r.get(k) for k in {KEEP!r}}}, default=str), flush=True)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True,
                       timeout=timeout)
    commit = (tree / "COMMIT").read_text().strip() if (tree / "COMMIT").exists() else "?"
    for line in p.stdout.splitlines():
        if line.startswith(MARK):
            return {"commit": commit, **json.loads(line[len(MARK):])}
    return {"commit": commit, "error": f"exit {p.returncode}: {(p.stderr or p.stdout)[-3000:]}"}


def summary_lines(bench_results: dict) -> list[str]:
    """For each model with a baseline: both commits' numbers and ours / baseline."""
    lines = []
    for name, b in bench_results.items():
        base, ours = b.get("baseline"), b.get("ours") or {}
        if not base:
            continue
        if "error" in base:
            lines.append(f"{name:<14}baseline {base.get('commit')}: {base['error'][-300:]}")
            continue
        cells = []
        for key, label, fmt in (("decode_ms_per_token", "decode ms/tok", ".3f"),
                                ("decode_gpu_ms_per_step", "gpu/step ms", ".3f"), ("ttft_ms", "TTFT ms", ".2f")):
            a, o = base.get(key), ours.get(key)
            if isinstance(a, (int, float)) and isinstance(o, (int, float)) and a:
                cells.append(f"{label} {a:{fmt}} -> {o:{fmt}} ({o / a:.2f}x)")
        lines.append(f"{name:<14}baseline {base['commit']} -> this: " + ", ".join(cells))
        # decode_kinds (probes.py): each kind's launches alone in a graph, per launch
        ka = (base.get("decode_kinds") or {}).get("kinds") or {}
        ko = (ours.get("decode_kinds") or {}).get("kinds") or {}
        if ka and ko:
            lines.append(f"{'':<14}per launch alone (us): " + ", ".join(
                f"{k} {ka.get(k, {}).get('only_us_each', '-')} -> {ko.get(k, {}).get('only_us_each', '-')}"
                for k in sorted(set(ka) | set(ko))))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="export a commit's services/ and proto/ for gpu_check --baseline")
    p.add_argument("rev", help="the commit to compare against (a hash, tag or branch)")
    p.add_argument("--dest", type=Path, default=REPO / ".baseline", help="where (default: .baseline/)")
    args = ap.parse_args()
    short = prepare(args.rev, args.dest)
    print(f"{os.path.relpath(args.dest, REPO)}: {short}; carry it: run(command=\"bash scripts/gpu_check.sh --baseline "
          f"{os.path.relpath(args.dest, REPO)} --skip-hf\", carry=[\".whl\", \"{os.path.relpath(args.dest, REPO)}\"])")
    return 0


if __name__ == "__main__":
    sys.exit(main())

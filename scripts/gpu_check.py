#!/usr/bin/env python3
"""The CUDA backend's GPU check, in one call of a few minutes (optional stages stop starting at DEADLINE_S):

  1. compile every kernel for this GPU (cold, into a fresh cubin cache)
  2. the GPU tests (pytest tests/runtime/backends/cuda, where pytest is installed)
  3. greedy parity with the numpy backend: tiny llama/qwen2/qwen3, SmolLM2- and Qwen2.5-0.5B-shaped models
  4. ours vs HF transformers (bf16, same GPU, same random weights) for random models shaped
     like SmolLM2-135M and Qwen2.5-0.5B: TTFT (32-token prompt), decode ms/token over 128
     tokens, process start -> first token (cubin cache warm), and a per-kernel breakdown of
     one decode step
  5. probes for tuning (bench/cuda/probes.py): what a graph node costs with and without programmatic
     dependent launch, and every decode GEMV of both shapes under each (split-K, threads)
     config, checked for equal results (the step's own A/B comes with step 4)
  6. the engine's fast path (`inloop bench runtime --backend cuda`: Engine.load, Generation
     through the CUDA graphs with GPU sampling) side by side with HF, medians and ratios;
     the engine's GPU tests (test_engine_on_cuda.py) run with the others in step 2
  7. the batching core on the GPU (bench/cuda/batched.py), SmolLM2-shaped: each batch-size
     bucket's decode graph (replay and full step time, tokens/s, against the eager step),
     batch invariance across the buckets, and the engine with --batching on at 1-64
     concurrent requests
  8. a Qwen3.5-0.8B-shaped random model: greedy parity (the Gated DeltaNet kernels, op by op)
     with numpy, its decode through the batching core's bucket graphs (bucket 1: batch-1 decode),
     and HF bf16 on it (saying whether its linear layers had their optional kernels), with time
     to spare or with --qwen35

`main` runs STAGES, a table of one function per step above, in one loop; results.json is
written after each. Writes results.json and summary.txt (plus pytest.log / parity.jsonl) to --out. Needs only
numpy, cuda-bindings (+ NVRTC), tokenizers, and torch + transformers for the HF side; no
network. Also runs as a child of itself for the start-to-first-token measurements.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_baseline, also where this file is imported

import gpu_baseline  # noqa: E402  (beside this script)
import numpy as np  # noqa: E402

from bench.cuda.benchmark import (  # noqa: E402
    bench_cuda,
    bench_engine,
    engine_bench_lines,
    greedy_parity,
)
from bench.cuda.batched import engine_bench as batched_engine_bench  # noqa: E402
from bench.cuda.batched import graph_bench  # noqa: E402
from bench.cuda.batched import summary_lines as batched_lines  # noqa: E402
from bench.cuda.models import SHAPES, make_random_model, prompt_ids  # noqa: E402
from bench.cuda.probes import gemv_sweep, graph_node_cost, summary_lines  # noqa: E402
from bench.cuda.qwen35 import make_qwen35_model, qwen35_greedy_parity  # noqa: E402
from bench.runtime_vs_hf import hf_forward, load_hf  # noqa: E402

PROMPT_LEN, DECODE_TOKENS = 32, 128
DEADLINE_S = 225  # stop starting optional work after this


def log(msg: str) -> None:
    print(f"[gpu_check {time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


def step(results: dict, name: str, fn, *args):
    t = time.perf_counter()
    try:
        results[name] = fn(*args)
    except Exception as exc:  # record and carry on: one broken part must not hide the others
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
        log(f"{name} FAILED: {exc}")
    results.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 2)
    return results[name]


# ---- 1. environment and compile ---------------------------------------------------------
def environment() -> dict:
    from inloop.services.runtime.backends.cuda import compiler
    from inloop.services.runtime.backends.cuda.driver import Device, cuda_available

    ok, reason = cuda_available()
    env = {"python": platform.python_version(), "numpy": np.__version__, "nvrtc": compiler.nvrtc_version(),
           "cuda_available": ok, "reason": reason}
    try:
        import cuda.bindings
        env["cuda_bindings"] = cuda.bindings.__version__
    except Exception:
        pass
    for mod in ("torch", "transformers", "pytest"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:
            env[mod] = None
    try:
        env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                            "--format=csv,noheader"], capture_output=True, text=True,
                                           timeout=20).stdout.strip()
    except Exception:
        env["nvidia_smi"] = None
    if ok:
        info = Device(0).info
        env.update(device=info.name, capability=f"{info.capability[0]}.{info.capability[1]}", sm_count=info.sm_count,
                   driver_version=info.driver_version, arch=compiler.arch_for_capability(*info.capability))
    return env


def compile_kernels(arch: str) -> dict:
    from inloop.services.runtime.backends.cuda import compiler

    t = time.perf_counter()
    jobs = [(p, arch, w) for w in compiler.WEIGHT_FORMATS for p in compiler.format_files(w)]
    out = {}
    for (p, _, w), r in zip(jobs, compiler.compile_many(jobs)):  # fills the cubin cache (both weight builds)
        key = p.stem if w == "bf16" else f"{p.stem}.{w}"
        if isinstance(r, compiler.CompileError):
            out[key] = {"ok": False, "log": r.log[-3000:]}
        else:
            ptxas = compiler.ptxas_summary(r.log)
            out[key] = {"ok": True, "seconds": round(r.seconds, 3), "cached": r.cached, "cubin_bytes": len(r.cubin),
                           "max_registers": max((k["registers"] for k in ptxas.values()), default=0),
                           "spill_bytes": sum(k["spill_bytes"] for k in ptxas.values())}
    return {"arch": arch, "wall_seconds": round(time.perf_counter() - t, 2), "files": out,
            "all_ok": all(v["ok"] for v in out.values())}


# ---- 2. the GPU tests ----------------------------------------------------------------------
GPU_TEST_MODULES = ("test_compile.py", "test_ops.py", "test_sampling.py", "test_model.py", "test_probes.py",
                    "test_engine_on_cuda.py", "test_rope_scaling.py", "test_rope_guard.py", "test_paged.py",
                    "test_engine_batched_on_cuda.py", "test_linear_attention.py")
# the engine module adds ~20 s (a SmolLM2-shaped model on numpy as the reference); the RoPE
# scaling module ~15 s (five tiny models, each through the op path, the graphs and the engine)
PYTEST_BUDGET_S = 160


def run_pytest(out: Path, budget_s: int) -> dict:
    """Each GPU test module in its own process (a sticky CUDA error in one cannot poison the
    others), with CUDA_LAUNCH_BLOCKING=1 so a fault names the launch that caused it. The
    driver-double modes (CPU only, marked `emulated`) ran wherever the code was built and are
    deselected here."""
    import importlib.util

    if importlib.util.find_spec("pytest") is None:
        return {"ran": False, "reason": "pytest is not installed here; the parity checks below still run"}
    env = dict(os.environ, INLOOP_PARITY_REPORT=str(out / "parity.jsonl"), CUDA_LAUNCH_BLOCKING="1")
    logs, modules, deadline = [], {}, time.perf_counter() + budget_s
    for mod in GPU_TEST_MODULES:
        left = int(deadline - time.perf_counter())
        if left < 10:
            modules[mod] = "not run (time budget)"
            continue
        cmd = [sys.executable, "-m", "pytest", f"tests/runtime/backends/cuda/{mod}", "-q", "-rfEs",
               "-m", "not emulated", "-p", "no:cacheprovider", "-o", "addopts="]
        try:
            p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=left)
            text, rc = p.stdout + p.stderr, p.returncode
        except subprocess.TimeoutExpired as exc:
            raw = exc.stdout or b""
            text, rc = (raw.decode() if isinstance(raw, bytes) else raw) + "\nTIMEOUT", "timeout"
        logs.append(f"===== {mod} (rc {rc}) =====\n{text}")
        tail = [line for line in text.strip().splitlines() if line.strip()][-1:] or [""]
        modules[mod] = tail[0] if rc in (0, 1) else f"rc {rc}: {tail[0]}"
        if rc == 5:  # no tests collected
            modules[mod] = "no tests collected"
    (out / "pytest.log").write_text("\n".join(logs))
    passed = all("failed" not in v and "error" not in v and not v.startswith(("rc ", "not run"))
                 for v in modules.values())
    return {"ran": True, "modules": modules, "passed": passed,
            "summary": "; ".join(f"{k[5:-3]}: {v}" for k, v in modules.items())}


# ---- 3. greedy parity ------------------------------------------------------------------------
def tiny_parity(workdir: Path, be) -> dict:
    from inloop.services.runtime.model.tiny import make_tiny

    out = {}
    for i, arch in enumerate(("llama", "qwen2", "qwen3")):
        d = make_tiny(arch, workdir / f"tiny-{arch}", seed=10 + i, dtype="bfloat16")
        out[arch] = greedy_parity(d, be, 11, 24)
    return out


# ---- 4. benchmarks ------------------------------------------------------------------------
def bench_hf(model_dir: Path, device: str = "cuda") -> dict:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t = time.perf_counter()
    model = load_hf(model_dir, device)  # bf16 on the GPU
    load_s = time.perf_counter() - t
    ids = torch.tensor([prompt_ids(model.config.vocab_size, PROMPT_LEN, seed=2).tolist()], device=device)
    ttft, decode = [], []
    with torch.inference_mode():
        for _ in range(4):
            sync()
            t = time.perf_counter()
            out = model(ids, use_cache=True)
            tok = out.logits[0, -1].argmax()
            int(tok)
            ttft.append((time.perf_counter() - t) * 1e3)
        for n in (8, DECODE_TOKENS):  # a short warm-up run, then the timed one
            out, past = hf_forward(model, ids)
            tok = out.logits[0, -1].argmax()
            sync()
            t = time.perf_counter()
            for _ in range(n):
                out, past = hf_forward(model, tok.view(1, 1), past)
                tok = out.logits[0, -1].argmax()
                int(tok)  # the host needs every token, as ours does
            decode.append((time.perf_counter() - t) * 1e3 / n)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"load_s": round(load_s, 2), "ttft_ms": statistics.median(ttft[1:]), "decode_ms_per_token": decode[-1]}


ENGINE_RUNS, ENGINE_NEW_TOKENS = 5, 32  # inloop bench runtime's defaults: ~8 s a model, mostly HF


def engine_bench(model_dir: Path, be, with_hf: bool) -> dict:
    """Step 5: the engine's fast path vs HF (benchmark.bench_engine) at this script's sizes."""
    return bench_engine(model_dir, be, PROMPT_LEN, ENGINE_NEW_TOKENS, ENGINE_RUNS, with_hf)


def first_token_child(kind: str, model_dir: str) -> None:
    """Child process: load and produce the first token, then print it (the parent times us)."""
    if kind == "ours":
        from inloop.services.runtime.backends.cuda.backend import CudaBackend
        from inloop.services.runtime.backends.cuda.loader import load_transformer
        from inloop.services.runtime.model.config import ModelConfig
        from inloop.services.runtime.model.weights import Weights

        cfg = ModelConfig.from_dir(model_dir)
        be = CudaBackend()
        model = load_transformer(be, cfg, Weights(model_dir))
        ids = prompt_ids(cfg.vocab_size, PROMPT_LEN, seed=2)
        cache = model.new_cache(PROMPT_LEN + 8)
        logits = model.forward(be.ids(ids), be.ids(np.arange(PROMPT_LEN, dtype=np.int32)), cache)
        token = be.sample(logits)[0]
        extra = {"kernels_compiled": be.kernels.compiled, "kernel_load_s": round(be.kernels.load_seconds, 3),
                 "backend_start_s": round(be.start_seconds, 3), "weights_s": round(model.load_seconds, 3)}
    else:
        import torch

        device = os.environ.get("INLOOP_HF_DEVICE", "cuda")
        model = load_hf(model_dir, device)  # bf16 on the GPU
        with torch.inference_mode():
            ids = torch.tensor([prompt_ids(model.config.vocab_size, PROMPT_LEN, seed=2).tolist()], device=device)
            token = int(model(ids).logits[0, -1].argmax())
        extra = {}
    print("FIRST_TOKEN " + json.dumps({"token": int(token), **extra}), flush=True)


def start_to_first_token(kind: str, model_dir: Path, timeout: int = 90) -> dict:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--first-token", kind, str(model_dir)], cwd=REPO,
                       capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("FIRST_TOKEN ")), None)
    if p.returncode != 0 or line is None:
        return {"error": f"child exited {p.returncode}", "stderr": p.stderr[-3000:]}
    return {"seconds": round(wall, 3), **json.loads(line.split(" ", 1)[1])}


# ---- orchestration ---------------------------------------------------------------------------
def _commit() -> str:
    """INLOOP_COMMIT (the copy sent to a lent machine has no .git), else git's HEAD."""
    if os.environ.get("INLOOP_COMMIT"):
        return os.environ["INLOOP_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "?"
    except Exception:  # no git, or no .git in the copy that travelled
        return "?"


def _num(x, fmt: str) -> str:
    """A number for the tables, or '-' where the step gave none."""
    return format(x, fmt) if isinstance(x, (int, float)) else "-"


def perf_row(r: dict) -> str:
    """This run as a row of services/runtime/backends/cuda/PERF.md's measurements table."""
    bench = r.get("bench", {})
    s, q = bench.get("smollm2-135m", {}), bench.get("qwen2.5-0.5b", {})
    so, qo = s.get("ours", {}), q.get("ours", {})
    cells = [str(r.get("started", "?"))[:10], r.get("environment", {}).get("device", "?"), r.get("commit", "?"),
             f"{_num(so.get('decode_ms_per_token'), '.3f')} ({_num(so.get('decode_gpu_ms_per_step'), '.3f')})",
             f"{_num(qo.get('decode_ms_per_token'), '.3f')} ({_num(qo.get('decode_gpu_ms_per_step'), '.3f')})",
             _num(so.get("ttft_ms"), ".2f"), _num(s.get("start_ours", {}).get("seconds"), ".2f"), "gpu_check"]
    return "| " + " | ".join(cells) + " |"


def summary_table(r: dict) -> str:
    env = r.get("environment", {})
    lines = [f"GPU check on {env.get('device', '?')} (sm {env.get('capability', '?')}), driver "
             f"{env.get('driver_version', '?')}, NVRTC {env.get('nvrtc', '?')}, "
             f"torch {env.get('torch')}, transformers {env.get('transformers')}"]
    c = r.get("compile", {})
    lines.append(f"compile ({c.get('arch')}): {'ok' if c.get('all_ok') else 'FAILED'} in {c.get('wall_seconds')} s")
    t = r.get("pytest", {})
    lines.append(f"GPU tests: {t.get('summary') or t.get('reason') or t.get('error') or 'not run (--skip-tests)'}")
    for name, p in (r.get("parity") or {}).items():
        if isinstance(p, dict) and "ok" in p:
            div = p.get("free_running_first_divergence")
            free = "identical" if div is None else (f"parts at step {div['step']} (numpy margin "
                                                    f"{div['numpy_margin']:.3g}, tol {div['tol']:.3g})")
            lines.append(f"greedy parity {name:<14} {'ok' if p['ok'] else 'FAILED'}; teacher-forced mismatches "
                         f"{len(p['teacher_forced_argmax_mismatches'])}, free-running {free}")
        else:
            lines.append(f"greedy parity {name}: {p.get('error') if isinstance(p, dict) else p}")
    q35 = (r.get("parity") or {}).get("qwen3.5-0.8b") or {}
    q35_hf = (r.get("qwen35") or {}).get("hf") or {}
    if "op_path_decode_ms_per_token" in q35:
        lines.append(f"qwen3.5-0.8b op path (no graphs): decode {q35['op_path_decode_ms_per_token']} ms/token, "
                     f"{q35['op_path_prefill_ms']} ms for a {q35.get('prompt_len', '?')}-token prompt")
        q35_graphs = (r.get("qwen35") or {}).get("graphs") or {}
        if q35_graphs.get("buckets"):
            lines.extend(batched_lines("qwen3.5-0.8b", q35_graphs, {}))
        if "decode_ms_per_token" in q35_hf:
            lines.append(f"qwen3.5-0.8b HF bf16: decode {q35_hf['decode_ms_per_token']:.3f} ms/token, TTFT "
                         f"{q35_hf['ttft_ms']:.2f} ms; its linear layers: {r['qwen35'].get('hf_linear_attention')}")
    elif r.get("qwen35"):
        lines.append(f"qwen3.5-0.8b: {r['qwen35']}")
    lines.append("")
    lines.append(f"{'model':<14}{'':<6}{'decode ms/tok':>14}{'(gpu/step)':>12}{'TTFT ms':>10}{'start->1st s':>14}")
    for name in SHAPES:
        b = r.get("bench", {}).get(name, {})
        o, h = b.get("ours", {}), b.get("hf", {})
        so, sh = b.get("start_ours", {}), b.get("start_hf", {})
        lines.append(f"{name:<14}{'ours':<6}{_num(o.get('decode_ms_per_token'), '.3f'):>14}"
                     f"{_num(o.get('decode_gpu_ms_per_step'), '.3f'):>12}{_num(o.get('ttft_ms'), '.2f'):>10}"
                     f"{_num(so.get('seconds'), '.2f'):>14}")
        lines.append(f"{'':<14}{'HF':<6}{_num(h.get('decode_ms_per_token'), '.3f'):>14}{'':>12}"
                     f"{_num(h.get('ttft_ms'), '.2f'):>10}{_num(sh.get('seconds'), '.2f'):>14}")
        if isinstance(o.get("decode_ms_per_token"), float) and isinstance(h.get("decode_ms_per_token"), float):
            lines.append(f"{'':<14}{'x HF':<6}{h['decode_ms_per_token'] / o['decode_ms_per_token']:>14.1f}{'':>12}"
                         f"{h['ttft_ms'] / o['ttft_ms'] if o.get('ttft_ms') else float('nan'):>10.1f}"
                         f"{(sh.get('seconds') or 0) / so['seconds'] if so.get('seconds') else float('nan'):>14.1f}")
        tuning = o.get("gemv_tuning") or {}
        if tuning.get("choices"):
            lines.append(f"{'':<14}gemv tuning ({tuning['measured']} shapes, {tuning['seconds']} s): " + ", ".join(
                f"{e.split(':')[0]} FAILED {c['error']}" if "error" in c else
                f"{e.split(':')[0]} {c['heuristic']}->{c['chosen']} {c['heuristic_us']}->{c['chosen_us']} us"
                for e, c in tuning["choices"].items()))
        top = list((o.get("breakdown_us") or {}).items())[:5]
        if top:
            lines.append(f"{'':<14}step breakdown (eager, us): " + ", ".join(
                f"{k} {v['total_us']:.0f} ({v['count']}x)" for k, v in top))
    baseline = gpu_baseline.summary_lines(r.get("bench") or {})
    if baseline:
        lines += ["", "against the baseline commit (same card, same weights; ours / baseline):", *baseline]
    lines.extend(engine_bench_lines(r.get("engine_bench") or {}, ENGINE_NEW_TOKENS, ENGINE_RUNS))
    probes = dict(r.get("probes") or {})
    for name in SHAPES:  # the A/B of each model's decode step came with its benchmark
        ours = r.get("bench", {}).get(name, {}).get("ours", {})
        for key in ("decode_ab", "decode_kinds", "decode_at_lengths"):
            if ours.get(key):
                probes[name] = {**(probes.get(name) or {}), key: ours[key]}
    if probes:
        lines.append("")
        lines.append("probes (where a decode step's time goes):")
        lines.extend(summary_lines(probes))
    batched = r.get("batched") or {}
    if batched:
        lines.append("")
        lines.extend(batched_lines("smollm2-135m", batched.get("graphs") or {}, batched.get("engine") or {}))
    lines.append("")
    lines.append("PERF.md row: " + perf_row(r))
    lines.append(f"total {r.get('total_seconds')} s")
    return "\n".join(lines)


# ---- the run: a table of stages, one loop --------------------------------------------------
@dataclass
class Run:
    """What the stages share: the flags, the folders, the results (saved after every stage),
    the backend and the random models once made."""

    args: argparse.Namespace
    out: Path
    work: Path
    results: dict = field(default_factory=dict)
    be: object = None
    models: dict = field(default_factory=dict)

    def save(self) -> None:
        self.results["total_seconds"] = round(time.perf_counter() - T0, 1)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2, default=str))

    def time_left(self, margin_s: float = 0.0) -> bool:
        return time.perf_counter() - T0 < DEADLINE_S - margin_s


def stage_environment(run: Run) -> int | None:
    env = step(run.results, "environment", environment)
    if not env.get("cuda_available"):
        log(f"no CUDA device: {env.get('reason')}")
        run.results["ok"] = False
        return 2
    return None


def stage_compile(run: Run) -> None:
    step(run.results, "compile", compile_kernels, run.results["environment"]["arch"])
    log(f"compiled kernels for {run.results['environment']['arch']} in "
        f"{run.results['compile'].get('wall_seconds')} s")


def stage_pytest(run: Run) -> None:
    if run.args.skip_tests:
        return
    step(run.results, "pytest", run_pytest, run.out, PYTEST_BUDGET_S)
    log(f"GPU tests: {run.results['pytest'].get('summary') or run.results['pytest'].get('reason')}")


def stage_backend(run: Run) -> int | None:
    from inloop.services.runtime.backends.cuda.backend import CudaBackend

    be = step(run.results, "backend", CudaBackend)
    if isinstance(be, dict):  # could not even start: report what we have
        run.results["ok"] = False
        print("\n" + summary_table(run.results), flush=True)
        return 1
    run.be = be
    run.results["backend"] = be.describe()
    return None


def stage_models(run: Run) -> None:
    for i, name in enumerate(SHAPES):
        run.models[name] = step(run.results, f"make_{name}", make_random_model, run.work / name, name, i)


def stage_parity(run: Run) -> None:
    parity = run.results["parity"] = {}
    tiny = step(run.results, "tiny_parity", tiny_parity, run.work, run.be)
    if "error" in tiny:
        parity["tiny"] = tiny
    else:
        parity.update({f"tiny-{name}": p for name, p in tiny.items()})
    for name in SHAPES:   # 32 steps for SmolLM2's shape; 16 for the larger ones (numpy is the slow side)
        parity[name] = step(run.results, f"parity_{name}", greedy_parity, run.models[name], run.be, PROMPT_LEN,
                            32 if name == "smollm2-135m" else 16)
    log("parity done")


def stage_qwen35(run: Run) -> None:
    """A Qwen3.5-0.8B-shaped random model (Gated DeltaNet kernels at their real head sizes):
    greedy parity with numpy, both op by op; its decode through the batching core's bucket
    graphs; HF on it. Last and optional: writing the model (~1.5 GB) and the numpy reference
    take about a minute, so it runs with time to spare, or when --qwen35 asks for it."""
    if not (run.args.qwen35 or run.time_left(60)):
        run.results["qwen35"] = {"skipped": "time budget (--qwen35 runs it anyway)"}
        return
    d = step(run.results, "make_qwen3.5-0.8b", make_qwen35_model, run.work / "qwen3.5-0.8b", 7)
    if isinstance(d, dict):  # the step's error record
        return
    run.results["parity"]["qwen3.5-0.8b"] = step(run.results, "parity_qwen35", qwen35_greedy_parity, d, run.be)
    log(f"qwen3.5-0.8b parity done: {run.results['parity']['qwen3.5-0.8b'].get('ok')}")
    q = run.results["qwen35"] = {}
    # decode through the batching core's bucket graphs (hybrid_step.py): bucket 1 is batch-1 decode
    step(q, "graphs", graph_bench, d, run.be, (1, 4, 16), 32, 8)
    for line in batched_lines("qwen3.5-0.8b", q.get("graphs") or {}, {}):
        log(line)
    if not run.args.skip_hf:   # HF's own Qwen3.5 on the same card, and how its linear layers ran
        q["hf_linear_attention"] = hf_qwen35_path()
        step(q, "hf", bench_hf, d)
        log(f"qwen3.5-0.8b: HF {q['hf'].get('decode_ms_per_token')} ms/token ({q['hf_linear_attention']}); ours op "
            f"by op {run.results['parity']['qwen3.5-0.8b'].get('op_path_decode_ms_per_token')} ms/token")


def hf_qwen35_path() -> str:
    """Whether HF's Gated DeltaNet layers had their optional kernels here (flash-linear-attention,
    causal-conv1d) or fell back to its torch loops."""
    import importlib.util

    have = [m for m in ("fla", "causal_conv1d") if importlib.util.find_spec(m) is not None]
    return ("with " + " and ".join(have)) if have else "torch fallback (no fla, no causal_conv1d)"


def stage_bench(run: Run) -> None:
    run.results["bench"] = {}
    for name in SHAPES:
        b = run.results["bench"][name] = {}
        step(b, "ours", bench_cuda, run.models[name], run.be, PROMPT_LEN, DECODE_TOKENS)
        log(f"{name}: ours {b['ours'].get('decode_ms_per_token')} ms/token, TTFT {b['ours'].get('ttft_ms')} ms")
        if run.args.baseline:
            step(b, "baseline", gpu_baseline.bench, run.args.baseline, run.models[name], run.work, PROMPT_LEN,
                 DECODE_TOKENS)
            log(f"{name}: baseline {b['baseline'].get('commit')} {b['baseline'].get('decode_ms_per_token')} "
                f"ms/token, TTFT {b['baseline'].get('ttft_ms')} ms")
        if not run.args.skip_hf:
            step(b, "hf", bench_hf, run.models[name])
            log(f"{name}: HF {b['hf'].get('decode_ms_per_token')} ms/token, TTFT {b['hf'].get('ttft_ms')} ms")
        run.save()


def stage_batched(run: Run) -> None:
    """The batching core's decode graphs and the engine with --batching on (SmolLM2-shaped)."""
    name = "smollm2-135m"
    b = run.results["batched"] = {}
    step(b, "graphs", graph_bench, run.models[name], run.be)
    if run.time_left(60):
        step(b, "engine", batched_engine_bench, run.models[name], run.be)
    for line in batched_lines(name, b.get("graphs") or {}, b.get("engine") or {}):
        log(line)


def stage_probes(run: Run) -> None:
    """Tuning data (optional, a few seconds): before the engine bench and the start-up
    children, which take longer and would otherwise leave it no time."""
    probes = run.results["probes"] = {}
    if not run.time_left(15):
        return
    step(probes, "graph_node", graph_node_cost, run.be)
    for name in SHAPES:
        if not run.time_left():
            probes[name] = {"skipped": "time budget"}
            continue
        step(probes, name, lambda n: {"gemv": gemv_sweep(run.be, SHAPES[n])}, name)
    log("probes done")


def stage_engine_bench(run: Run) -> None:
    """The engine's fast path side by side with HF (inloop bench runtime --backend cuda)."""
    engine = run.results["engine_bench"] = {}
    for name in SHAPES:
        if not run.time_left(30):
            engine[name] = {"skipped": "time budget"}
            continue
        e = step(engine, name, engine_bench, run.models[name], run.be, not run.args.skip_hf)
        log(f"{name}: engine {e.get('ours', {}).get('decode_ms_per_token')} ms/token, TTFT "
            f"{e.get('ours', {}).get('ttft_ms')} ms; ratio ours/HF {e.get('decode_speed_ratio_ours_over_hf')}")
        run.save()


def stage_start(run: Run) -> None:
    """Process start to first token, in child processes; the cubin cache is warm by now."""
    for name in SHAPES:
        b = run.results["bench"][name]
        step(b, "start_ours", start_to_first_token, "ours", run.models[name])
        if not run.args.skip_hf and run.time_left(40):
            step(b, "start_hf", start_to_first_token, "hf", run.models[name])
        log(f"{name}: start->first token ours {b['start_ours'].get('seconds')} s, "
            f"HF {b.get('start_hf', {}).get('seconds')} s")
        run.save()


# In order; a stage that returns an exit code ends the run there (results saved).
STAGES = (stage_environment, stage_compile, stage_pytest, stage_backend, stage_models, stage_parity,
          stage_bench, stage_batched, stage_probes, stage_engine_bench, stage_start, stage_qwen35)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_results")
    ap.add_argument("--work", default=os.environ.get("INLOOP_GPU_WORK", "/tmp/inloop-gpu-check"))
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--qwen35", action="store_true",
                    help="run the Qwen3.5-0.8B-shaped greedy parity even past the time budget (about a minute)")
    ap.add_argument("--baseline", type=Path, metavar="TREE",
                    help="also bench this tree (scripts/gpu_baseline.py prepare REV) on the same card and models")
    ap.add_argument("--first-token", nargs=2, metavar=("KIND", "MODEL_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.first_token:
        first_token_child(*args.first_token)
        return 0
    run = Run(args, Path(args.out), Path(args.work))
    run.out.mkdir(parents=True, exist_ok=True)
    run.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("INLOOP_CACHE", str(run.work / "cache"))
    os.environ["INLOOP_TEST_USE_CACHE"] = "1"  # the GPU test processes reuse the warm cache
    os.environ["INLOOP_GPU_WORK"] = str(run.work)  # ... and write the SmolLM2-shaped model where the bench finds it
    if Path(os.environ["INLOOP_CACHE"]).resolve() == (run.work / "cache").resolve():
        shutil.rmtree(run.work / "cache", ignore_errors=True)  # the compile stage measures a cold build
    run.results.update(started=time.strftime("%Y-%m-%dT%H:%M:%S"), commit=_commit())
    for stage in STAGES:
        code = stage(run)
        run.save()
        if code is not None:
            return code
    results = run.results
    parity_ok = all(isinstance(p, dict) and p.get("ok") for p in results["parity"].values())
    pt = results.get("pytest", {})
    tests_ok = args.skip_tests or pt.get("passed") is True or pt.get("ran") is False
    results["ok"] = bool(results["compile"].get("all_ok") and parity_ok and tests_ok)
    run.save()
    table = summary_table(results)
    (run.out / "summary.txt").write_text(table + "\n")
    print("\n" + table, flush=True)
    return 0 if results["ok"] else 1


T0 = time.perf_counter()

if __name__ == "__main__":
    sys.exit(main())

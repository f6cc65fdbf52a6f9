"""`inloop bench runtime`: ours against HF transformers on the same model and prompts, in one run.

Both sides run the same greedy loop shape (one prefill, then one token per step with a KV
cache), interleaved run by run so that machine noise hits both alike. We report medians and
the ratios: decode tokens/s ours/HF (> 1 means we are faster) and TTFT HF/ours.

On the CUDA backend ours is measured the way the engine runs a request, its fast path:
Generation.pick through the backend's StepRunner (the prompt's prefill graph with
GPU sampling, then one captured decode graph per token, token and uncertainty back from
the same pass, detokenization included); HF runs on the same GPU in bf16, eager (no
torch.compile, no CUDA graphs). On the numpy backend ours is the forward pass with host
logits and argmax, against HF on the CPU in float32.
"""
from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

PROMPTS = [
    "Explain in two sentences why the sky is blue, then give one everyday example of the same effect.",
    "A receipt from Corner Market lists bread 2.50, milk 1.20 and coffee 7.90. What is the total?",
    "Write a short haiku about a server that never sleeps and the engineers who watch over it.",
]


@dataclass
class RunStats:
    ttft_ms: list[float] = field(default_factory=list)
    decode_tok_s: list[float] = field(default_factory=list)
    decode_ms_per_token: list[float] = field(default_factory=list)

    def add(self, ttft_s: float, decode_s: float, tokens: int) -> None:
        self.ttft_ms.append(ttft_s * 1e3)
        self.decode_tok_s.append(tokens / decode_s)
        self.decode_ms_per_token.append(decode_s * 1e3 / tokens)

    def medians(self) -> dict:
        return {k: statistics.median(v) for k, v in asdict(self).items() if v}


def prompt_ids(tokenizer, n_tokens: int, i: int) -> list[int]:
    """A chat prompt padded or cut to exactly n_tokens ids (same ids for both sides)."""
    text = tokenizer.render_chat([{"role": "user", "content": PROMPTS[i % len(PROMPTS)] * 8}])
    ids = tokenizer.encode(text)
    return ids[:n_tokens]


def run_ours(engine, ids: list[int], new_tokens: int) -> tuple[float, float, list[int]]:
    cache = engine.model.new_cache(len(ids) + new_tokens)
    t0 = time.perf_counter()
    token = int(np.argmax(engine.prefill(ids, cache)))
    engine.model.backend.synchronize()
    ttft = time.perf_counter() - t0
    out = [token]
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        token = int(np.argmax(engine.decode_one_token(token, cache)))
        out.append(token)
    engine.model.backend.synchronize()
    engine.model.backend.free_kv(cache)
    return ttft, time.perf_counter() - t1, out


def run_engine(engine, ids: list[int], new_tokens: int) -> tuple[float, float, list[int]]:
    """The engine's own per-token path (a request's Generation.pick loop through the backend's
    StepRunner), greedy and not stopping at EOS, so that both sides make new_tokens tokens."""
    from inloop.services.contract.generation import SamplingParams
    from inloop.services.runtime.engine.generation import Generation
    from inloop.services.runtime.engine.sampler import Sampler

    cache = engine.runner.new_cache(len(ids) + new_tokens)
    gen = Generation(engine, list(ids), cache, Sampler(SamplingParams(max_tokens=new_tokens)), new_tokens,
                     (), None, None)
    t0 = time.perf_counter()
    gen.prefill()
    out = [gen.pick()]  # the token is on the host: nothing left in flight
    ttft = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        out.append(gen.pick())
    decode = time.perf_counter() - t1
    engine.runner.free_cache(cache)
    return ttft, decode, out


def ours_loop(engine):
    """run_engine where the backend has a fast path (samples on the device), else run_ours."""
    return run_engine if engine.runner.samples_on_device else run_ours


def load_hf(model_dir, device: str):
    """HF transformers, eager: bf16 on a GPU, float32 on the CPU (`dtype=` from 4.56 on)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return AutoModelForCausalLM.from_pretrained(model_dir, **{key: dtype}).to(device).eval()


def hf_forward(model, input_ids, cache=None):
    """One forward pass of an HF causal LM with its KV cache: (output, the cache to pass next).
    transformers 5.24 renamed `past_key_values` (argument and output) to `cache` and removes the
    old name in 5.40; earlier versions know only the old one."""
    kw = {}
    if cache is not None:
        new = "cache" in inspect.signature(type(model).forward).parameters
        kw["cache" if new else "past_key_values"] = cache
    out = model(input_ids, use_cache=True, **kw)
    return out, out["cache"] if "cache" in out else out.past_key_values


def run_hf(model, ids: list[int], new_tokens: int, device: str) -> tuple[float, float, list[int]]:
    import torch
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out, past = hf_forward(model, torch.tensor([ids], device=device))
        token = int(out.logits[0, -1].argmax())
        sync()
        ttft = time.perf_counter() - t0
        tokens = [token]
        t1 = time.perf_counter()
        for _ in range(new_tokens - 1):
            out, past = hf_forward(model, torch.tensor([[token]], device=device), past)
            token = int(out.logits[0, -1].argmax())
            tokens.append(token)
        sync()
    return ttft, time.perf_counter() - t1, tokens


def start_to_first_token(model_dir: Path, backend: str, side: str) -> float:
    """Seconds from spawning a fresh Python process to its first generated token."""
    code = (
        "import sys,time,json;"
        "from bench.runtime_vs_hf import _first_token_child as f;"
        f"f({str(model_dir)!r},{backend!r},{side!r})"
    )
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1]) - t0


def _first_token_child(model_dir: str, backend: str, side: str) -> None:
    if side == "ours":
        from inloop.services.runtime.engine.engine import Engine
        engine = Engine.load(model_dir, backend=backend)
        ids = prompt_ids(engine.tokenizer, 32, 0)
        ours_loop(engine)(engine, ids, 1)
    else:
        from transformers import AutoTokenizer
        device = "cuda" if backend == "cuda" else "cpu"
        model = load_hf(model_dir, device)
        ids = AutoTokenizer.from_pretrained(model_dir)("hello " * 32)["input_ids"][:32]
        run_hf(model, ids, 1, device)
    print(time.time(), flush=True)


def bench(model_dir: Path, backend, runs: int, prompt_tokens: int, new_tokens: int,
          with_hf: bool, start_runs: int) -> dict:
    """backend: cpu | cuda | auto, or a Backend object (scripts/gpu_check.py passes its own)."""
    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    from inloop.services.runtime.engine.engine import Engine
    engine = Engine.load(model_dir, backend=backend)
    backend_name = engine.model.backend.name
    run_ours_loop = ours_loop(engine)
    hf = device = None
    if with_hf:
        device = "cuda" if backend_name == "cuda" else "cpu"
        hf = load_hf(model_dir, device)
    ours, ref = RunStats(), RunStats()
    agree = []
    ids0 = prompt_ids(engine.tokenizer, prompt_tokens, 0)
    run_ours_loop(engine, ids0, 4)  # warm-up: first-touch of weights, BLAS threads, caches, graph capture
    if hf is not None:
        run_hf(hf, ids0, 4, device)
    for i in range(runs):
        ids = prompt_ids(engine.tokenizer, prompt_tokens, i)
        order = ("ours", "hf") if i % 2 == 0 else ("hf", "ours")  # alternate who goes first
        for side in order:
            if side == "ours":
                ttft, dec, toks_ours = run_ours_loop(engine, ids, new_tokens)
                ours.add(ttft, dec, new_tokens - 1)
            elif hf is not None:
                ttft, dec, toks_hf = run_hf(hf, ids, new_tokens, device)
                ref.add(ttft, dec, new_tokens - 1)
        if hf is not None:
            agree.append(toks_ours == toks_hf)
        print(f"  run {i + 1}/{runs}: ours {ours.decode_tok_s[-1]:.1f} tok/s"
              + (f", HF {ref.decode_tok_s[-1]:.1f} tok/s" if hf is not None else ""), file=sys.stderr)
    report = {
        "model": str(model_dir.name), "backend": backend_name, "device": engine.model.backend.describe(),
        "ours_path": f"engine (Generation.pick, {engine.runner.name})" if run_ours_loop is run_engine
        else f"forward + host argmax ({engine.runner.name})",
        "prompt_tokens": len(ids0), "new_tokens": new_tokens, "runs": runs,
        "ours": ours.medians(), "ours_all": asdict(ours),
    }
    if hf is not None:
        m_o, m_h = ours.medians(), ref.medians()
        report.update({
            "hf": m_h, "hf_all": asdict(ref), "hf_device": device, "same_greedy_tokens": agree,
            "hf_dtype": str(hf.dtype), "hf_attn_implementation": getattr(hf.config, "_attn_implementation", None),
            "decode_speed_ratio_ours_over_hf": m_o["decode_tok_s"] / m_h["decode_tok_s"],
            "ttft_speedup_hf_over_ours": m_h["ttft_ms"] / m_o["ttft_ms"],
        })
    if start_runs:
        report["start_to_first_token_s"] = {
            "ours": statistics.median(start_to_first_token(model_dir, backend_name, "ours") for _ in range(start_runs)),
            **({"hf": statistics.median(start_to_first_token(model_dir, backend_name, "hf") for _ in range(start_runs))}
               if with_hf else {}),
        }
    return report


def print_table(r: dict) -> None:
    print(f"model {r['model']}  backend {r['backend']}  prompt {r['prompt_tokens']} tokens, "
          f"{r['new_tokens']} new, medians of {r['runs']} runs; ours = {r['ours_path']}")
    print(f"{'':8}{'TTFT ms':>10}{'decode tok/s':>14}{'ms/token':>10}")
    for side in ("ours", "hf"):
        if side in r:
            m = r[side]
            print(f"{side:8}{m['ttft_ms']:>10.2f}{m['decode_tok_s']:>14.1f}{m['decode_ms_per_token']:>10.2f}")
    if "hf" in r:
        print(f"decode speed ours/HF: {r['decode_speed_ratio_ours_over_hf']:.2f}x   "
              f"TTFT HF/ours: {r['ttft_speedup_hf_over_ours']:.2f}x   "
              f"same greedy tokens: {sum(r['same_greedy_tokens'])}/{len(r['same_greedy_tokens'])} runs")
    if "start_to_first_token_s" in r:
        print("process start -> first token (s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["start_to_first_token_s"].items()))


def _cmd(args: argparse.Namespace) -> int:
    from inloop.services.runtime.model.default_model import resolve_model
    model_dir = resolve_model(args.model)
    report = bench(model_dir, args.backend, args.runs, args.prompt_tokens, args.new_tokens,
                   not args.no_hf, args.start_runs)
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (ours against a reference, in one run)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH")
    r = bsub.add_parser("runtime", help="TTFT and decode tokens/s, ours vs HF transformers, medians of N runs",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--model", default="default", help="model directory, or 'default' (SmolLM2-135M-Instruct)")
    r.add_argument("--backend", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="cpu: numpy forward vs HF float32 on the CPU; cuda: the engine's fast path (CUDA graphs, "
                        "GPU sampling) vs HF bf16 eager on the same GPU; auto: cuda where a device answers")
    r.add_argument("--runs", type=int, default=5, help="timed runs per side (medians are reported)")
    r.add_argument("--prompt-tokens", type=int, default=32)
    r.add_argument("--new-tokens", type=int, default=32, help="tokens generated per run (decode = new-1)")
    r.add_argument("--start-runs", type=int, default=0,
                   help="also time process start -> first token, median of N fresh processes per side")
    r.add_argument("--no-hf", action="store_true", help="ours only (no torch/transformers needed)")
    r.add_argument("--json", help="write the full report here")
    r.set_defaults(func=_cmd)

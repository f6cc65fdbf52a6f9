"""Parity and speed probes of the CUDA backend on a model directory, shared by
scripts/gpu_check.py and benchmarks: greedy parity with the numpy backend, TTFT and decode
timings through the graphs, a per-kernel breakdown of one decode step, and the engine-level
bench (the engine's fast path against HF).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from bench.cuda.models import prompt_ids


def last_row_logits(model, toks, start: int, cache) -> np.ndarray:
    """Feed toks at positions start.. through model.forward (any backend): the last row's logits."""
    b = model.backend
    positions = np.arange(start, start + len(toks), dtype=np.int32)
    lg = model.forward(b.ids(np.asarray(toks, np.int32)), b.ids(positions), cache)
    return np.asarray(b.to_host(lg))[-1]


def numpy_greedy_reference(ref, ids, steps: int, cap: int) -> tuple[list[int], list[np.ndarray]]:
    """Free-running greedy on the reference model: its tokens and every step's logits."""
    cache = ref.new_cache(cap)
    ref_logits = [last_row_logits(ref, ids, 0, cache)]
    tokens = []
    for s in range(steps):
        tokens.append(int(np.argmax(ref_logits[-1])))
        ref_logits.append(last_row_logits(ref, [tokens[-1]], len(ids) + s, cache))
    return tokens, ref_logits


def parity_report(got_logits, ref_logits, free: list[int], tokens: list[int], tol_scale: float) -> dict:
    """Teacher-forced logits (got vs numpy's, step by step) and a free-running greedy run against
    numpy's tokens: a differing argmax or token is allowed only where numpy's top-2 margin is
    below tol_scale x the logit scale."""
    def margin(lg):
        a = np.partition(lg, -2)[-2:]
        return float(a[1] - a[0])

    def tol(lg):
        return tol_scale * max(1.0, float(np.abs(lg).max()))

    max_rel, mismatches = 0.0, []
    for s, (g, r) in enumerate(zip(got_logits, ref_logits)):
        max_rel = max(max_rel, float(np.abs(g - r).max() / max(1.0, np.abs(r).max())))
        if int(np.argmax(g)) != int(np.argmax(r)):
            mismatches.append({"step": s, "numpy_margin": margin(r), "tol": tol(r), "allowed": margin(r) < tol(r)})
    first_div = next((s for s, (a, b) in enumerate(zip(free, tokens)) if a != b), None)
    div = None
    if first_div is not None:
        m, t = margin(ref_logits[first_div]), tol(ref_logits[first_div])
        div = {"step": first_div, "numpy_margin": m, "tol": t, "allowed": m < t}
    ok = all(x["allowed"] for x in mismatches) and (div is None or div["allowed"])
    return {"teacher_forced_argmax_mismatches": mismatches, "max_logit_err_rel_to_max": max_rel,
            "free_running_equal_tokens": first_div is None, "free_running_first_divergence": div, "ok": ok}


def greedy_parity(model_dir: Path, be, prompt_len: int, steps: int, tol_scale: float = 3e-2) -> dict:
    """numpy vs the decode graph: teacher-forced logits and argmax at every step, then
    free-running greedy; a differing token is allowed only where numpy's top-2 margin < tol."""
    from inloop.services.runtime.backends.cpu.backend import NumpyBackend
    from inloop.services.runtime.backends.cuda.loader import load_transformer
    from inloop.services.runtime.model.config import ModelConfig
    from inloop.services.runtime.model.transformer import Transformer
    from inloop.services.runtime.model.weights import Weights

    cfg = ModelConfig.from_dir(model_dir)
    ref = Transformer(cfg, NumpyBackend(), Weights(model_dir))
    ours = load_transformer(be, cfg, Weights(model_dir))
    ids = prompt_ids(cfg.vocab_size, prompt_len, seed=1)
    cap = prompt_len + steps + 8
    tokens, ref_logits = numpy_greedy_reference(ref, ids, steps, cap)
    gcache = ours.new_cache(cap)
    first_logits = last_row_logits(ours, ids, 0, gcache)
    dg = be.decode_graph(ours, cap)
    dg.bind(gcache)
    got_logits = [first_logits] + [dg.step_logits(t, prompt_len + s) for s, t in enumerate(tokens)]
    free = [int(np.argmax(first_logits))]
    res = dg.step(free[0], prompt_len)
    free.append(res[0])
    for _ in range(steps - 2):
        free.append(dg.step()[0])
    return {"arch": cfg.arch, "steps": steps, **parity_report(got_logits, ref_logits, free, tokens, tol_scale),
            "tokens_numpy": tokens[:16], "tokens_cuda": free[:16]}


def bench_cuda(model_dir: Path, be, prompt_len: int = 32, decode_tokens: int = 128) -> dict:
    """TTFT (prefill graph and eager), decode ms/token (graph, per-token sync; pipelined;
    GPU-only), the op path per token, and a per-kernel breakdown of one decode step."""
    from inloop.services.runtime.backends.cuda.loader import load_transformer
    from inloop.services.runtime.model.config import ModelConfig
    from inloop.services.runtime.model.weights import Weights

    from bench.cuda.probes import (
        decode_ab,
        decode_at_lengths,
        decode_kinds,
        decode_step_gpu_ms,
    )

    cfg = ModelConfig.from_dir(model_dir)
    t = time.perf_counter()
    model = load_transformer(be, cfg, Weights(model_dir))
    load_s = time.perf_counter() - t
    ids = prompt_ids(cfg.vocab_size, prompt_len, seed=2)
    cap = prompt_len + decode_tokens + 16
    cache = model.new_cache(cap)
    pos = np.arange(prompt_len, dtype=np.int32)

    def prefill_eager():
        logits = model.forward(be.ids(ids), be.ids(pos), cache)
        return be.sample(logits)[0]  # GPU greedy; synchronizes

    first = prefill_eager()
    eager_ttft = []
    for _ in range(5):
        t = time.perf_counter()
        prefill_eager()
        eager_ttft.append((time.perf_counter() - t) * 1e3)
    runner = be.graph_runner(model, cap)
    t = time.perf_counter()
    graph_first = runner.prefill_sample(ids, 0, cache)[0]  # builds and captures the 32-token graph
    prefill_capture_ms = (time.perf_counter() - t) * 1e3
    ttft = []
    for _ in range(9):
        t = time.perf_counter()
        runner.prefill_sample(ids, 0, cache)
        ttft.append((time.perf_counter() - t) * 1e3)
    dg = runner.decode
    dg.bind(cache)
    t = time.perf_counter()
    dg.step(first, prompt_len)
    capture_ms = (time.perf_counter() - t) * 1e3
    runs = []
    for _ in range(3):  # per token: launch, copy the sampled token back, synchronize
        t = time.perf_counter()
        dg.step(first, prompt_len)
        for _ in range(decode_tokens - 1):
            dg.step()
        runs.append((time.perf_counter() - t) * 1e3 / decode_tokens)
    t = time.perf_counter()
    dg.generate(first, prompt_len, decode_tokens)
    pipelined = (time.perf_counter() - t) * 1e3 / decode_tokens
    gpu_ms = decode_step_gpu_ms(be, dg, first, prompt_len, decode_tokens)
    ab = decode_ab(be, model, cache, first, prompt_len, decode_tokens)
    kinds = decode_kinds(be, dg, first, prompt_len, decode_tokens)
    lengths = decode_at_lengths(be, model)
    eager = []
    for s in range(8):  # the op path (Transformer.forward per token), for reference
        t = time.perf_counter()
        lg = model.forward(be.ids([first]), be.ids([prompt_len + s]), cache)
        be.sample(lg)
        eager.append((time.perf_counter() - t) * 1e3)
    return {"load_s": round(load_s, 3), "upload": model.upload_stats, "ttft_ms": statistics.median(ttft),
            "ttft_runs_ms": [round(x, 3) for x in ttft], "ttft_eager_ms": statistics.median(eager_ttft),
            "prefill_graph_first_call_ms": prefill_capture_ms, "prefill_graph_token_equals_eager": graph_first == first,
            "decode_ms_per_token": statistics.median(runs),
            "decode_runs_ms": [round(x, 4) for x in runs], "decode_pipelined_ms_per_token": pipelined,
            "decode_gpu_ms_per_step": gpu_ms, "graph_capture_ms": capture_ms, "pdl": dg.pdl_used,
            "kernels_per_step": dg.kernels_per_step(), "decode_ab": ab, "decode_kinds": kinds,
            "decode_at_lengths": lengths,
            "eager_op_path_ms_per_token": statistics.median(eager), "breakdown_us": step_breakdown(be, dg),
            "gemv_tuning": tuning_summary(be)}


def tuning_summary(be) -> dict:
    """What the GEMV tuner measured and chose in this process (empty on a warm start)."""
    t = be.gemv_tuner
    if t is None:
        return {"enabled": False}
    return {"enabled": True, "measured": t.measured, "seconds": round(t.seconds, 3), "choices": t.report}


def step_breakdown(be, dg) -> dict:
    """GPU time per kernel kind over one decode step, launched one by one with events between
    (no graph, no PDL: an upper bound on each kernel's share)."""
    from inloop.services.runtime.backends.cuda.driver import Event

    from bench.cuda.probes import kernel_kind, launches_through

    marks = []

    def timed(launch, name, *a, **k):
        e0, e1 = Event(), Event()
        e0.record(be.stream)
        launch(name, *a, **k)
        e1.record(be.stream)
        marks.append((name, e0, e1))

    with launches_through(be.ops, timed):
        dg.record(True)
    be.synchronize()
    out: dict[str, dict] = {}
    for name, e0, e1 in marks:
        d = out.setdefault(kernel_kind(name), {"count": 0, "total_us": 0.0})
        d["count"] += 1
        d["total_us"] += e1.elapsed_ms(e0) * 1e3
    for d in out.values():
        d["total_us"] = round(d["total_us"], 1)
        d["mean_us"] = round(d["total_us"] / d["count"], 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["total_us"]))


def bench_engine(model_dir: Path, be, prompt_len: int = 32, new_tokens: int = 64, runs: int = 5,
                 with_hf: bool = True) -> dict:
    """`inloop bench runtime --backend cuda` on this backend: the engine's per-request path
    (prefill graph + one decode graph per token, GPU sampling, detokenization) against HF
    bf16 on the same GPU, interleaved runs, medians and ratios (bench/runtime_vs_hf.py)."""
    import importlib.util

    from bench.runtime_vs_hf import bench

    with_hf = with_hf and all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
    r = bench(Path(model_dir), be, runs, prompt_len, new_tokens, with_hf, 0)
    r.pop("device", None)  # the caller reports the device once
    return r


def engine_bench_lines(results: dict, new_tokens: int, runs: int) -> list[str]:
    """A text table of bench_engine results {model: report | {"error"/"skipped": ...}}."""
    if not results:
        return []
    lines = ["", f"engine fast path vs HF ({new_tokens} new tokens, medians of {runs} runs)",
             f"{'model':<14}{'':<6}{'TTFT ms':>10}{'decode tok/s':>14}{'ms/token':>10}"]
    for name, e in results.items():
        if name == "seconds":  # gpu_check's step() timings
            continue
        if not isinstance(e, dict) or "ours" not in e:
            lines.append(f"{name:<14}{(e or {}).get('error') or (e or {}).get('skipped') or e}")
            continue
        for side in ("ours", "hf"):
            m = e.get(side)
            if m:
                lines.append(f"{name if side == 'ours' else '':<14}{side:<6}{m['ttft_ms']:>10.2f}"
                             f"{m['decode_tok_s']:>14.1f}{m['decode_ms_per_token']:>10.3f}")
        if "decode_speed_ratio_ours_over_hf" in e:
            agree = e.get("same_greedy_tokens") or []
            lines.append(f"{'':<14}decode ours/HF {e['decode_speed_ratio_ours_over_hf']:.1f}x, TTFT HF/ours "
                         f"{e['ttft_speedup_hf_over_ours']:.1f}x, same greedy tokens {sum(agree)}/{len(agree)} runs")
    return lines

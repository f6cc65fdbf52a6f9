"""The batching core's decode on the GPU, per batch-size bucket, two ways reported apart:

  graph replay   the CUDA backend's PagedStepper over a paged pool: `replay_ms` (GPU time per
                 step of a bucket's graph, replays back to back, inputs uploaded once),
                 `step_ms` (what the core pays per step: inputs up, replay, every row's logits
                 back, synchronize), tokens/s of each, and the same step's launches made
                 eagerly (`eager_step_ms`) beside it
  end to end     the engine with --batching on: `concurrency` requests at once, each
                 max_tokens with ignore_eos, through the runtime's Scheduler; output tokens/s

plus batch invariance on the model: sequence 0's decode row gives the same bits in every
bucket. Used by scripts/gpu_check.py (its "batched" stage); runs on the driver double too.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

BLOCK = 16


def _slots(blocks: list[int], rows: int, context: int, state: int = -1):
    from inloop.services.runtime.engine.core import _slots as core_slots

    return core_slots(blocks, BLOCK, rows, context, state)


def graph_bench(model_dir: Path, be, buckets=(1, 2, 4, 8, 16, 32, 64), prompt_len: int = 128,
                steps: int = 16) -> dict:
    """Graph replay and eager step times per bucket, and batch invariance (module docstring).
    A hybrid model (Qwen3.5) takes a state slot per sequence; its decode steps advance the
    states, so a bucket's first step is not repeatable and invariance is not checked here
    (tests/runtime/backends/cuda/test_linear_attention.py checks its steps' bits)."""
    from inloop.services.runtime.backends.cuda.driver import Event
    from inloop.services.runtime.model.architectures import build_model, read_config
    from inloop.services.runtime.model.weights import Weights

    cfg = read_config(model_dir)
    model = build_model(cfg, be, Weights(model_dir))
    hybrid = hasattr(model, "alloc_paged_kv")
    n_seqs, context = max(buckets), prompt_len + steps + 1
    per_seq = -(-context // BLOCK)
    kv = (model.alloc_paged_kv(n_seqs * per_seq, BLOCK, n_seqs) if hybrid else
          be.alloc_paged_kv(cfg.num_layers, cfg.num_kv_heads, n_seqs * per_seq, BLOCK, cfg.head_dim))
    blocks = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(n_seqs)]
    state = (lambda q: q) if hybrid else (lambda q: -1)
    rng = np.random.default_rng(6)
    prompts = rng.integers(3, cfg.vocab_size, (n_seqs, prompt_len)).astype(np.int32)
    stepper = be.paged_stepper(model, kv, context)
    for i in range(0, n_seqs, 4):   # prefill every sequence, 4 a step
        group = range(i, min(i + 4, n_seqs))
        seqs = [_slots(blocks[s], prompt_len, prompt_len, state(s)) for s in group]
        stepper.run(prompts[list(group)].reshape(-1), seqs, np.zeros(0, np.int32))
    token = np.full(n_seqs, 7, np.int32)
    out: dict = {"prompt_len": prompt_len, "steps": steps, "buckets": {}}
    first_rows = {}
    start, stop = Event(), Event()
    for b in buckets:
        seqs = [_slots(blocks[s], 1, prompt_len + 1, state(s)) for s in range(b)]
        rows = np.arange(b, dtype=np.int32)
        first_rows[b] = stepper.run(token[:b], seqs, rows)[0]          # captures this bucket's graph
        g = stepper.graphs[b]
        start.record(be.stream)
        for _ in range(steps):
            g.graph(False).launch(be.stream)
        stop.record(be.stream)
        stop.synchronize()
        replay_ms = stop.elapsed_ms(start) / steps
        walls = []
        for s in range(steps):   # as the core runs it: positions advance, logits come back
            seqs = [_slots(blocks[q], 1, prompt_len + 1 + s, state(q)) for q in range(b)]
            t = time.perf_counter()
            stepper.run(token[:b], seqs, rows)
            walls.append((time.perf_counter() - t) * 1e3)
        op = []
        for s in range(3):
            seqs = [_slots(blocks[q], 1, prompt_len + 1 + s, state(q)) for q in range(b)]
            t = time.perf_counter()
            stepper._eager(token[:b], seqs, rows)
            op.append((time.perf_counter() - t) * 1e3)
        step_ms = statistics.median(walls)
        out["buckets"][b] = {"replay_ms": round(replay_ms, 4), "replay_tokens_per_s": round(b / replay_ms * 1e3, 1),
                             "step_ms": round(step_ms, 4), "step_tokens_per_s": round(b / step_ms * 1e3, 1),
                             "eager_step_ms": round(statistics.median(op), 3)}
    one = out["buckets"].get(1, {}).get("replay_ms")
    if one and 32 in out["buckets"]:
        out["replay_ratio_32_over_1"] = round(out["buckets"][32]["replay_ms"] / one, 3)
    if not hybrid:
        ref = first_rows[buckets[0]]
        out["batch_invariant"] = all(np.array_equal(r, ref) for r in first_rows.values())
        out["invariance_max_abs_diff"] = float(max(np.abs(r - ref).max() for r in first_rows.values()))
    return out


def engine_bench(model_dir: Path, be, concurrencies=(1, 8, 32, 64), max_tokens: int = 64,
                 kv_cache_memory: int = 1 << 30) -> dict:
    """Output tokens/s through the engine's core at each concurrency (module docstring)."""
    from inloop.services.contract.generation import GenerateRequest, SamplingParams
    from inloop.services.runtime.engine.engine import BatchConfig, Engine
    from inloop.services.runtime.service.scheduler import Scheduler

    engine = Engine.load(model_dir, backend=be, batch=BatchConfig(batching="on", max_num_seqs=max(concurrencies),
                                                                  kv_cache_memory=kv_cache_memory))
    sched = Scheduler(lambda: engine, max(concurrencies)).start()
    core, out = engine.core, {}
    try:
        sched.ready.result(timeout=120)
        for c in concurrencies:
            reqs = [GenerateRequest(prompt=f"request {i}: tell me a story about the number {i}",
                                    sampling=SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True))
                    for i in range(c)]
            replays = core.stepper.replays if core.stepper else 0
            t = time.perf_counter()
            results = [h.future.result(timeout=600) for h in [sched.submit(r) for r in reqs]]
            wall = time.perf_counter() - t
            tokens = sum(len(r.token_ids) for r in results)
            out[c] = {"wall_s": round(wall, 3), "output_tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
                      "graph_steps": (core.stepper.replays if core.stepper else 0) - replays}
    finally:
        sched.close()
    return out


def summary_lines(name: str, g: dict, e: dict) -> list[str]:
    lines = [f"{name} batched decode (graph replay per bucket; step = inputs up + replay + logits back):",
             "  bucket  replay ms  replay tok/s  step ms  step tok/s  eager step ms"]
    for b, r in (g.get("buckets") or {}).items():
        lines.append(f"  {b:>6}  {r['replay_ms']:>9}  {r['replay_tokens_per_s']:>12}  {r['step_ms']:>7}  "
                     f"{r['step_tokens_per_s']:>10}  {r['eager_step_ms']:>13}")
    if g.get("replay_ratio_32_over_1") is not None:
        lines.append(f"  replay step at 32 / at 1: {g['replay_ratio_32_over_1']} (target <= 1.6)")
    if "batch_invariant" in g:
        lines.append(f"  batch invariant across buckets: {g['batch_invariant']}")
    for c, r in (e or {}).items():
        if isinstance(r, dict) and "tokens_per_s" in r:
            lines.append(f"  end to end, {c} concurrent: {r['tokens_per_s']} output tok/s ({r['graph_steps']} graph steps)")
    return lines

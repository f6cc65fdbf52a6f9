"""Probes that explain where a decode step's time goes on a GPU, so that the first run on a
card also gives the numbers to tune by (scripts/gpu_check.py runs them after the benchmarks):

  graph_node_cost   what one node of a captured graph costs: a graph of n minimal launches
                    (swiglu on one element), with programmatic dependent launch and without
  decode_ab         one decode step's GPU time as served, with plain graph edges instead of
                    PDL, and with the heuristic's GEMV configs instead of the measured ones
  decode_kinds      each kernel kind's share of a decode step inside the graph: the step
                    captured with only that kind's launches, and with all but them
  decode_at_lengths one decode step's GPU time with the sequence at several lengths (the
                    attention kernel's splits, stages and merge at long context)
  gemv_sweep        each decode projection of a model shape (qkv, o, gate_up, down, LM head)
                    under every (split-K, threads) the GEMV kernel takes, timed inside a graph
                    as the decode step launches it; every config's output is first checked
                    against the launcher's own choice, and the fastest is named beside it

Times are medians of event-timed graph replays, in microseconds per launch (or per step).
Random weights: only the shapes matter here.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from inloop.services.runtime.backends.cuda.driver import CudaError, Event, copy_dtod
from inloop.services.runtime.backends.cuda.gemv_timing import (
    GEMV_CONFIGS, REPLAYS, SAME_RESULT_TOL, L2Flush, config_name, replay_us, time_gemv_configs,
)
from inloop.services.runtime.backends.cuda.module import Graph
from inloop.services.runtime.backends.cuda.step_graph import capture, capture_as_served

LAUNCHES_PER_GRAPH = 20
COPIES_BYTES = 1 << 30   # the sweep's distinct weight copies stay under this


def _variants(be) -> tuple[bool, ...]:
    return (False, True) if be.pdl else (False,)


def graph_node_cost(be, n: int = 200, replays: int = REPLAYS) -> dict:
    """Microseconds per node of a graph of `n` one-element swiglu launches, per edge kind."""
    gate_up = be.upload_activation(np.ones((1, 2), np.float32))
    out = be._empty((1, 1))
    result: dict = {"nodes": n}
    for pdl in _variants(be):
        key = "pdl_us" if pdl else "plain_us"
        try:
            g = capture(be, lambda: [be.ops.swiglu(gate_up, out) for _ in range(n)], pdl)
        except CudaError as exc:
            result[key] = f"capture failed: {exc}"
            continue
        result[key] = round(replay_us(be, g, n, replays), 3)
    return result


def replay_ms(be, dg, graph: Graph, token: int, pos: int, steps: int) -> float:
    """GPU milliseconds per replay of `graph` (a step of `dg`, or part of one), `steps`
    replays back to back from `token` at `pos`, chained on the device."""
    dg.prime(token, pos)
    e0, e1 = Event(), Event()
    e0.record(be.stream)
    for _ in range(steps):
        graph.launch(be.stream)
    e1.record(be.stream)
    e1.synchronize()
    return e1.elapsed_ms(e0) / steps


def decode_step_gpu_ms(be, dg, token: int, pos: int, steps: int) -> float:
    """GPU milliseconds per decode step: `steps` replays back to back, chained on the device."""
    return replay_ms(be, dg, dg.graph(True), token, pos, steps)


def decode_ab(be, model, cache, token: int, pos: int, steps: int) -> dict:
    """The decode step's GPU time as served (PDL edges where the card has them, measured GEMV
    configs where tuning is on), then with plain edges, then with the heuristic's GEMV
    configs: each a fresh graph on the same model and cache."""
    variants = {"served_ms": (be.pdl, True)}
    if be.pdl:
        variants["plain_edges_ms"] = (False, True)
    if be.ops.gemv_choices:
        variants["heuristic_gemv_ms"] = (be.pdl, False)
    result: dict = {}
    saved_pdl, saved_choices = be.pdl, dict(be.ops.gemv_choices)
    tuner, be.gemv_tuner = be.gemv_tuner, None  # the variants reuse what was measured, nothing more
    try:
        for key, (pdl, tuned) in variants.items():
            be.pdl = pdl  # both are read when the graph is captured
            be.ops.gemv_choices = dict(saved_choices) if tuned else {}
            dg = be.decode_graph(model, cache.capacity)
            dg.bind(cache)
            dg.step(token, pos)  # captures
            result[key] = round(decode_step_gpu_ms(be, dg, token, pos, steps), 4)
            if pdl and not dg.pdl_used:
                result[key.replace("_ms", "_note")] = "the driver refused PDL in capture: plain edges"
    finally:
        be.pdl, be.ops.gemv_choices, be.gemv_tuner = saved_pdl, saved_choices, tuner
    for key in ("plain_edges_ms", "heuristic_gemv_ms"):
        if key in result and result["served_ms"] > 0:
            result[key.replace("_ms", "_over_served")] = round(result[key] / result["served_ms"], 3)
    return result


@contextmanager
def launches_through(ops, wrap):
    """While inside, every kernel launch of `ops` calls wrap(launch, name, *args) instead, with
    `launch` the real launcher (to call, or not)."""
    launch = ops._launch
    ops._launch = lambda name, *a, **k: wrap(launch, name, *a, **k)
    try:
        yield
    finally:
        del ops._launch


def kernel_kind(name: str) -> str:
    """attention_decode_d64_f16 -> attention_decode; gemv kernels keep their mode."""
    name = name.removesuffix("_f16")
    return name.rsplit("_d", 1)[0] if name.startswith("attention") else name


def decode_kinds(be, dg, token: int, pos: int, steps: int) -> dict:
    """Per kernel kind: GPU microseconds per step of a graph holding only that kind's launches
    of the decode step ("only_us", with its count) and of one holding all the others
    ("without_us"). Inputs are whatever the skipped kernels left behind: times only. The
    sampler (which advances the position) is in the full graph, so each replay primes anew."""
    kinds: dict[str, int] = {}

    def count(launch, name, *a, **k):  # nothing launched: names only
        kind = kernel_kind(name)
        kinds[kind] = kinds.get(kind, 0) + 1

    with launches_through(be.ops, count):
        dg.record(True)

    def graph_of(keep) -> Graph:
        def filtered(launch, name, *a, **k):
            if keep(kernel_kind(name)):
                launch(name, *a, **k)

        with launches_through(be.ops, filtered):
            return capture_as_served(be, lambda: dg.record(True), "decode_kinds")[0]

    def per_step_us(g: Graph) -> float:
        return round(replay_ms(be, dg, g, token, pos, steps) * 1e3, 2)

    out: dict = {"full_us": per_step_us(graph_of(lambda k: True)), "kinds": {}}
    for kind, count in sorted(kinds.items()):
        only = per_step_us(graph_of(lambda k, kind=kind: k == kind))
        without = per_step_us(graph_of(lambda k, kind=kind: k != kind))
        out["kinds"][kind] = {"count": count, "only_us": only, "only_us_each": round(only / count, 2),
                              "without_us": without}
    return out


DECODE_LENGTHS = (160, 1024, 4096)


def decode_at_lengths(be, model, lengths=DECODE_LENGTHS, steps: int = 32) -> dict:
    """GPU microseconds per decode step (graph as served, sampling on) from each sequence
    length, `steps` steps chained: a fresh graph and a zeroed cache of max(lengths) + steps
    positions (zero K/V rows: times only)."""
    cap = max(lengths) + steps + 1
    cache = model.new_cache(cap)
    try:
        dg = be.decode_graph(model, cap)
        dg.bind(cache)
        dg.step(0, 0)  # captures
        out = {"steps": steps, "splits": dg.n_splits}
        for n in lengths:
            out[f"{n}_us"] = round(replay_ms(be, dg, dg.graph(True), 0, n, steps) * 1e3, 2)
        return out
    finally:
        be.free_kv(cache)


def decode_projections(shape: dict) -> dict[str, tuple[int, int, str]]:
    """name -> (N rows, K columns, mode) of one layer's decode GEMVs and the LM head, from an
    HF config dict (bench_models.SHAPES)."""
    d, f, v = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    h, kv = shape["num_attention_heads"], shape["num_key_value_heads"]
    hd = shape.get("head_dim") or d // h
    return {"qkv": ((h + 2 * kv) * hd, d, "norm_store"), "o": (d, h * hd, "residual"),
            "gate_up": (2 * f, d, "norm_swiglu"), "down": (d, f, "residual"), "lm_head": (v, d, "norm_store")}


def gemv_sweep(be, shape: dict, seed: int = 0, configs=GEMV_CONFIGS, launches: int = LAUNCHES_PER_GRAPH,
               replays: int = REPLAYS, flush_bytes: int | None = None) -> dict:
    """Every projection of `shape` under every GEMV config: same results, then time and GB/s
    (up to `launches` distinct copies of the weight per graph, from a flushed L2)."""
    rng = np.random.default_rng(seed)
    out: dict = {}
    flush = L2Flush(be, flush_bytes)
    for proj, (N, K, mode) in decode_projections(shape).items():
        block = rng.standard_normal((min(N, 1024), K), dtype=np.float32) / np.float32(np.sqrt(K))
        W = be.upload(np.resize(block, (N, K)))  # tiled rows: 1 GB of host randoms is not the point
        copies = [W]  # distinct matrices, each read once per replay (like a layer's per step)
        for _ in range(min(launches, max(1, COPIES_BYTES // W.nbytes)) - 1):
            c = be._empty(W.shape, W.dtype)
            copy_dtod(c.ptr, W.ptr, W.nbytes, be.stream)
            copies.append(c)
        norm_w = be.upload(1.0 + 0.1 * rng.standard_normal(K, dtype=np.float32)) if mode.startswith("norm") else None
        heuristic, timed = time_gemv_configs(be, copies, norm_w, mode.removeprefix("norm_"), configs, replays, seed,
                                             flush)
        row = {"shape": [N, K], "mode": mode, "weight_mb": round(N * K * 2 / 1e6, 2),
               "chosen": config_name(*heuristic), "configs": {}}
        for cfg, t in timed.items():
            row["configs"][config_name(*cfg)] = {"us": round(t["us"], 3), "gb_s": round(N * K * 2 / t["us"] / 1e3, 1),
                                                 "max_rel_err": t["max_rel_err"]}
        best = min(row["configs"], key=lambda k: row["configs"][k]["us"])
        row.update(best=best, best_us=row["configs"][best]["us"], chosen_us=row["configs"][row["chosen"]]["us"],
                   same_results=all(c["max_rel_err"] <= SAME_RESULT_TOL for c in row["configs"].values()))
        out[proj] = row
    return out


def summary_lines(probes: dict) -> list[str]:
    """Lines for gpu_check's summary table."""
    lines = []
    node = probes.get("graph_node", {})
    if node:
        lines.append(f"  graph node: {node.get('plain_us')} us plain, {node.get('pdl_us', '-')} us with PDL")
    for name, p in probes.items():
        if name == "graph_node" or not isinstance(p, dict):
            continue
        if "error" in p:
            lines.append(f"  {name}: probes failed: {p['error']}")
            continue
        dk = p.get("decode_kinds", {})
        if dk.get("kinds"):
            parts = ", ".join(f"{k} {v['only_us']} us alone ({v['count']}x, {v['only_us_each']} each), "
                              f"step without it {v['without_us']}" for k, v in dk["kinds"].items())
            lines.append(f"  {name} step {dk['full_us']} us by kind: {parts}")
        dl = p.get("decode_at_lengths", {})
        if dl:
            lens = ", ".join(f"{k[:-3]}: {v} us" for k, v in dl.items() if k.endswith("_us"))
            lines.append(f"  {name} decode step by sequence length ({dl.get('splits')} splits at most): {lens}")
        ab = p.get("decode_ab", {})
        if ab:
            lines.append(f"  {name} decode step on the GPU: {ab.get('served_ms')} ms as served; "
                         f"{ab.get('plain_edges_ms', '-')} ms with plain edges, "
                         f"{ab.get('heuristic_gemv_ms', '-')} ms with the heuristic GEMV configs")
        for proj, row in p.get("gemv", {}).items():
            chosen, best = row["configs"][row["chosen"]], row["configs"][row["best"]]
            flag = "" if row["same_results"] else "  RESULTS DIFFER"
            lines.append(f"  {name} {proj:7s} {row['shape'][0]}x{row['shape'][1]}: {row['chosen']} "
                         f"{chosen['us']} us ({chosen['gb_s']} GB/s); fastest {row['best']} {best['us']} us{flag}")
    return lines

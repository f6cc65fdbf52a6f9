"""End to end on tiny models (conftest.py's `models`), in each of its modes: the CUDA forward
pass and the decode graph give the numpy backend's greedy tokens; a divergence is allowed only where numpy's top-2 logit margin
is below the bf16 tolerance, and each one is reported. Graph replay equals the same launches
made one by one."""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.runtime.engine.sampler import log_softmax, token_stats

from .parity import (
    assert_close,
    assert_greedy_agrees,
    assert_teacher_forced,
    graph_greedy,
    last_logits,
    margin_tolerance,
    numpy_greedy,
    report,
    top2_margin,
)

PROMPT_LEN, STEPS, CAPACITY = 11, 24, 64


def _prompt(cfg) -> np.ndarray:
    return np.random.default_rng(0).integers(3, cfg.vocab_size, PROMPT_LEN).astype(np.int32)


def _numpy_greedy(cpu_model, cfg):
    return numpy_greedy(cpu_model, _prompt(cfg), STEPS, CAPACITY)


def test_raw_loader_uploads_the_same_weights(models):
    cfg, _, ours, raw = models
    for a, b in ((ours.embed, raw.embed), (ours.layers[0].qkv, raw.layers[0].qkv),
                 (ours.layers[-1].gate_up, raw.layers[-1].gate_up), (ours.final_norm, raw.final_norm)):
        assert np.array_equal(ours.backend.to_host(a), raw.backend.to_host(b))


def test_forward_matches_numpy_teacher_forced(models):
    cfg, cpu_model, gpu_model, _ = models
    tokens, ref_logits = _numpy_greedy(cpu_model, cfg)
    assert_teacher_forced(gpu_model, _prompt(cfg), tokens, ref_logits, CAPACITY, "forward", {"arch": cfg.arch})


def _graph_for(gpu_model, cfg):
    dg = gpu_model.backend.decode_graph(gpu_model, CAPACITY)
    cache = gpu_model.new_cache(CAPACITY)
    logits = last_logits(gpu_model, _prompt(cfg), 0, cache)
    dg.bind(cache)
    return dg, cache, logits


@pytest.mark.parametrize("which", ["forward-model", "raw-loader-model"])
def test_decode_graph_greedy_matches_numpy(models, which):
    cfg, cpu_model, gpu_model, raw_model = models
    model = gpu_model if which == "forward-model" else raw_model
    tokens, ref_logits = _numpy_greedy(cpu_model, cfg)
    dg, cache, prefill_logits = _graph_for(model, cfg)
    first = int(np.argmax(prefill_logits))
    assert first == tokens[0] or top2_margin(ref_logits[0]) < margin_tolerance(ref_logits[0])
    # teacher-forced: the graph's logits at every step
    for step, tok in enumerate(tokens):
        g = dg.step_logits(tok, PROMPT_LEN + step)
        r = ref_logits[step + 1]
        assert_close(g, r, 2e-2, margin_tolerance(r), f"graph logits at step {step}")
    # free-running: GPU sampling inside the graph, chained through device memory
    got = [first]
    for step in range(STEPS - 1):
        tok, logprob, entropy, margin = dg.step(got[-1], PROMPT_LEN + step) if step == 0 else dg.step()
        got.append(tok)
    for step, (g, r) in enumerate(zip(got, tokens)):
        if g != r:
            m, tol = top2_margin(ref_logits[step]), margin_tolerance(ref_logits[step])
            assert m < tol, f"{cfg.arch}: greedy token {step} differs ({g} vs {r}) with numpy margin {m:.4g} >= {tol:.4g}"
            report({"test": "decode_graph", "arch": cfg.arch, "step": step, "numpy_margin": m, "tol": tol})
            break  # the sequences legitimately part here


def test_graph_replay_equals_launches_one_by_one(models):
    cfg, _, gpu_model, _ = models
    dg, cache, logits = _graph_for(gpu_model, cfg)
    tok = int(np.argmax(logits))
    eager = dg.step_logits(tok, PROMPT_LEN, use_graph=False)
    graph = dg.step_logits(tok, PROMPT_LEN, use_graph=True)
    assert np.array_equal(eager, graph)
    a = dg.step(tok, PROMPT_LEN, use_graph=False)
    b = dg.step(tok, PROMPT_LEN, use_graph=True)
    assert a == b
    steps = [dg.step(tok, PROMPT_LEN)] + [dg.step() for _ in range(9)]
    chained = dg.generate(tok, PROMPT_LEN, 10)
    assert [s[0] for s in steps] == [c[0] for c in chained]


def test_graph_sampling_stats_match_the_host(models):
    cfg, _, gpu_model, _ = models
    dg, cache, logits = _graph_for(gpu_model, cfg)
    tok = int(np.argmax(logits))
    host_logits = dg.step_logits(tok, PROMPT_LEN)
    nxt, logprob, entropy, margin = dg.step(tok, PROMPT_LEN)
    ref = token_stats(log_softmax(host_logits), int(np.argmax(host_logits)))
    assert nxt == int(np.argmax(host_logits))
    assert abs(logprob - ref.logprob) < 1e-3 and abs(entropy - ref.entropy) < 1e-3 and abs(margin - ref.margin) < 1e-4


def test_prefill_graph_matches_numpy_and_chains_into_decode(models, monkeypatch):
    from inloop.services.runtime.backends.cuda import prefill

    cfg, cpu_model, gpu_model, _ = models
    tokens, ref_logits = _numpy_greedy(cpu_model, cfg)
    runner = gpu_model.backend.graph_runner(gpu_model, CAPACITY)
    cache = gpu_model.new_cache(CAPACITY)
    g = runner.prefill_logits(_prompt(cfg), 0, cache)
    assert_close(g, ref_logits[0], 2e-2, margin_tolerance(ref_logits[0]), "prefill graph logits")
    pg = runner.prefill_graph(PROMPT_LEN)
    eager = pg.logits_for(list(_prompt(cfg)), 0, cache, use_graph=False)
    assert np.array_equal(eager, pg.logits_for(list(_prompt(cfg)), 0, cache))
    got = graph_greedy(runner, _prompt(cfg), STEPS, cache)
    assert_greedy_agrees(got, tokens, ref_logits, f"{cfg.arch} runner", {"test": "runner", "arch": cfg.arch})
    # a prompt longer than the largest bucket runs in chunks through the cache
    monkeypatch.setattr(prefill, "BUCKETS", (16,))
    long_ids = np.random.default_rng(3).integers(3, cfg.vocab_size, 40).astype(np.int32)
    chunked = gpu_model.backend.graph_runner(gpu_model, CAPACITY)
    c2 = gpu_model.new_cache(CAPACITY)
    ref_cache = cpu_model.new_cache(CAPACITY)
    ref = last_logits(cpu_model, long_ids, 0, ref_cache)
    assert_close(chunked.prefill_logits(long_ids, 0, c2), ref, 2e-2, margin_tolerance(ref), "chunked prefill")


def test_prefill_all_rows_matches_numpy_in_chunks(models, monkeypatch):
    """Forced text with per-token uncertainty: every row's logits from the ALL_ROWS prefill
    graphs, in chunks through the cache, equal numpy's full forward pass."""
    from inloop.services.runtime.backends.cuda import prefill

    cfg, cpu_model, gpu_model, _ = models
    monkeypatch.setattr(prefill, "ALL_ROWS_MAX", 16)  # 40 tokens: chunks of 16, 16, 8
    ids = np.random.default_rng(4).integers(3, cfg.vocab_size, 40).astype(np.int32)
    runner = gpu_model.backend.graph_runner(gpu_model, CAPACITY)
    got = runner.prefill_all_logits(list(ids[:3]), 0, gpu_model.new_cache(CAPACITY))  # bucket 16 alone
    assert got.shape == (3, cfg.vocab_size)
    cache = gpu_model.new_cache(CAPACITY)
    got = runner.prefill_all_logits(list(ids), 0, cache)
    b = cpu_model.backend
    ref = np.asarray(b.to_host(cpu_model.forward(b.ids(ids), b.ids(np.arange(40, dtype=np.int32)),
                                                 cpu_model.new_cache(CAPACITY), all_logits=True)))
    assert got.shape == ref.shape == (40, cfg.vocab_size)
    for i in range(40):
        assert_close(got[i], ref[i], 2e-2, margin_tolerance(ref[i]), f"row {i}")
    assert np.array_equal(runner.prefill_graph(16).all_logits_for(list(ids[:16]), 0, cache), got[:16])


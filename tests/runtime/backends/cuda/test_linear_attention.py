"""Qwen3.5's Gated DeltaNet and gated-attention ops on CUDA (kernels/linear_attention.cu through
CudaLinearAttention) against NumpyLinearAttention, in each of conftest.py's modes; then a tiny
Qwen3.5 end to end on CudaBackend against the numpy backend.

The decode step is checked against numpy's recurrence step, a prefill chunk against numpy's
chunked (WY) form, which the kernel does not follow (it runs the recurrence token by token):
the two agree to float32 rounding, which the tolerances allow. Sizes stay small: the source
mode runs every thread of every block on the CPU.
"""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.runtime.backends.cpu.linear_attention import NumpyLinearAttention
from inloop.services.runtime.backends.cuda.hybrid_step import HybridStepper
from inloop.services.runtime.backends.cuda.linear_attention import CudaLinearAttention

from .parity import (
    assert_close,
    assert_greedy_agrees,
    assert_teacher_forced,
    last_logits,
    numpy_greedy,
)

REF = NumpyLinearAttention()
RTOL, ATOL = 2e-4, 2e-5  # fp32 throughout; the sums' order differs (and prefill's form)
# (k_heads, v_heads, dk, dv, conv kernel): tiny_qwen3_5's heads; Qwen3.5's own head size (128)
SHAPES = [(2, 4, 16, 24, 4), (1, 2, 128, 128, 4), (1, 2, 40, 8, 3)]
SHAPE_IDS = ["tiny", "dk128", "dk40-k3"]


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.fixture(scope="module")
def la(gpu):
    return CudaLinearAttention(gpu)


def _layer_inputs(rng, t, k_heads, v_heads, dk, dv, kernel):
    """The projections' outputs for t rows and a layer's parameters (as qwen3_5.py makes them)."""
    conv_dim = 2 * k_heads * dk + v_heads * dv
    mixed = rand(rng, t, conv_dim)
    weight = rand(rng, conv_dim, kernel, scale=0.5)
    g, beta = REF.decay_and_beta(rand(rng, t, v_heads), rand(rng, t, v_heads), -np.exp(rand(rng, v_heads, scale=0.5)),
                                 rand(rng, v_heads, scale=0.5))
    return mixed, weight, g, beta


def _pools(rng, slots, layers, conv_dim, kernel, v_heads, dk, dv):
    """Random (non-zero) state pools [S, L, ...]: a continuing sequence's state."""
    return (rand(rng, slots, layers, conv_dim, kernel - 1),
            rand(rng, slots, layers, v_heads, dk, dv, scale=0.3))


def _rows(gpu, la, rng, spans, shape, layer=1, slots=5, layers=2):
    """gated_delta_rows on both sides from the same pools; (cuda out, numpy out, cuda pools,
    numpy pools) after the call."""
    k_heads, v_heads, dk, dv, kernel = shape
    t = max(r + n for r, n, _ in spans)
    mixed, weight, g, beta = _layer_inputs(rng, t, *shape)
    conv, rec = _pools(rng, slots, layers, mixed.shape[1], kernel, v_heads, dk, dv)
    up = gpu.upload_activation
    conv_d, rec_d = up(conv), up(rec)
    out_d = la.gated_delta_rows(up(mixed), up(g), up(beta), up(weight), *la.pool_state(conv_d, rec_d, layer),
                                spans, k_heads, dk, dv)
    out = REF.gated_delta_rows(mixed, g, beta, weight, *REF.pool_state(conv, rec, layer), spans, k_heads, dk, dv)
    return gpu.to_host(out_d), out, (gpu.to_host(conv_d), gpu.to_host(rec_d)), (conv, rec)


def _check_rows(got, ref, pools_got, pools_ref, what):
    assert_close(got, ref, RTOL, ATOL, f"{what}: output")
    assert_close(pools_got[0], pools_ref[0], 0, 0, f"{what}: conv state")  # copies of inputs, bit for bit
    assert_close(pools_got[1], pools_ref[1], RTOL, ATOL, f"{what}: recurrent state")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_decode_rows_of_several_sequences_each_with_its_slot(gpu, la, shape):
    """One token each for three sequences, slots out of order, one slot left alone."""
    rng = np.random.default_rng(1)
    spans = [(0, 1, 4), (1, 1, 0), (2, 1, 2)]
    _check_rows(*_rows(gpu, la, rng, spans, shape), "decode")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_prefill_chunks_and_decode_rows_in_one_call(gpu, la, shape):
    """A prompt chunk continuing a state, a decode row, and a chunk longer than the conv's rows
    per thread (and than the conv kernel), in one call: the batching core's mixed step."""
    rng = np.random.default_rng(2)
    spans = [(0, 3, 1), (3, 1, 3), (4, 11, 0)]
    _check_rows(*_rows(gpu, la, rng, spans, shape), "mixed")


def test_prefill_from_a_zero_state_on_a_sequence_cache(gpu, la):
    """The single-sequence cache (forward's [L, ...] state, sequence_state) from alloc_state:
    zeros, as a new sequence starts; the layer's state lands in its own place only."""
    rng = np.random.default_rng(3)
    k_heads, v_heads, dk, dv, kernel = SHAPES[0]
    mixed, weight, g, beta = _layer_inputs(rng, 6, *SHAPES[0])
    conv_d, rec_d = la.alloc_state(3, mixed.shape[1], kernel, v_heads, dk, dv)
    conv, rec = REF.alloc_state(3, mixed.shape[1], kernel, v_heads, dk, dv)
    up = gpu.upload_activation
    out_d = la.gated_delta_rows(up(mixed), up(g), up(beta), up(weight), *la.sequence_state(conv_d, rec_d, 2),
                                [(0, 6, 0)], k_heads, dk, dv)
    out = REF.gated_delta_rows(mixed, g, beta, weight, *REF.sequence_state(conv, rec, 2), [(0, 6, 0)], k_heads, dk, dv)
    _check_rows(gpu.to_host(out_d), out, (gpu.to_host(conv_d), gpu.to_host(rec_d)), (conv, rec), "sequence")
    assert not gpu.to_host(rec_d)[:2].any() and gpu.to_host(rec_d)[2].any()


def test_a_prompt_cut_into_chunks_gives_the_same_bits(gpu, la):
    """The token-by-token kernel's results do not depend on how a prompt is cut: 9 rows at once
    equal 4 + 1 + 4 (the chunked form of the reference would round differently per cut)."""
    rng = np.random.default_rng(4)
    k_heads, v_heads, dk, dv, kernel = SHAPES[0]
    mixed, weight, g, beta = _layer_inputs(rng, 9, *SHAPES[0])
    up = gpu.upload_activation
    results = []
    for cuts in ([(0, 9)], [(0, 4), (4, 5), (5, 9)]):
        conv_d, rec_d = la.alloc_state(1, mixed.shape[1], kernel, v_heads, dk, dv)
        outs = []
        for a, b in cuts:
            o = la.gated_delta_rows(up(mixed[a:b]), up(g[a:b]), up(beta[a:b]), up(weight),
                                    *la.sequence_state(conv_d, rec_d, 0), [(0, b - a, 0)], k_heads, dk, dv)
            outs.append(gpu.to_host(o))
        results.append((np.concatenate(outs), gpu.to_host(conv_d), gpu.to_host(rec_d)))
    for whole, pieces in zip(*results):
        assert np.array_equal(whole, pieces)


def test_zero_state_clears_one_slot(gpu, la):
    conv_d, rec_d = la.alloc_state(2, 8, 4, 2, 4, 4, num_seqs=3)
    rng = np.random.default_rng(5)
    conv, rec = _pools(rng, 3, 2, 8, 4, 2, 4, 4)
    conv_d, rec_d = gpu.upload_activation(conv), gpu.upload_activation(rec)
    la.zero_state(conv_d, rec_d, 1)
    REF.zero_state(conv, rec, 1)
    assert np.array_equal(gpu.to_host(conv_d), conv) and np.array_equal(gpu.to_host(rec_d), rec)


def test_bad_spans_are_refused(gpu, la):
    rng = np.random.default_rng(6)
    k_heads, v_heads, dk, dv, kernel = SHAPES[0]
    mixed, weight, g, beta = (gpu.upload_activation(a) for a in _layer_inputs(rng, 4, *SHAPES[0]))
    conv_d, rec_d = la.alloc_state(1, mixed.shape[1], kernel, v_heads, dk, dv, num_seqs=2)
    views = la.pool_state(conv_d, rec_d, 0)
    for spans in ([(0, 2, 0), (2, 2, 0)], [(0, 2, 2)], [(3, 2, 0)]):  # a slot twice; past the pool; past the rows
        with pytest.raises(AssertionError):
            la.gated_delta_rows(mixed, g, beta, weight, *views, spans, k_heads, dk, dv)


def test_decay_and_beta(gpu, la):
    rng = np.random.default_rng(7)
    a, b = rand(rng, 5, 4, scale=8.0), rand(rng, 5, 4, scale=4.0)
    a[0, 0], a[1, 1] = 25.0, -30.0  # softplus above its threshold (x itself), and deep below
    neg_a, dt_bias = -np.exp(rand(rng, 4)), rand(rng, 4)
    g_d, beta_d = la.decay_and_beta(*(gpu.upload_activation(x) for x in (a, b, neg_a, dt_bias)))
    g, beta = REF.decay_and_beta(a, b, neg_a, dt_bias)
    assert_close(gpu.to_host(g_d), g, 1e-6, 1e-7, "g")
    assert_close(gpu.to_host(beta_d), beta, 1e-6, 1e-7, "beta")


@pytest.mark.parametrize("t,heads,dv", [(1, 4, 24), (3, 2, 128)])
def test_gated_rmsnorm(gpu, la, t, heads, dv):
    rng = np.random.default_rng(8)
    x, z, w = rand(rng, t, heads, dv), rand(rng, t, heads, dv, scale=3.0), 1 + rand(rng, dv, scale=0.1)
    got = la.gated_rmsnorm(*(gpu.upload_activation(a) for a in (x, z, w)), 1e-6)
    assert_close(gpu.to_host(got), REF.gated_rmsnorm(x, z, w, 1e-6), 1e-5, 1e-6, "gated rmsnorm")


@pytest.mark.parametrize("heads,kv,hd,rd", [(4, 2, 32, 8), (2, 1, 256, 64), (3, 1, 64, 64)])
def test_partial_rope(gpu, la, heads, kv, hd, rd):
    rng = np.random.default_rng(9)
    positions = np.array([0, 1, 17, 1000, 4095], np.int32)
    qkv = rand(rng, len(positions), (heads + 2 * kv) * hd)
    qkv_d = gpu.upload_activation(qkv)
    la.partial_rope(qkv_d, gpu.ids(positions), heads, kv, hd, rd, 1e7)
    REF.partial_rope(qkv, positions, heads, kv, hd, rd, 1e7)
    got = gpu.to_host(qkv_d)
    assert_close(got, qkv, 1e-5, 1e-5, "partial rope")
    rest = np.ones((heads + 2 * kv, hd), bool)
    rest[: heads + kv, :rd] = False  # what must pass untouched: the unrotated dims and the v heads
    assert np.array_equal(got.reshape(len(positions), -1, hd)[:, rest], qkv.reshape(len(positions), -1, hd)[:, rest])


def test_output_gate(gpu, la):
    rng = np.random.default_rng(10)
    attn, gate = rand(rng, 3, 96), rand(rng, 3, 96, scale=5.0)
    got = la.output_gate(gpu.upload_activation(attn), gpu.upload_activation(gate))
    assert_close(gpu.to_host(got), REF.output_gate(attn, gate), 1e-6, 1e-7, "output gate")


def test_the_layer_chain_captured_with_pdl_gives_the_eager_bits(gpu, la):
    """A DeltaNet layer's kernels and the gated attention's two, captured as one graph with PDL
    edges (as a decode graph would run them), equal the same launches made one by one. On the
    source emulator each launch then runs with what the kernels before it wrote closed until
    its griddepcontrol.wait, so a read of those bytes (or any write) before the wait stops it."""
    from inloop.services.runtime.backends.cuda.step_graph import capture

    rng = np.random.default_rng(12)
    k_heads, v_heads, dk, dv, kernel = SHAPES[0]
    spans = [(0, 1, 2), (1, 3, 0)]
    mixed, weight, _, _ = _layer_inputs(rng, 4, *SHAPES[0])
    up = gpu.upload_activation
    a, b, z, qkv = rand(rng, 4, v_heads), rand(rng, 4, v_heads), rand(rng, 4, v_heads * dv), rand(rng, 4, 8 * 32)
    inputs = [up(x) for x in (mixed, weight, a, b, -np.exp(rand(rng, v_heads)), rand(rng, v_heads),
                              z, 1 + rand(rng, dv, scale=0.1), qkv)]
    mixed_d, weight_d, a_d, b_d, neg_a_d, dt_d, z_d, norm_d, qkv_d = inputs
    positions, table = gpu.ids([5, 6, 7, 8]), la._spans(spans, 4, 3)
    conv, rec = _pools(rng, 3, 1, mixed.shape[1], kernel, v_heads, dk, dv)
    L = la.launch

    def record(conv_d, rec_d, qkv_x, g, beta, conv_out, out, normed, gated):
        L.decay_beta(a_d, b_d, neg_a_d, dt_d, g, beta)
        views = la.pool_state(conv_d, rec_d, 0)
        L.conv(mixed_d, weight_d, views[0], table, 2, 3, conv_out)
        L.recurrence(conv_out, g, beta, views[1], table, 2, out, k_heads, dk, dv)
        L.gated_rmsnorm(out, z_d.reshape(4, v_heads, dv), norm_d, normed, 1e-6)
        L.output_gate(normed.reshape(4, v_heads * dv), z_d, gated)
        L.partial_rope(qkv_x, positions, 4, 2, 32, 8, 1e7)

    results = []
    for graph in (False, True):
        # fresh buffers per run: the hazard check closes the bytes a kernel changed, and a
        # buffer already holding the eager run's values would not change
        tensors = (up(conv), up(rec), up(qkv), *(gpu._empty(shape) for shape in (
            (4, v_heads), (4, v_heads), mixed.shape, (4, v_heads, dv), (4, v_heads, dv), (4, v_heads * dv))))
        if graph:
            capture(gpu, lambda: record(*tensors), pdl=gpu.pdl).launch(gpu.stream)
        else:
            record(*tensors)
        conv_d, rec_d, qkv_x, _, _, _, out, _, gated = tensors
        results.append([gpu.to_host(t) for t in (out, gated, conv_d, rec_d, qkv_x)])
    for eager, replay in zip(*results):
        assert np.array_equal(eager, replay)
    if hasattr(gpu, "fake_driver"):
        assert gpu.pdl and ("gdn_recurrence", True) in gpu.fake_driver.launches


# ---- a tiny Qwen3.5 end to end ---------------------------------------------------------------------
PROMPT_LEN, STEPS, CAPACITY = 9, 6, 32


@pytest.fixture(scope="module")
def qwen35_dir(tmp_path_factory):
    """A tiny bf16 Qwen3.5 with both layer kinds (linear, linear, full, linear)."""
    from inloop.services.runtime.model.tiny_qwen3_5 import make_tiny_qwen3_5

    layers = ("linear_attention", "linear_attention", "full_attention", "linear_attention")
    return make_tiny_qwen3_5(tmp_path_factory.mktemp("qwen35"), layers, vision=False, seed=11, dtype="bfloat16")


@pytest.fixture(scope="module")
def qwen35(qwen35_dir, cpu, gpu):
    """(cfg, the model on numpy, the same weights on `gpu`)."""
    from inloop.services.runtime.model.architectures import build_model, read_config
    from inloop.services.runtime.model.weights import Weights

    cfg = read_config(qwen35_dir)
    return cfg, build_model(cfg, cpu, Weights(qwen35_dir)), build_model(cfg, gpu, Weights(qwen35_dir))


def _prompt(cfg):
    return np.random.default_rng(0).integers(3, cfg.vocab_size, PROMPT_LEN).astype(np.int32)


def test_tiny_qwen3_5_prefill_and_decode_match_numpy(qwen35):
    """Teacher-forced on numpy's greedy tokens: the prefill's and every decode step's logits
    within the CUDA tests' tolerance, the argmax equal wherever numpy's margin is clear."""
    cfg, cpu_model, gpu_model = qwen35
    assert isinstance(gpu_model.ops, CudaLinearAttention)
    tokens, ref_logits = numpy_greedy(cpu_model, _prompt(cfg), STEPS, CAPACITY)
    assert_teacher_forced(gpu_model, _prompt(cfg), tokens, ref_logits, CAPACITY, "qwen3_5_forward", {})


def test_tiny_qwen3_5_greedy_agrees_with_numpy(qwen35):
    """Free-running greedy on CUDA (prefill in two chunks, then one token at a time) gives
    numpy's tokens, or parts from them only where numpy's top-2 margin is within tolerance."""
    cfg, cpu_model, gpu_model = qwen35
    tokens, ref_logits = numpy_greedy(cpu_model, _prompt(cfg), STEPS, CAPACITY)
    cache = gpu_model.new_cache(CAPACITY)
    prompt = _prompt(cfg)
    last_logits(gpu_model, prompt[:5], 0, cache)
    logits = last_logits(gpu_model, prompt[5:], 5, cache)
    got = []
    for step in range(STEPS):
        got.append(int(np.argmax(logits)))
        logits = last_logits(gpu_model, [got[-1]], PROMPT_LEN + step, cache)
    assert_greedy_agrees(got, tokens, ref_logits, "tiny qwen3.5", {"test": "qwen3_5_greedy"})


def test_the_engine_serves_tiny_qwen3_5_on_cuda(qwen35_dir, gpu, cpu):
    """Engine.load on CudaBackend: no graphs for a hybrid model, so the batching core serves it
    through Qwen35Model.forward_paged (the paged pool for the full-attention layers, a state
    slot per sequence); greedy output equals the numpy engine's, or parts where numpy's margin
    is within tolerance; concurrent requests through the Scheduler get the tokens each gets
    alone (batched_linear and per-sequence spans: a row's bits do not depend on the batch)."""
    from inloop.services.runtime.engine.engine import BatchConfig, Engine
    from inloop.services.runtime.service.scheduler import Scheduler

    from .test_engine_on_cuda import _chat, assert_same_greedy

    # a small pool: the double keeps device memory in host memory
    ours = Engine.load(qwen35_dir, backend=gpu, batch=BatchConfig(kv_cache_memory=16 << 20))
    ref = Engine.load(qwen35_dir, backend=cpu)
    assert ours.runner.name == "forward" and isinstance(ours.model.ops, CudaLinearAttention)
    assert isinstance(ours.core.stepper, HybridStepper) and ours.info["kv_cache"]["state_slots"] > 0
    request = _chat(max_tokens=5)
    a, b = ours.generate(request), ref.generate(request)
    assert a.completion_tokens == b.completion_tokens == 5
    assert_same_greedy(a, b, ref, ref.prompt_ids(request), "qwen3.5 engine")
    reqs = [_chat(t, max_tokens=6, ignore_eos=True) for t in ("Hi", "Name three fruits", "Once upon a time", "Count")]
    alone = [ours.generate(r).token_ids for r in reqs]
    sched = Scheduler(lambda: ours, 8).start()
    try:
        sched.ready.result(timeout=60)
        together = [h.future.result(timeout=300).token_ids for h in [sched.submit(r) for r in reqs]]
    finally:
        sched.close()
    assert together == alone
    assert len(ours.core.manager.states.free) == ours.core.manager.states.num_slots   # every slot given back
    assert ours.core.stepper.replays > 0   # decode steps replayed bucket graphs


def test_the_hybrid_stepper_gives_forward_pageds_bits(qwen35, gpu):
    """The core's CUDA step for Qwen3.5 (hybrid_step.py) against Qwen35Model.forward_paged op by
    op, each over its own pool: two prompts in one eager step, then decode steps through the
    bucket graphs (2 rows, then 1 row padded to its bucket, then 3 rows padded to 4, a new
    one-token prompt among them): every row's logits the same bits, every state the same."""
    from inloop.services.runtime.engine.core import _slots

    cfg, _, model = qwen35
    pools = [model.alloc_paged_kv(32, 4, 6) for _ in range(2)]
    stepper = gpu.paged_stepper(model, pools[1], 64)
    blocks = {"a": [7, 3, 11, 0], "b": [5, 9, 2, 14], "c": [20, 21, 22, 23]}
    slot = {"a": 4, "b": 1, "c": 3}
    rng = np.random.default_rng(13)
    prompts = {"a": rng.integers(3, cfg.vocab_size, 9).tolist(), "b": rng.integers(3, cfg.vocab_size, 5).tolist(),
               "c": rng.integers(3, cfg.vocab_size, 1).tolist()}
    length = {"a": 0, "b": 0, "c": 0}

    def step(parts):   # parts: (name, ids); every row's logits from both ways
        seqs = [_slots(blocks[n], 4, len(ids), length[n] + len(ids), slot[n]) for n, ids in parts]
        ids = np.concatenate([np.asarray(i, np.int32) for _, i in parts])
        pos = np.concatenate([np.arange(length[n], length[n] + len(i), dtype=np.int32) for n, i in parts])
        rows = np.arange(len(ids), dtype=np.int32)
        ref = gpu.to_host(model.forward_paged(gpu.ids(ids), gpu.ids(pos), pools[0], seqs, gpu.ids(rows)))
        got = stepper.run(ids, seqs, rows)
        for n, i in parts:
            length[n] += len(i)
        return got, ref

    for parts in ([("a", prompts["a"]), ("b", prompts["b"])], [("a", [5]), ("b", [6])], [("b", [7])],
                  [("b", [8]), ("c", prompts["c"]), ("a", [9])]):
        got, ref = step(parts)
        assert np.array_equal(got, ref), f"{[n for n, _ in parts]}: {np.abs(got - ref).max():.3g} from forward_paged"
    assert sorted(stepper.graphs) == [1, 2, 4] and stepper.eager_steps == 1
    for a, b in ((pools[0].conv, pools[1].conv), (pools[0].recurrent, pools[1].recurrent)):
        assert np.array_equal(gpu.to_host(a), gpu.to_host(b))

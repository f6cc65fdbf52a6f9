"""Scaled RoPE (linear, llama3, yarn, dynamic; both config forms) and SmolLM3's layers without RoPE on
the CUDA backend, against the numpy backend: the op path, the prefill and decode graphs and the
engine, at positions past the original max position. The graphs read RoPE's cos/sin from a table
built from the model's own frequencies (ops.rope_table), and a layer without RoPE passes its
kernels no rotation; each check first shows that the numpy reference would notice a wrong
rotation (plain RoPE, or RoPE on every layer) at these positions."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inloop.services.runtime.backends.cpu.backend import rope_cos_sin
from inloop.services.runtime.backends.cuda.rope_rows import HostRope
from inloop.services.runtime.engine.engine import BatchConfig, Engine
from inloop.services.runtime.model.config import ModelConfig
from inloop.services.runtime.model.rope import RopeScaling, rope_inv_freq
from inloop.services.runtime.model.tiny import make_tiny
from inloop.services.runtime.model.transformer import Transformer
from inloop.services.runtime.model.weights import Weights

from .parity import assert_close, assert_greedy_agrees, graph_greedy, last_logits, margin_tolerance, numpy_greedy
from .test_engine_on_cuda import _chat, assert_same_greedy

PROMPT_LEN, STEPS, CAPACITY = 11, 14, 64  # positions 0..24; every scaling's original length is 16 or less

# name -> (arch, config overrides). head_dim 16: the llama3 wavelengths (6.3 .. 19869 positions)
# straddle 16/4 .. 16, so it keeps, ramps and divides frequencies.
MODELS = {
    "linear": ("llama", {"rope_scaling": {"type": "linear", "factor": 4.0}, "max_position_embeddings": 16}),
    "llama3": ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 16},
                         "max_position_embeddings": 128}),
    "yarn": ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}}),
    "yarn-explicit": ("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                                                    "original_max_position_embeddings": 16, "beta_fast": 16,
                                                    "beta_slow": 2, "attention_factor": 1.25, "truncate": False}}),
    # dynamic: the frequencies follow each call's length past max_position_embeddings (8: the
    # prompt's prefill is past it; 14: the decode steps cross it)
    "dynamic": ("llama", {"rope_scaling": {"type": "dynamic", "factor": 8.0}, "max_position_embeddings": 8}),
    "dynamic-crosses": ("llama", {"rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0},
                                  "max_position_embeddings": PROMPT_LEN + 3}),
    "smollm3": ("smollm3", {}),  # 4 layers, the 4th without RoPE
}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request, tmp_path_factory, cpu, gpu):
    """(name, directory, config, numpy Transformer, the model CudaBackend.load_model gives)."""
    name = request.param
    arch, config = MODELS[name]
    d = make_tiny(arch, tmp_path_factory.mktemp(name), seed=11, dtype="bfloat16", config=config)
    cfg = ModelConfig.from_dir(d)
    return name, d, cfg, Transformer(cfg, cpu, Weights(d)), gpu.load_model(cfg, Weights(d))


def _prompt(cfg) -> np.ndarray:
    return np.random.default_rng(1).integers(3, cfg.vocab_size, PROMPT_LEN).astype(np.int32)


def _numpy_greedy(cpu_model, cfg):
    return numpy_greedy(cpu_model, _prompt(cfg), STEPS, CAPACITY)


def _teacher_forced(model, cfg, tokens):
    cache = model.new_cache(CAPACITY)
    out = [last_logits(model, _prompt(cfg), 0, cache)]
    return out + [last_logits(model, [t], PROMPT_LEN + s, cache) for s, t in enumerate(tokens)]


def _assert_logits(got, ref, what):
    for step, (g, r) in enumerate(zip(got, ref)):
        assert_close(g, r, 2e-2, margin_tolerance(r), f"{what}: logits at step {step} (position {PROMPT_LEN + step - 1})")


def test_the_reference_tells_a_wrong_rotation_apart(model, cpu):
    """What the parity checks below would miss if it held: numpy with plain RoPE (or RoPE on every
    layer) lands outside their tolerance at these positions."""
    name, d, cfg, cpu_model, _ = model
    wrong = (dataclasses.replace(cfg, use_rope=(True,) * cfg.num_layers) if not all(cfg.use_rope)
             else dataclasses.replace(cfg, rope=RopeScaling(theta=cfg.rope.theta)))
    tokens, ref = _numpy_greedy(cpu_model, cfg)
    other = _teacher_forced(Transformer(wrong, cpu, Weights(d)), cfg, tokens)
    with pytest.raises(AssertionError):
        _assert_logits(other, ref, name)


def test_op_path_matches_numpy(model):
    name, _, cfg, cpu_model, gpu_model = model
    tokens, ref = _numpy_greedy(cpu_model, cfg)
    _assert_logits(_teacher_forced(gpu_model, cfg, tokens), ref, f"{name} op path")


def test_graphs_match_numpy_teacher_forced_and_greedy(model):
    name, _, cfg, cpu_model, gpu_model = model
    tokens, ref = _numpy_greedy(cpu_model, cfg)
    runner = gpu_model.backend.graph_runner(gpu_model, CAPACITY)
    cache = gpu_model.new_cache(CAPACITY)
    got = [runner.prefill_logits(_prompt(cfg), 0, cache)]
    got += [runner.decode_logits(t, PROMPT_LEN + s, cache) for s, t in enumerate(tokens)]
    _assert_logits(got, ref, f"{name} graphs")
    # free-running: the prefill graph samples the first token, the decode graph the rest
    cache = gpu_model.new_cache(CAPACITY)
    out = graph_greedy(runner, _prompt(cfg), STEPS, cache)
    assert_greedy_agrees(out, tokens, ref, name, {"test": "rope_scaling", "model": name})


def test_a_prefill_in_chunks_matches_numpy(model, monkeypatch):
    """A prompt in 16-token chunks: the second chunk's rows (16..29) all lie past the original
    max position. Numpy runs the same chunks (dynamic RoPE rotates a call's rows by the call's
    length, so the chunks are part of the result). Then a short prompt at position 0 again:
    dynamic RoPE's prefill rows are rewritten per call, not left from the longer one."""
    from inloop.services.runtime.backends.cuda import prefill

    name, _, cfg, cpu_model, gpu_model = model
    monkeypatch.setattr(prefill, "BUCKETS", (16,))
    ids = np.random.default_rng(2).integers(3, cfg.vocab_size, 30).astype(np.int32)
    runner = gpu_model.backend.graph_runner(gpu_model, CAPACITY)
    ref_cache = cpu_model.new_cache(CAPACITY)
    ref = [last_logits(cpu_model, ids[:16], 0, ref_cache), last_logits(cpu_model, ids[16:], 16, ref_cache)]
    cache = gpu_model.new_cache(CAPACITY)
    got = [runner.prefill_logits(ids[:16], 0, cache), runner.prefill_logits(ids[16:], 16, cache)]
    _assert_logits(got, ref, f"{name}: chunked prefill")
    one_call = runner.prefill_logits(ids, 0, gpu_model.new_cache(CAPACITY))  # the runner's own chunks
    assert np.array_equal(one_call, got[1])
    short = last_logits(cpu_model, ids[:5], 0, cpu_model.new_cache(CAPACITY))
    assert_close(runner.prefill_logits(ids[:5], 0, gpu_model.new_cache(CAPACITY)), short, 2e-2,
                 margin_tolerance(short), f"{name}: short prefill after a long one")


def test_engine_serves_it_with_numpy_greedy_tokens(model, gpu, cpu):
    name, d, *_ = model
    ours, ref = Engine.load(d, backend=gpu), Engine.load(d, backend=cpu)
    assert ours.runner.name == "cuda-graphs"  # the CUDA fast path, not the op-by-op fallback
    req = _chat(max_tokens=24)
    a, b = ours.generate(req), ref.generate(req)
    assert len(ref.prompt_ids(req)) + len(b.token_ids) > 16  # past every scaling's original length
    assert_same_greedy(a, b, ref, ref.prompt_ids(req), f"{name} engine")


def test_the_batching_core_serves_it_with_numpy_greedy_tokens(model, gpu, cpu):
    """--batching on: the core's CUDA step (paged_step.py) rotates by the same table and skips
    the same layers; dynamic RoPE (frequencies per call) is refused for the paged pool."""
    name, d, *_ = model
    batch = BatchConfig(batching="on", block_size=4, kv_cache_memory=4 << 20)   # a small pool on the double
    if name.startswith("dynamic"):
        with pytest.raises(ValueError, match="dynamic RoPE"):
            Engine.load(d, backend=gpu, batch=batch)
        return
    ours, ref = Engine.load(d, backend=gpu, batch=batch), Engine.load(d, backend=cpu)
    assert ours.core is not None and ours.core.stepper is not None
    req = _chat(max_tokens=24)
    a, b = ours.generate(req), ref.generate(req)
    assert len(ref.prompt_ids(req)) + len(b.token_ids) > 16  # past every scaling's original length
    assert_same_greedy(a, b, ref, ref.prompt_ids(req), f"{name} batching core")


def test_scaled_table_holds_the_reference_cos_sin(gpu):
    """ops.rope_table for a scaled RoPE: rope_cos_sin's values, bit for bit, one (cos, sin) pair
    per position and frequency; built once per rotation. Dynamic RoPE's decode rows: each
    position with the frequencies of its own length."""
    rope = RopeScaling(rope_type="yarn", theta=10000.0, factor=4.0, original_max_position=16)
    inv_freq, scaling = rope_inv_freq(rope, 32)
    table, rows = gpu.ops.rope_table(32, 10000.0, 40, HostRope(rope, 32))
    assert rows >= 40 and scaling != 1.0
    cos, sin = rope_cos_sin(np.arange(rows), 32, 10000.0, inv_freq, scaling)
    got = gpu.to_host(table)[:rows * 32].reshape(rows, 16, 2)
    assert np.array_equal(got[..., 0], cos) and np.array_equal(got[..., 1], sin)
    assert gpu.ops.rope_table(32, 10000.0, 20, HostRope(rope, 32))[0] is table
    plain = gpu.ops.rope_table(32, 10000.0, 40)[0]
    assert plain is not table and not np.array_equal(gpu.to_host(plain)[:rows * 32], gpu.to_host(table)[:rows * 32])
    dynamic = RopeScaling(rope_type="dynamic", theta=10000.0, factor=4.0, original_max_position=16)
    table, rows = gpu.ops.rope_table(32, 10000.0, 40, HostRope(dynamic, 32))
    got = gpu.to_host(table)[:rows * 32].reshape(rows, 16, 2)
    for p in (0, 15, 16, 39):  # plain up to the original length, then each length's own
        f = rope_inv_freq(dynamic, 32, p + 1) if p + 1 > 16 else rope_inv_freq(RopeScaling(), 32)
        c, s_ = rope_cos_sin(np.array([p]), 32, 10000.0, *f)
        assert np.array_equal(got[p, :, 0], c[0]) and np.array_equal(got[p, :, 1], s_[0]), p
    assert not np.array_equal(got[39], got[38])

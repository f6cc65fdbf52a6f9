"""Qwen3.5 loading and its per-sequence state, on our side alone (HF parity is in
test_qwen3_5_parity.py): the wrapper layout, chunked prefill, config errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inloop.services.runtime.backends.cpu.backend import NumpyBackend
from inloop.services.runtime.model.architectures import read_config
from inloop.services.runtime.model.config import ModelLoadError
from inloop.services.runtime.model.qwen3_5 import Qwen35Model, linear_attention_ops
from inloop.services.runtime.model.qwen3_5_config import Qwen35Config
from inloop.services.runtime.model.tiny_qwen3_5 import make_tiny_qwen3_5
from inloop.services.runtime.model.weights import Weights

L, F = "linear_attention", "full_attention"


def _load(model_dir) -> Qwen35Model:
    return Qwen35Model(read_config(model_dir), NumpyBackend(), Weights(model_dir))


def _feed(model, ids, chunks):
    """Feed ids in chunks of the given sizes (the rest last); the last chunk's logits [V]."""
    cache = model.new_cache(len(ids) + 1)
    start = 0
    for size in [*chunks, len(ids)]:
        part = ids[start:start + size] if size else []
        if not part:
            continue
        pos = np.arange(start, start + len(part), dtype=np.int32)
        logits = model.forward(np.array(part, np.int32), pos, cache)
        start += len(part)
        cache.length = start
        if start == len(ids):
            break
    return logits[-1], cache


@pytest.fixture(scope="module")
def both_layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("q35")
    return (make_tiny_qwen3_5(root / "vision", (L, L, F, L), vision=True, seed=7),
            make_tiny_qwen3_5(root / "text", (L, L, F, L), vision=False, seed=7))


def test_the_vision_wrapper_runs_the_same_text_stack_and_logs_what_it_skips(both_layouts, log_events):
    vision_dir, text_dir = both_layouts
    assert read_config(vision_dir).arch == "qwen3_5" and read_config(text_dir).arch == "qwen3_5_text"
    with log_events() as logs:
        wrapped = _load(vision_dir)
    skipped = [e for e in logs if e["event"] == "weights_skipped"]
    assert skipped and skipped[0]["parts"] == ["mtp", "visual"], logs
    assert skipped[0]["tensors"] > 10
    with log_events() as logs:
        plain = _load(text_dir)
    assert not [e for e in logs if e["event"] == "weights_skipped"]
    assert wrapped.num_parameters == plain.num_parameters
    ids = list(range(3, 20))
    np.testing.assert_array_equal(_feed(wrapped, ids, [])[0], _feed(plain, ids, [])[0])


@pytest.mark.parametrize("chunks", [[1, 1, 1], [5, 2], [2, 9]])
def test_state_carries_across_prefill_chunks(both_layouts, chunks):
    model = _load(both_layouts[1])
    ids = [int(i) for i in np.random.default_rng(0).integers(3, 300, 23)]
    whole, whole_cache = _feed(model, ids, [])
    split, split_cache = _feed(model, ids, chunks)
    # equal up to float32 rounding (numpy's matmul sums a 1-row and a 23-row product differently)
    np.testing.assert_allclose(split, whole, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(split_cache.recurrent, whole_cache.recurrent, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(split_cache.conv, whole_cache.conv, rtol=1e-4, atol=1e-5)
    # the state is fixed-size: one array per linear layer, whatever the length
    assert whole_cache.conv.shape[0] == whole_cache.recurrent.shape[0] == 3
    assert whole_cache.k.shape[0] == 1 and not whole_cache.rewindable


def test_grown_cache_keeps_the_state(both_layouts):
    from inloop.services.runtime.engine.step_runner import ForwardStepRunner

    model = _load(both_layouts[1])
    runner = ForwardStepRunner(model)
    ids = list(range(3, 40))
    ref = runner.logits(ids, runner.new_cache(len(ids)))[-1]
    small = runner.new_cache(20)
    runner.logits(ids[:20], small)
    grown = runner.grow_cache(small, 64, keep=20)
    grown.length = 20
    np.testing.assert_allclose(runner.logits(ids[20:], grown)[-1], ref, rtol=1e-5, atol=1e-5)


def test_default_layer_pattern_and_config_errors(both_layouts):
    cfg = json.loads((both_layouts[0] / "config.json").read_text())
    text = dict(cfg["text_config"], num_hidden_layers=8)
    del text["layer_types"]
    parsed = Qwen35Config.from_hf(dict(cfg, text_config=text))
    assert parsed.layer_types == (L, L, L, F) * 2 and parsed.full_layers == (3, 7)
    assert parsed.rotary_dim == 8  # head_dim 32 * partial_rotary_factor 0.25
    with pytest.raises(ModelLoadError, match="text_config"):
        Qwen35Config.from_hf({"model_type": "qwen3_5"})
    with pytest.raises(ModelLoadError, match="layer_types"):
        Qwen35Config.from_hf(dict(cfg, text_config=dict(text, layer_types=["linear_attention", "mamba"])))
    with pytest.raises(ModelLoadError, match="missing the field 'hidden_size'"):
        Qwen35Config.from_hf({k: v for k, v in cfg["text_config"].items() if k != "hidden_size"})


def test_other_backends_get_a_clear_error():
    class Metal:
        name = "metal"
    with pytest.raises(ModelLoadError, match="no metal kernels"):
        linear_attention_ops(Metal())


@pytest.mark.parametrize("t", [1, 5, 64, 130])
def test_the_chunked_delta_rule_equals_the_recurrence(t):
    """Prefill uses HF's chunked form, decode the token-by-token rule: the same function."""
    from inloop.services.runtime.backends.cpu.linear_attention import NumpyLinearAttention

    rng = np.random.default_rng(t)
    q, k = (rng.standard_normal((t, 2, 16)).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((t, 4, 8)).astype(np.float32)
    g = -rng.uniform(0.01, 1.0, (t, 4)).astype(np.float32)
    beta = rng.uniform(0, 1, (t, 4)).astype(np.float32)
    start = rng.standard_normal((4, 16, 8)).astype(np.float32)
    ops = NumpyLinearAttention()
    s1, s2 = start.copy(), start.copy()
    np.testing.assert_allclose(ops.chunked_gated_delta_rule(q, k, v, g, beta, s1),
                               ops.gated_delta_rule(q, k, v, g, beta, s2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s1, s2, rtol=1e-4, atol=1e-5)


def test_decode_rows_of_several_sequences_in_one_call_equal_each_alone():
    """The batching core's linear-layer step: single rows (decode) of several sequences run as
    one batch of the recurrence, a longer span the chunked form; each equals its sequence run
    alone from its own slot's state, and only the slots of the step's sequences change."""
    from inloop.services.runtime.backends.cpu.linear_attention import NumpyLinearAttention

    rng = np.random.default_rng(5)
    ops, conv_dim, kernel = NumpyLinearAttention(), 2 * 2 * 16 + 4 * 8, 4
    # (first row, rows, slot): decode rows in slots 1 and 3-4 (two runs of slots), slots 2, 5 idle
    spans = [(0, 1, 4), (1, 5, 0), (6, 1, 1), (7, 1, 3)]
    mixed = rng.standard_normal((8, conv_dim)).astype(np.float32)
    g = -rng.uniform(0.01, 1.0, (8, 4)).astype(np.float32)
    beta = rng.uniform(0, 1, (8, 4)).astype(np.float32)
    weight = rng.standard_normal((conv_dim, kernel)).astype(np.float32)
    conv_pool = rng.standard_normal((6, conv_dim, kernel - 1)).astype(np.float32)
    rec_pool = rng.standard_normal((6, 4, 16, 8)).astype(np.float32)
    conv_after, rec_after = conv_pool.copy(), rec_pool.copy()
    out = ops.gated_delta_rows(mixed, g, beta, weight, conv_after, rec_after, spans, 2, 16, 8)
    for row, n, slot in spans:
        conv, rec = conv_pool[slot].copy(), rec_pool[slot].copy()
        x = ops.causal_conv1d(mixed[row:row + n], conv, weight)
        q, k, v = x[:, :32].reshape(n, 2, 16), x[:, 32:64].reshape(n, 2, 16), x[:, 64:].reshape(n, 4, 8)
        alone = ops.gated_delta_rule(q, k, v, g[row:row + n], beta[row:row + n], rec)
        np.testing.assert_allclose(out[row:row + n], alone, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(conv_after[slot], conv, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(rec_after[slot], rec, rtol=1e-4, atol=1e-5)
    for idle in (2, 5):
        assert (conv_after[idle] == conv_pool[idle]).all() and (rec_after[idle] == rec_pool[idle]).all()


def test_a_model_of_linear_layers_only_runs(tmp_path):
    model = _load(make_tiny_qwen3_5(tmp_path / "m", (L, L), vision=False))
    ids = list(range(3, 30))
    whole, cache = _feed(model, ids, [])
    assert cache.k.shape[0] == 0 and np.isfinite(whole).all()
    np.testing.assert_allclose(_feed(model, ids, [10, 1, 1])[0], whole, rtol=1e-4, atol=1e-5)

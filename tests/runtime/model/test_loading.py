"""Model loading: dtypes, sharding, and clear errors for broken model directories."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.config import ModelConfig, ModelLoadError
from inloop.services.runtime.model.tiny import make_tiny
from inloop.services.runtime.model.weights import Weights


def _logits(model_dir, text="bread and milk"):
    engine = Engine.load(model_dir)
    ids = engine.tokenizer.encode(text)
    return engine.prefill(ids, engine.model.new_cache(len(ids)))


@pytest.mark.parametrize("dtype,tol", [("float16", 2e-2), ("bfloat16", 1e-1)])
def test_half_precision_checkpoints_load_close_to_float32(tmp_path, dtype, tol):
    ref = _logits(make_tiny("qwen2", tmp_path / "f32", seed=3))
    half_dir = make_tiny("qwen2", tmp_path / dtype, seed=3, dtype=dtype)
    assert Weights(half_dir).storage_dtype() == {"float16": "F16", "bfloat16": "BF16"}[dtype]
    got = _logits(half_dir)
    assert np.abs(got - ref).max() / np.abs(ref).max() < tol
    assert int(got.argmax()) == int(ref.argmax())


def test_sharded_checkpoint_equals_single_file(tmp_path):
    single = _logits(make_tiny("llama", tmp_path / "one", seed=5))
    sharded_dir = make_tiny("llama", tmp_path / "three", seed=5, shards=3)
    assert len(list(sharded_dir.glob("*.safetensors"))) == 3
    np.testing.assert_array_equal(_logits(sharded_dir), single)


def test_unknown_architecture_is_a_clear_error(tmp_path):
    d = make_tiny("llama", tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unsupported model_type 'gpt2'"):
        Engine.load(d)


def test_missing_tensor_is_named(tmp_path):
    d = make_tiny("llama", tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_hidden_layers"] = 3  # the checkpoint has two layers
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"missing tensor 'model\.layers\.2\."):
        Engine.load(d)


def test_missing_shard_is_named(tmp_path):
    d = make_tiny("llama", tmp_path / "m", shards=2)
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="shard model-00002-of-00002.safetensors"):
        Engine.load(d)


def test_wrong_shape_is_named(tmp_path):
    d = make_tiny("llama", tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"gate_proj\.weight' has shape \[128, 64\], expected \[96, 64\]"):
        Engine.load(d)


def test_missing_config_and_missing_field(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json"):
        ModelConfig.from_dir(tmp_path)
    with pytest.raises(ModelLoadError, match="'hidden_size'"):
        ModelConfig.from_hf({"model_type": "llama", "num_attention_heads": 4})


def test_qwen3_uses_explicit_head_dim(tiny_models):
    cfg = ModelConfig.from_dir(tiny_models["qwen3"])
    assert cfg.head_dim == 24 and cfg.qk_norm and cfg.q_size == 96

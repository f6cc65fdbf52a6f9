"""What the CUDA graphs cannot rotate yet is refused at load with a line that says what to do,
rather than served with wrong rotations: dynamic RoPE, whose frequencies follow each call's
length (a prefill chunk's rows rotate by the chunk's end), which a cos/sin table with one row
per position cannot hold. Linear, llama3 and yarn, and layers without RoPE, load and run
(test_rope_scaling.py)."""
from __future__ import annotations

import pytest

from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.config import ModelConfig, ModelLoadError
from inloop.services.runtime.model.tiny import make_tiny
from inloop.services.runtime.model.weights import Weights


@pytest.mark.parametrize("form", [{"rope_scaling": {"type": "dynamic", "factor": 2.0}},
                                  {"rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}}])
def test_cuda_refuses_dynamic_rope(form, gpu, tmp_path):
    model = make_tiny("llama", tmp_path / "dynamic", dtype="bfloat16", config=form)
    with pytest.raises(ModelLoadError, match="dynamic RoPE runs on --backend cpu"):
        Engine.load(model, backend=gpu)


@pytest.mark.parametrize("arch,config", [
    ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}}),
    ("smollm3", {}),
])
def test_cuda_loads_what_its_rope_table_holds(arch, config, gpu, tmp_path):
    cfg = ModelConfig.from_dir(make_tiny(arch, tmp_path / arch, dtype="bfloat16", config=config))
    assert cfg.rope.scaled or not all(cfg.use_rope)
    model = gpu.load_model(cfg, Weights(tmp_path / arch))
    assert len(model.layers) == cfg.num_layers

"""The CUDA backend loads every RoPE the numpy backend runs: each scaling type (either config
form) and layers without RoPE. It refused them once, when its kernels rotated every layer by
theta alone; now the graphs' cos/sin table holds the model's own rotation and a layer without
RoPE turns the rotation off (test_rope_scaling.py checks the values against numpy)."""
from __future__ import annotations

import pytest

from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.config import ModelConfig
from inloop.services.runtime.model.tiny import make_tiny
from inloop.services.runtime.model.weights import Weights


@pytest.mark.parametrize("arch,config", [
    ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    ("llama", {"rope_scaling": {"type": "dynamic", "factor": 2.0}}),
    ("llama", {"rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}}),
    ("llama", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}}),
    ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    ("smollm3", {}),
])
def test_cuda_loads_every_rope(arch, config, gpu, tmp_path):
    cfg = ModelConfig.from_dir(make_tiny(arch, tmp_path / arch, dtype="bfloat16", config=config))
    assert cfg.rope.scaled or not all(cfg.use_rope)
    model = gpu.load_model(cfg, Weights(tmp_path / arch))
    assert len(model.layers) == cfg.num_layers


def test_engine_serves_dynamic_rope_on_the_cuda_graphs(gpu, tmp_path):
    """Dynamic RoPE runs outside the batching core (engine.py _pages), on the CUDA step runner."""
    d = make_tiny("llama", tmp_path / "dynamic", dtype="bfloat16",
                  config={"rope_scaling": {"type": "dynamic", "factor": 2.0}})
    assert Engine.load(d, backend=gpu).runner.name == "cuda-graphs"

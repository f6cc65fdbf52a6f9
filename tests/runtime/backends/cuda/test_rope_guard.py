"""Models the CUDA kernels do not run yet (scaled RoPE, layers without RoPE) are refused at
load with a line that says what to do, rather than served with wrong rotations."""
from __future__ import annotations

import pytest

from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.config import ModelLoadError
from inloop.services.runtime.model.tiny import make_tiny


@pytest.mark.parametrize("arch,config,what", [
    ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "RoPE scaling 'linear'"),
    ("smollm3", {}, "layers without RoPE"),
])
def test_cuda_refuses_what_its_kernels_do_not_rotate(arch, config, what, gpu, tmp_path):
    model = make_tiny(arch, tmp_path / arch, dtype="bfloat16", config=config)
    with pytest.raises(ModelLoadError, match=f"{what} runs on --backend cpu"):
        Engine.load(model, backend=gpu)

"""probes.py on the GPU (and, collected again, on the driver double's kernel-source emulator):
every GEMV config the sweep times computes what the launcher's own choice computes, the
graph-node and PDL A/B probes run and report both edge kinds, and the summary names them."""
from __future__ import annotations

import numpy as np
import pytest

from services.runtime.backends.cuda import probes
from services.runtime.model.tiny import make_tiny

QUICK = {"launches": 2, "replays": 1}  # the emulators run every launch for real: keep the sweep short
SMALL = {"hidden_size": 64, "intermediate_size": 96, "vocab_size": 320, "num_attention_heads": 4,
         "num_key_value_heads": 2}


def test_every_gemv_config_gives_the_chosen_configs_results(gpu):
    sweep = probes.gemv_sweep(gpu, SMALL, seed=1, **QUICK)
    assert set(sweep) == {"qkv", "o", "gate_up", "down", "lm_head"}
    assert sweep["qkv"]["shape"] == [(4 + 2 * 2) * 16, 64] and sweep["gate_up"]["shape"] == [192, 64]
    for proj, row in sweep.items():
        assert set(row["configs"]) == {probes._config_name(*c) for c in probes.GEMV_CONFIGS}, proj
        assert row["chosen"] in row["configs"] and row["best"] in row["configs"]
        assert row["same_results"], (proj, {k: c["max_rel_err"] for k, c in row["configs"].items()})
        assert all(c["us"] > 0 and c["gb_s"] > 0 for c in row["configs"].values())


def test_a_config_the_kernel_cannot_take_is_refused(gpu):
    W = gpu.upload(np.ones((8, 64), np.float32))
    x, y = gpu.upload_activation(np.ones(64, np.float32)), gpu._empty((8,))
    with pytest.raises(AssertionError):
        gpu.ops.gemv(W, x, y, config=(8, 128))  # 8 split-K warps need 256 threads


def test_graph_node_and_pdl_ab_report_both_edge_kinds(gpu, tmp_path):
    node = probes.graph_node_cost(gpu, n=16, replays=1)
    pdl_before = gpu.pdl
    assert node["plain_us"] > 0 and (not gpu.pdl or node["pdl_us"] > 0)

    from services.runtime.backends.cuda.loader import load_transformer
    from services.runtime.model.config import ModelConfig
    from services.runtime.model.weights import Weights

    d = make_tiny("llama", tmp_path / "m", seed=5, dtype="bfloat16")
    model = load_transformer(gpu, ModelConfig.from_dir(d), Weights(d))
    cache = model.new_cache(32)
    ab = probes.decode_pdl_ab(gpu, model, cache, token=3, pos=0, steps=4)
    assert ab["plain_ms"] > 0 and ab["plain_captured"]
    if gpu.pdl:
        assert ab["pdl_ms"] > 0 and ab["pdl_captured"] and ab["pdl_speedup"] > 0
    assert gpu.pdl == pdl_before  # restored

    sweep = probes.gemv_sweep(gpu, SMALL, **QUICK)
    lines = "\n".join(probes.summary_lines({"graph_node": node, "tiny": {"decode_pdl_ab": ab, "gemv": sweep}}))
    assert "graph node:" in lines and "tiny decode step on the GPU" in lines and "lm_head" in lines
    assert "RESULTS DIFFER" not in lines

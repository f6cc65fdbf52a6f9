"""bench/cuda/probes.py and gemv_tuning.py on the GPU and on the kernel-source emulator (not on
the contracts: timings of numpy say nothing): every GEMV config the sweep times computes what the launcher's own
choice computes, the tuner measures each projection once per card and a warm start reads its
file, decode graphs built on other configs give the same tokens, and the A/B probes report
every variant and put the backend back as they found it."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.cuda import probes
from inloop.services.runtime.backends.cuda import gemv_timing
from inloop.services.runtime.backends.cuda.gemv_tuning import GemvTuner, choice_key
from inloop.services.runtime.model.tiny import make_tiny

MODES = ("device", "source")  # conftest.py: where `gpu` runs
QUICK = {"launches": 2, "replays": 1}  # the emulators run every launch for real: keep the sweep short
SMALL = {"hidden_size": 64, "intermediate_size": 96, "vocab_size": 320, "num_attention_heads": 4,
         "num_key_value_heads": 2}


@pytest.fixture(autouse=True)
def small_flush(gpu, monkeypatch):
    if hasattr(gpu, "fake_driver"):  # an emulator has no L2 to flush: 1 MB keeps the path, not the time
        monkeypatch.setattr(gemv_timing, "FLUSH_BYTES", 1 << 20)


def test_every_gemv_config_gives_the_chosen_configs_results(gpu):
    sweep = probes.gemv_sweep(gpu, SMALL, seed=1, **QUICK)
    assert set(sweep) == {"qkv", "o", "gate_up", "down", "lm_head"}
    assert sweep["qkv"]["shape"] == [(4 + 2 * 2) * 16, 64] and sweep["gate_up"]["shape"] == [192, 64]
    for proj, row in sweep.items():
        assert set(row["configs"]) == {probes.config_name(*c) for c in probes.GEMV_CONFIGS}, proj
        assert row["chosen"] in row["configs"] and row["best"] in row["configs"]
        assert row["same_results"], (proj, {k: c["max_rel_err"] for k, c in row["configs"].items()})
        assert all(c["us"] > 0 and c["gb_s"] > 0 for c in row["configs"].values())


def test_a_config_the_kernel_cannot_take_is_refused(gpu):
    W = gpu.upload(np.ones((8, 64), np.float32))
    x, y = gpu.upload_activation(np.ones(64, np.float32)), gpu._empty((8,))
    with pytest.raises(AssertionError):
        gpu.ops.gemv(W, x, y, config=(8, 128))  # 8 split-K warps need 256 threads


@pytest.fixture()
def tiny_model(gpu, tmp_path):
    from inloop.services.runtime.backends.cuda.loader import load_transformer
    from inloop.services.runtime.model.config import ModelConfig
    from inloop.services.runtime.model.weights import Weights

    d = make_tiny("llama", tmp_path / "m", seed=5, dtype="bfloat16")
    return load_transformer(gpu, ModelConfig.from_dir(d), Weights(d))


@pytest.fixture()
def tuned(gpu):
    """Give the test the backend's tuner and choices to set; put the backend back after."""
    saved = gpu.gemv_tuner, dict(gpu.ops.gemv_choices), gpu.pdl
    gpu.ops.gemv_choices.clear()
    yield gpu
    gpu.gemv_tuner, gpu.ops.gemv_choices, gpu.pdl = saved[0], saved[1], saved[2]


def test_tuner_measures_each_projection_once_and_a_warm_start_measures_nothing(tuned, tiny_model, tmp_path):
    gpu, path = tuned, tmp_path / "tuning.json"
    gpu.gemv_tuner = GemvTuner(gpu, path=path)
    dg = gpu.decode_graph(tiny_model, 32)
    keys = {choice_key(*W.shape, mode, n is not None, W.dtype) for W, n, mode in dg.projections()}
    assert len(keys) == 5 and set(gpu.ops.gemv_choices) == keys
    assert gpu.gemv_tuner.measured == 5 and len(gpu.gemv_tuner.report) == 5
    layers = len(tiny_model.layers)
    assert sorted(r["matrices"] for r in gpu.gemv_tuner.report.values()) == [1] + [layers] * 4  # LM head once
    assert all(cfg in probes.GEMV_CONFIGS for cfg in gpu.ops.gemv_choices.values())
    saved = json.loads(path.read_text())[gpu.gemv_tuner.card]
    assert len(saved) == 5
    first = dict(gpu.ops.gemv_choices)

    gpu.ops.gemv_choices.clear()  # a new process on the same card
    gpu.gemv_tuner = GemvTuner(gpu, path=path)
    gpu.decode_graph(tiny_model, 32)
    assert gpu.gemv_tuner.measured == 0 and gpu.ops.gemv_choices == first

    data = json.loads(path.read_text())  # a choice the kernel cannot take (an edited file) is measured again
    entry = sorted(data[gpu.gemv_tuner.card])[0]
    data[gpu.gemv_tuner.card][entry] = [3, 100]
    path.write_text(json.dumps(data))
    gpu.ops.gemv_choices.clear()
    gpu.gemv_tuner = GemvTuner(gpu, path=path)
    gpu.decode_graph(tiny_model, 32)
    assert gpu.gemv_tuner.measured == 1 and list(gpu.gemv_tuner.report) == [entry]


def test_a_tuner_cache_it_cannot_read_is_measured_again(tuned, tiny_model, tmp_path):
    from inloop.services.runtime.backends.cuda.gemv_tuning import describe_saved

    path = tmp_path / "tuning.json"
    assert "nothing measured yet" in describe_saved(path)
    path.write_text("{not json")
    assert "unreadable" in describe_saved(path)
    tuned.gemv_tuner = GemvTuner(tuned, path=path)
    tuned.decode_graph(tiny_model, 32)
    assert tuned.gemv_tuner.measured == 5 and tuned.gemv_tuner.card in json.loads(path.read_text())
    assert f"5 shape(s) for {tuned.gemv_tuner.card}" in describe_saved(path)


def test_a_tuner_that_fails_leaves_the_heuristic_and_saves_nothing(tuned, tiny_model, tmp_path, monkeypatch):
    from inloop.services.runtime.backends.cuda import gemv_tuning

    def broken(*a, **k):
        raise RuntimeError("no timing today")

    monkeypatch.setattr(gemv_tuning, "time_gemv_configs", broken)
    path = tmp_path / "tuning.json"
    tuned.gemv_tuner = GemvTuner(tuned, path=path)
    dg = tuned.decode_graph(tiny_model, 32)
    cache = tiny_model.new_cache(32)
    dg.bind(cache)
    assert dg.step(7, 0)[0] >= 0  # serving goes on
    assert not tuned.ops.gemv_choices and not path.exists() and tuned.gemv_tuner.measured == 0
    assert all("no timing today" in r["error"] for r in tuned.gemv_tuner.report.values())


def test_decode_steps_with_other_gemv_configs_give_the_same_tokens(tuned, tiny_model):
    gpu = tuned
    want = gpu.decode_graph(tiny_model, 32)
    cache = tiny_model.new_cache(32)
    want.bind(cache)
    ref = [want.step(7, 0)] + [want.step() for _ in range(5)]
    dg = gpu.decode_graph(tiny_model, 32)
    for W, n, mode in dg.projections():  # every projection split 8 ways, 256 threads
        gpu.ops.gemv_choices[choice_key(*W.shape, mode, n is not None, W.dtype)] = (8, 256)
    other = gpu.decode_graph(tiny_model, 32)
    other.bind(cache)
    got = [other.step(7, 0)] + [other.step() for _ in range(5)]
    assert [r[0] for r in got] == [r[0] for r in ref]
    assert np.allclose([r[1:] for r in got], [r[1:] for r in ref], rtol=1e-3, atol=1e-4)


def test_graph_node_and_decode_ab_report_every_variant(tuned, tiny_model):
    gpu = tuned
    node = probes.graph_node_cost(gpu, n=16, replays=1)
    assert node["plain_us"] > 0 and (not gpu.pdl or node["pdl_us"] > 0)

    gpu.gemv_tuner = None
    cache = tiny_model.new_cache(32)
    dg = gpu.decode_graph(tiny_model, 32)
    for W, n, mode in dg.projections():
        gpu.ops.gemv_choices[choice_key(*W.shape, mode, n is not None, W.dtype)] = (2, 128)
    before = (gpu.pdl, dict(gpu.ops.gemv_choices))
    ab = probes.decode_ab(gpu, tiny_model, cache, token=3, pos=0, steps=4)
    assert ab["served_ms"] > 0 and ab["heuristic_gemv_ms"] > 0 and ab["heuristic_gemv_over_served"] > 0
    assert not gpu.pdl or (ab["plain_edges_ms"] > 0 and "served_note" not in ab)
    assert (gpu.pdl, gpu.ops.gemv_choices, gpu.gemv_tuner) == (*before, None)  # put back

    sweep = probes.gemv_sweep(gpu, SMALL, **QUICK)
    lines = "\n".join(probes.summary_lines({"graph_node": node, "tiny": {"decode_ab": ab, "gemv": sweep}}))
    assert "graph node:" in lines and "tiny decode step on the GPU" in lines and "lm_head" in lines
    assert "with the heuristic GEMV configs" in lines and "RESULTS DIFFER" not in lines


def test_decode_kinds_times_each_kernel_kind_of_the_step(gpu, tiny_model):
    cache = tiny_model.new_cache(32)
    dg = gpu.decode_graph(tiny_model, 32)
    dg.bind(cache)
    kinds = probes.decode_kinds(gpu, dg, token=3, pos=0, steps=2)
    layers = tiny_model.cfg.num_layers
    counts = {k: v["count"] for k, v in kinds["kinds"].items()}
    assert counts == {"embedding": 1, "gemv_norm_store": layers + 1, "attention_decode": layers,
                      "gemv_residual": 2 * layers, "gemv_norm_swiglu": layers, "sample_reduce": 1,
                      "sample_truncated": 1}
    assert sum(counts.values()) == dg.kernels_per_step()
    assert kinds["full_us"] > 0
    assert all(v["only_us"] > 0 and v["without_us"] > 0 for v in kinds["kinds"].values())
    assert "attention_decode" in "\n".join(probes.summary_lines({"tiny": {"decode_kinds": kinds}}))
    assert gpu.ops._launch.__func__ is type(gpu.ops)._launch  # the launcher is put back


def test_decode_at_lengths_times_a_step_from_each_length(gpu, tiny_model):
    got = probes.decode_at_lengths(gpu, tiny_model, lengths=(3, 70), steps=2)
    assert got["steps"] == 2 and got["splits"] >= 1
    assert got["3_us"] > 0 and got["70_us"] > 0
    assert "decode step by sequence length" in "\n".join(probes.summary_lines({"tiny": {"decode_at_lengths": got}}))

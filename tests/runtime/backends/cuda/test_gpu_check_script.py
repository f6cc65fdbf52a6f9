"""scripts/gpu_check.py's parity, benchmark and report code, run on the driver double with a
tiny model, so the one GPU run is not spent on the script's own bugs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from inloop.services.runtime.model.tiny import make_tiny

from . import scripts

MODES = ("contract",)  # conftest.py: the script's own code, on the driver double


@pytest.fixture(scope="module")
def gpu_check():
    return scripts.load("gpu_check")


def test_parity_bench_and_report_run(gpu_check, gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "DECODE_TOKENS", 6)
    monkeypatch.setattr(gpu_check, "PROMPT_LEN", 9)
    d = make_tiny("qwen2", tmp_path / "m", seed=3, dtype="bfloat16")
    parity = gpu_check.greedy_parity(d, gpu, 11, 6)
    assert parity["ok"] and parity["free_running_equal_tokens"], parity
    ours = gpu_check.bench_cuda(d, gpu, gpu_check.PROMPT_LEN, gpu_check.DECODE_TOKENS)
    for key in ("ttft_ms", "ttft_eager_ms", "decode_ms_per_token", "decode_gpu_ms_per_step", "breakdown_us"):
        assert key in ours, key
    assert ours["prefill_graph_token_equals_eager"]
    assert sum(v["count"] for v in ours["breakdown_us"].values()) == ours["kernels_per_step"]
    results = {"environment": {"device": "Fake"}, "compile": {"all_ok": True, "arch": "sm_90", "wall_seconds": 1},
               "pytest": {"summary": "1 passed"}, "parity": {"tiny": parity},
               "bench": {"smollm2-135m": {"ours": ours, "hf": {"decode_ms_per_token": 20.0, "ttft_ms": 30.0},
                                          "start_ours": {"seconds": 1.0}, "start_hf": {"seconds": 15.0}}},
               "total_seconds": 3}
    assert ours["decode_ab"]["served_ms"] > 0 and ours["decode_ab"]["plain_edges_ms"] > 0
    from bench.cuda import probes
    from inloop.services.runtime.backends.cuda import gemv_timing

    monkeypatch.setattr(gemv_timing, "FLUSH_BYTES", 1 << 20)  # no L2 to flush on the double
    shape = {"hidden_size": 32, "intermediate_size": 48, "vocab_size": 100, "num_attention_heads": 2,
             "num_key_value_heads": 1}
    ours["gemv_tuning"] = {"enabled": True, "measured": 1, "seconds": 0.05, "choices": {
        "960x576:store+norm:bf16": {"heuristic": "ks1x128", "heuristic_us": 2.5, "chosen": "ks2x128", "chosen_us": 2.0},
        "576x576:residual:bf16": {"error": "CudaError: boom"}}}
    results["probes"] = {"graph_node": probes.graph_node_cost(gpu, n=4, replays=1),
                         "smollm2-135m": {"gemv": probes.gemv_sweep(gpu, shape, launches=1, replays=1)},
                         "qwen2.5-0.5b": {"skipped": "time budget"}}
    results["bench"]["smollm2-135m"]["baseline"] = {"commit": "abc1234", "decode_ms_per_token": 2 * ours[
        "decode_ms_per_token"], "ttft_ms": ours["ttft_ms"]}
    table = gpu_check.summary_table(results)
    assert "decode ms/tok" in table and "x HF" in table and "greedy parity tiny" in table
    assert "against the baseline commit" in table and "smollm2-135m  baseline abc1234 -> this: " in table
    assert "(0.50x), TTFT ms" in table
    assert "graph node:" in table and "smollm2-135m decode step on the GPU" in table
    assert "smollm2-135m lm_head 100x32: ks" in table
    assert set(ours["decode_at_lengths"]) >= {"160_us", "1024_us", "4096_us"}
    assert "smollm2-135m step " in table and "smollm2-135m decode step by sequence length" in table
    assert "gemv tuning (1 shapes, 0.05 s): 960x576 ks1x128->ks2x128 2.5->2.0 us, 576x576 FAILED CudaError" in table


def test_first_token_child_runs(gpu_check, gpu, tmp_path, capsys):
    d = make_tiny("llama", tmp_path / "m", seed=4, dtype="float32")
    gpu_check.first_token_child("ours", str(d))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("FIRST_TOKEN ") and '"token"' in line


def test_engine_bench_and_its_report_run(gpu_check, gpu, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "ENGINE_RUNS", 2)
    monkeypatch.setattr(gpu_check, "ENGINE_NEW_TOKENS", 5)
    monkeypatch.setattr(gpu_check, "PROMPT_LEN", 12)
    d = make_tiny("qwen3", tmp_path / "m", seed=6, dtype="bfloat16")
    r = gpu_check.engine_bench(d, gpu, with_hf=False)
    assert "cuda-graphs" in r["ours_path"] and r["new_tokens"] == 5 and len(r["ours_all"]["ttft_ms"]) == 2
    with_hf = {**r, "hf": {"ttft_ms": 30.0, "decode_tok_s": 40.0, "decode_ms_per_token": 25.0},
               "decode_speed_ratio_ours_over_hf": 12.5, "ttft_speedup_hf_over_ours": 9.0,
               "same_greedy_tokens": [True, False]}
    table = gpu_check.summary_table({"engine_bench": {"smollm2-135m": with_hf,
                                                      "qwen2.5-0.5b": {"skipped": "time budget"},
                                                      "seconds": {"smollm2-135m": 3.0}}})
    assert "engine fast path vs HF" in table and "decode ours/HF 12.5x" in table and "1/2 runs" in table
    assert "time budget" in table and "seconds" not in table.split("engine fast path")[1]


def test_every_gpu_test_module_exists(gpu_check):
    here = Path(__file__).parent
    assert all((here / m).is_file() for m in gpu_check.GPU_TEST_MODULES), gpu_check.GPU_TEST_MODULES
    assert "test_engine_on_cuda.py" in gpu_check.GPU_TEST_MODULES


def test_main_runs_every_step_on_the_double(gpu_check, cubin_cache, tmp_path, monkeypatch):
    """The orchestration itself (main): every step on the driver double with small shapes, so a
    slip in the wiring shows here and not in the one GPU run. The start-to-first-token children
    are real processes with no GPU: their error is recorded, and nothing else stops."""
    from bench.cuda import models as bench_models
    from inloop.services.runtime.backends.cuda import driver as driver_module

    from .fake_driver import FakeDriver

    small = {"smollm2-135m": {**bench_models.SHAPES["smollm2-135m"], "hidden_size": 64, "num_hidden_layers": 2,
                              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96,
                              "vocab_size": 300}}
    monkeypatch.setattr(bench_models, "SHAPES", small)
    monkeypatch.setattr(gpu_check, "SHAPES", small)
    for name, value in (("DECODE_TOKENS", 6), ("PROMPT_LEN", 9), ("ENGINE_RUNS", 1), ("ENGINE_NEW_TOKENS", 4)):
        monkeypatch.setattr(gpu_check, name, value)
    monkeypatch.setattr(gpu_check, "tiny_parity", lambda work, be: {"llama": gpu_check.greedy_parity(
        gpu_check.make_random_model(work / "p", "smollm2-135m", 9), be, 5, 3)})
    fd = FakeDriver(kernels="contract")
    monkeypatch.setattr(driver_module, "_drv", lambda: fd)
    out, work = tmp_path / "out", tmp_path / "work"
    from inloop.services.runtime.backends.cuda import gemv_timing

    monkeypatch.setattr(gemv_timing, "FLUSH_BYTES", 1 << 20)  # no L2 to flush on the double
    monkeypatch.setenv("INLOOP_CUDA_GEMV_TUNE", "1")  # as served: the tuner measures (wall time on the double)
    # main() sets these for its children; registered here so they are put back after the test.
    # The session's cubin cache is kept (warm): main() wipes only a cache of its own work folder.
    monkeypatch.setenv("INLOOP_CACHE", str(cubin_cache.parent))
    monkeypatch.setenv("INLOOP_TEST_USE_CACHE", "1")
    monkeypatch.setenv("INLOOP_GPU_WORK", str(work))
    monkeypatch.setattr("sys.argv", ["gpu_check.py", "--out", str(out), "--work", str(work), "--skip-tests",
                                     "--skip-hf"])
    rc = gpu_check.main()
    results = json.loads((out / "results.json").read_text())
    failed = {k: v for k, v in results.items() if isinstance(v, dict) and "error" in v}
    assert not failed, failed
    ours = results["bench"]["smollm2-135m"]["ours"]
    assert "error" not in ours and ours["gemv_tuning"]["measured"] == 5, ours.get("gemv_tuning")
    assert set(ours["decode_ab"]) >= {"served_ms", "plain_edges_ms", "heuristic_gemv_ms"}
    assert "error" in results["bench"]["smollm2-135m"]["start_ours"]  # the child has no GPU
    assert results["probes"]["smollm2-135m"]["gemv"]["lm_head"]["same_results"]
    assert results["engine_bench"]["smollm2-135m"].get("ours_path"), results["engine_bench"]
    assert rc == 0 and results["ok"], {k: results.get(k) for k in ("compile", "parity")}
    summary = (out / "summary.txt").read_text()
    assert "probes (where a decode step's time goes)" in summary and "gemv tuning (5 shapes" in summary
    row = next(line for line in summary.splitlines() if line.startswith("PERF.md row: "))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert len(cells) == 8 and cells[1] == "Fake H100" and cells[3].count("(") == 1 and cells[6] == "-", cells


def test_batched_bench_runs_and_reports(gpu_check, gpu, tmp_path):
    """gpu_check's batched stage on a tiny model: every bucket timed, invariance checked, the
    engine's core at two concurrencies with graph steps, and the lines of the summary."""
    d = make_tiny("llama", tmp_path / "b", seed=4, dtype="bfloat16")
    g = gpu_check.graph_bench(d, gpu, buckets=(1, 2, 4), prompt_len=5, steps=2)
    assert set(g["buckets"]) == {1, 2, 4} and g["batch_invariant"] is True
    assert all(r["replay_ms"] > 0 and r["step_tokens_per_s"] > 0 for r in g["buckets"].values())
    e = gpu_check.batched_engine_bench(d, gpu, concurrencies=(1, 3), max_tokens=4, kv_cache_memory=4 << 20)
    assert e[1]["output_tokens"] == 4 and e[3]["output_tokens"] == 12 and e[3]["graph_steps"] > 0
    table = gpu_check.summary_table({"environment": {"device": "Fake"}, "compile": {"all_ok": True},
                                     "batched": {"graphs": g, "engine": e}})
    assert "batched decode (graph replay per bucket" in table and "3 concurrent:" in table


def test_the_qwen3_5_parity_runs_and_reports(gpu_check, gpu, tmp_path, monkeypatch):
    """Step 8 (Qwen3.5-0.8B-shaped greedy parity, op by op, and its decode through the batching
    core's bucket graphs) at a small width: its check passes and the summary reports it; past
    the time budget it is skipped unless --qwen35 asks."""
    import argparse

    from bench.cuda import qwen35

    monkeypatch.setitem(qwen35.QWEN35_08B, "vocab_size", 2048)
    monkeypatch.setitem(qwen35.QWEN35_08B, "hidden_size", 128)
    monkeypatch.setitem(qwen35.QWEN35_08B, "intermediate_size", 256)
    monkeypatch.setitem(qwen35.QWEN35_08B, "num_hidden_layers", 4)
    monkeypatch.setitem(qwen35.QWEN35_08B, "layer_types", qwen35.QWEN35_08B["layer_types"][:4])
    d = gpu_check.make_qwen35_model(tmp_path / "q35", 7)
    parity = gpu_check.qwen35_greedy_parity(d, gpu, 6, 4)
    assert parity["ok"] and parity["arch"] == "qwen3_5_text" and parity["max_logit_err_rel_to_max"] < 2e-2, parity
    graphs = gpu_check.graph_bench(d, gpu, (1, 2), 5, 2)   # decode through the core's bucket graphs
    assert set(graphs["buckets"]) == {1, 2} and "batch_invariant" not in graphs
    table = gpu_check.summary_table({"parity": {"qwen3.5-0.8b": parity}, "qwen35": {"graphs": graphs}})
    assert "greedy parity qwen3.5-0.8b" in table and "op path (no graphs): decode" in table
    assert "qwen3.5-0.8b batched decode (graph replay per bucket" in table
    run = gpu_check.Run(argparse.Namespace(qwen35=False), tmp_path, tmp_path)
    monkeypatch.setattr(gpu_check, "DEADLINE_S", 0)
    gpu_check.stage_qwen35(run)
    assert "skipped" in run.results["qwen35"]
    assert "qwen3.5-0.8b: {'skipped'" in gpu_check.summary_table(run.results)

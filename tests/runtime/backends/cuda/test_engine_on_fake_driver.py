"""The engine's CUDA fast path on the driver double (fake_driver.py + kernel_emulator.py): the
checks only the double can make (test_engine_on_cuda.py runs on it too, as its contract mode):
which launches a request makes (graphs, not the op-by-op forward pass), that no device
memory outlives a request, the fp16 note, and the bench's engine loop.
"""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.contract.generation import ChatMessage, GenerateRequest, SamplingParams
from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.tiny import make_tiny

from .test_engine_on_cuda import KV_TOOL, _chat, assert_same_greedy

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
MODES = ("contract",)  # conftest.py: what the double can see (launches, device memory)


@pytest.fixture(scope="module")
def llama_engines(tiny_dirs, gpu, cpu):
    d = tiny_dirs["llama"]
    return Engine.load(d, backend=gpu), Engine.load(d, backend=cpu)


def _no_forward(engine, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("the op-by-op Transformer.forward ran on the fast path")

    monkeypatch.setattr(engine.model, "forward", forbidden)


def _names(fake) -> list[str]:
    return [name for name, _ in fake.launches]


def test_free_generation_is_one_prefill_graph_then_one_decode_graph_per_token(llama_engines, fake, monkeypatch):
    ours, _ = llama_engines
    ours.generate(_chat(max_tokens=4))  # captures the decode graph and this prompt's prefill bucket
    _no_forward(ours, monkeypatch)
    fake.launches.clear()
    result = ours.generate(_chat(max_tokens=9, return_uncertainty=True))
    names = _names(fake)
    n = result.completion_tokens
    assert n == 9 and len(result.token_stats) == n
    # every token is one pass that starts with an embedding and ends with the GPU sampler
    assert names.count("embedding") == n and names.count("sample_reduce") == n
    per_step = ours.runner.graphs.decode.kernels_per_step(True)
    prefill = names.index("sample_truncated") + 1
    assert "gemm_bf16" in names[:prefill]  # the prompt ran as one prefill (tensor-core GEMMs)
    assert len(names) - prefill == (n - 1) * per_step  # then exactly the decode graph, token after token
    assert all(pdl for _, pdl in fake.launches[prefill:])  # replays of the PDL-captured graph


def test_free_decoding_launches_each_step_before_the_host_reads_the_last(llama_engines, fake, monkeypatch):
    """Lookahead: the host pushes state once, then every replay chains from the token the
    previous one sampled, launched before that token is read; same tokens as without it."""
    ours, _ = llama_engines
    dg = ours.runner.graphs.decode
    req = _chat(max_tokens=12, temperature=0.8, seed=5, return_uncertainty=True)
    pushes = dg.pushes
    got = ours.generate(req)
    assert dg.pushes - pushes == 1  # the first decode step; the other ten only chain
    reads, order = [], []
    monkeypatch.setattr(dg, "slot_result", lambda slot, f=dg.slot_result: reads.append(slot) or f(slot))
    monkeypatch.setattr(dg, "launch_into", lambda slot, f=dg.launch_into: order.append(slot) or f(slot))
    ours.generate(req)
    assert order[:3] == [0, 1, 0] and reads[:2] == [0, 1]  # step k+1 launched before step k is read
    one_by_one = ours.runner.graphs.decode_sample
    monkeypatch.setattr(ours.runner.graphs, "decode_sample", lambda *a, lookahead=False, **k: one_by_one(*a, **k))
    plain = ours.generate(req)
    assert plain.token_ids == got.token_ids and plain.token_stats == got.token_stats
    # a stop string ends it early: the step launched ahead is dropped, the next request is unharmed
    monkeypatch.undo()
    stopped = ours.generate(_chat(max_tokens=12, temperature=0.8, seed=5, stop=[ours.tokenizer.decode(got.token_ids[3:5])]))
    assert len(stopped.token_ids) < 12
    assert ours.generate(req).token_ids == got.token_ids


@pytest.mark.parametrize("uncertainty", [False, True])
def test_constrained_call_reads_logits_from_the_graphs(llama_engines, fake, monkeypatch, uncertainty):
    ours, ref = llama_engines
    req = GenerateRequest(messages=[ChatMessage("user", "Increment the counter named visits")], tools=[KV_TOOL],
                          tool_choice="kv", sampling=SamplingParams(max_tokens=96, return_uncertainty=uncertainty))
    want = ours.generate(req)
    _no_forward(ours, monkeypatch)  # forced text's every-row logits come from the ALL_ROWS graphs too
    calls, all_rows = [], ours.runner.graphs.prefill_all_logits
    monkeypatch.setattr(ours.runner.graphs, "prefill_all_logits", lambda *a: calls.append(len(a[0])) or all_rows(*a))
    fake.launches.clear()
    got = ours.generate(req)
    assert got.token_ids == want.token_ids and got.finish_reason == "tool_calls"
    assert "sample_reduce" not in _names(fake)  # masked picks sample on the host from the graph's logits
    assert_same_greedy(got, ref.generate(req), ref, ref.prompt_ids(req), "tool call on the graphs")
    assert bool(calls) == uncertainty and all(n > 1 for n in calls), calls


def test_no_device_memory_outlives_a_request(llama_engines, fake):
    ours, _ = llama_engines
    ours.generate(_chat(max_tokens=6))  # warm: graphs and workspaces exist
    live = len(fake.mem.blocks)
    seen = []
    for kw in ({}, {"should_stop": lambda: len(seen) >= 2, "on_token": seen.append}):
        ours.generate(_chat(max_tokens=6), **kw)
        assert len(fake.mem.blocks) == live, kw
    ours.generate(_chat(max_tokens=6, session_id="held"))
    assert len(fake.mem.blocks) == live + 2  # the session keeps its k and v
    ours.end_session("held")
    assert len(fake.mem.blocks) == live


def test_device_sampled_and_host_sampled_greedy_agree(llama_engines):
    """The bench's two loops: the engine's Generation path (graphs + GPU sampler) and the
    forward-pass loop (host logits + argmax), on the same engine."""
    from bench.runtime_vs_hf import prompt_ids, run_engine, run_ours

    ours, _ = llama_engines
    ids = prompt_ids(ours.tokenizer, 20, 1)
    ttft, decode, fast = run_engine(ours, ids, 10)
    _, _, host = run_ours(ours, ids, 10)
    assert fast == host and len(fast) == 10 and ttft > 0 and decode > 0


def test_bench_runtime_measures_the_engine_path_on_cuda(tiny_dirs, gpu):
    from bench.runtime_vs_hf import bench

    r = bench(tiny_dirs["qwen2"], gpu, runs=2, prompt_tokens=16, new_tokens=5, with_hf=False, start_runs=0)
    assert r["backend"] == "cuda" and "cuda-graphs" in r["ours_path"] and r["ours_path"].startswith("engine")
    assert len(r["ours_all"]["decode_tok_s"]) == 2 and r["ours"]["ttft_ms"] > 0


def test_fp16_checkpoint_runs_the_fp16_weight_kernels(tmp_path, gpu, fake):
    d = make_tiny("qwen2", tmp_path / "fp16-launches", seed=33, dtype="float16")
    engine = Engine.load(d, backend=gpu)
    fake.launches.clear()
    engine.generate(_chat(max_tokens=4))
    names = set(_names(fake))
    assert {"gemv_norm_store_f16", "gemv_residual_f16", "gemv_norm_swiglu_f16"} <= names, names
    assert not {"gemv_norm_store", "gemv_residual", "gemm_bf16"} & names, names


def test_a_step_past_the_cache_is_refused(llama_engines):
    ours, _ = llama_engines
    cache = ours.runner.new_cache(4)
    ours.runner.logits([5, 6, 7], cache)
    with pytest.raises(ValueError, match="capacity 4"):
        ours.runner.logits([1, 2], cache)
    assert cache.length == 3
    assert np.isfinite(ours.runner.logits([1], cache)).all() and cache.length == 4
    ours.runner.free_cache(cache)


def test_warm_up_captures_both_decode_graphs_before_the_first_request(tiny_dirs, gpu, fake):
    engine = Engine.load(tiny_dirs["llama"], backend=gpu)
    assert not engine.runner.graphs.decode.graphs
    engine.warm_up()
    assert set(engine.runner.graphs.decode.graphs) == {True, False}  # sampling and host-logits steps
    assert len(engine.sessions) == 0  # nothing kept
    fake.launches.clear()
    engine.generate(_chat(max_tokens=3))
    assert "sample_reduce" in _names(fake)  # and a real request runs as before

"""The engine on the CUDA backend, in each of conftest.py's modes (test_engine_on_fake_driver.py
adds what only the contract double can check): weights through the GPU loader, prompt and steps through
the graph runner, and the engine's behaviour the same as on numpy: greedy tokens, KV
sessions, stop strings, uncertainty, constrained tool calls, cancellation.

Greedy tokens must equal the numpy engine's; they may part only where numpy's top-2 logit
margin is below the bf16 tolerance (reported to $INLOOP_PARITY_REPORT), as in test_model.py.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from inloop.services.contract.generation import (
    ChatMessage,
    GenerateRequest,
    SamplingParams,
)
from inloop.services.contract.tool_calls import parse_tool_call
from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.tiny import make_tiny

from tests.conftest import ARCHS

from .parity import report

KV_TOOL = {"type": "function", "function": {
    "name": "kv", "description": "a key-value store",
    "parameters": {"type": "object", "properties": {
        "op": {"type": "string", "enum": ["get", "put", "increment"]}, "key": {"type": "string"},
        "amount": {"type": "number"}}, "required": ["op", "key"], "additionalProperties": False}}}


@pytest.fixture(scope="module", params=ARCHS)
def engines(request, tiny_dirs, gpu, cpu):
    """(engine on the CUDA backend, engine on numpy) for one tiny model."""
    d = tiny_dirs[request.param]
    return Engine.load(d, backend=gpu), Engine.load(d, backend=cpu)


def _chat(text="Summarize the receipt", max_tokens=20, session_id="", **kw) -> GenerateRequest:
    return GenerateRequest(messages=[ChatMessage("user", text)], sampling=SamplingParams(max_tokens=max_tokens, **kw),
                           session_id=session_id)


def _top2_margin_and_tol(ref_engine, ids: list[int]) -> tuple[float, float]:
    """numpy's top-2 logit margin for the token after ids, and the bf16 tolerance there."""
    cache = ref_engine.runner.new_cache(len(ids) + 1)
    logits = ref_engine.prefill(ids, cache)
    top = np.partition(logits, -2)[-2:]
    return float(top[1] - top[0]), 3e-2 * max(1.0, float(np.abs(logits).max()))


def assert_same_greedy(ours, ref, ref_engine, prompt_ids: list[int], what: str) -> int:
    """ours.token_ids == ref.token_ids, or they part where numpy's margin is within tolerance.
    Returns how many leading tokens agree."""
    a, b = ours.token_ids, ref.token_ids
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if a == b:
        return n
    assert n < min(len(a), len(b)), f"{what}: one output is a prefix of the other: {a} vs {b}"
    margin, tol = _top2_margin_and_tol(ref_engine, prompt_ids + b[:n])
    assert margin < tol, f"{what}: token {n} differs ({a[n]} vs numpy {b[n]}) with numpy margin {margin:.4g} >= {tol:.4g}"
    report({"test": "engine", "what": what, "step": n, "numpy_margin": margin, "tol": tol})
    return n


def assert_stats_close(ours, ref, n: int, what: str) -> None:
    """Per-token uncertainty within what bf16 weights/KV move it (a few 1e-2; statistics of a
    wrong distribution, e.g. temperature-scaled or grammar-masked, are off by far more)."""
    assert len(ours.token_stats) == len(ours.token_ids) and len(ref.token_stats) == len(ref.token_ids)
    for i, (s, r) in enumerate(zip(ours.token_stats[:n], ref.token_stats[:n])):
        assert abs(s.logprob - r.logprob) <= 3e-2 * max(1.0, abs(r.logprob)), (what, i, s, r)
        assert abs(s.entropy - r.entropy) <= 3e-2 * max(1.0, r.entropy), (what, i, s, r)
        assert abs(s.margin - r.margin) <= 3e-2, (what, i, s, r)


def test_engine_loads_through_the_gpu_loader_and_runs_graphs(engines):
    ours, ref = engines
    assert ours.runner.name == "cuda-graphs" and ours.runner.samples_on_device
    assert ours.info["step_runner"] == "cuda-graphs" and ref.info["step_runner"] == "forward"
    assert ours.model.upload_stats["tensors"] > 0  # loader.load_transformer, not the float32 host path
    assert ours.info["backend"] == "cuda" and ours.info["num_parameters"] == ref.info["num_parameters"]


def test_greedy_tokens_text_and_uncertainty_match_the_numpy_engine(engines):
    ours, ref = engines
    req = _chat(max_tokens=24, return_uncertainty=True)
    events = []
    got = ours.generate(req, on_token=events.append)
    want = ref.generate(_chat(max_tokens=24, return_uncertainty=True))
    n = assert_same_greedy(got, want, ref, ref.prompt_ids(req), "chat")
    assert_stats_close(got, want, n, "chat")
    assert "".join(e.text for e in events) == got.text
    if got.token_ids == want.token_ids:
        assert got.text == want.text and got.finish_reason == want.finish_reason
    assert got.timings.ttft_ms > 0 and got.timings.prefill_ms > 0
    raw = GenerateRequest(prompt="The quick brown fox", sampling=SamplingParams(max_tokens=12))
    assert_same_greedy(ours.generate(raw), ref.generate(raw), ref, ref.prompt_ids(raw), "raw prompt")


def task_step_two(first) -> dict:
    """The second model step of a task whose first answered "Find the receipt total" with
    `first`: the request's fields, with a tool result after the first answer."""
    follow = [ChatMessage("user", "Find the receipt total"), ChatMessage("assistant", first.text),
              ChatMessage("tool", '{"hits": []}')]
    return {"messages": follow, "sampling": SamplingParams(max_tokens=12)}


def test_session_reuses_the_prefix_in_the_runners_cache(engines):
    ours, ref = engines
    first = ours.generate(GenerateRequest(messages=[ChatMessage("user", "Find the receipt total")],
                                          sampling=SamplingParams(max_tokens=10), session_id="task-1"))
    step2 = task_step_two(first)
    fresh = ours.generate(GenerateRequest(**step2))
    hits = ours.sessions.hits
    reused = ours.generate(GenerateRequest(**step2, session_id="task-1"))
    assert ours.sessions.hits - hits >= first.prompt_tokens  # the whole first prompt came from the session
    assert reused.token_ids == fresh.token_ids
    req = GenerateRequest(**step2)
    assert_same_greedy(reused, ref.generate(req), ref, ref.prompt_ids(req), "session step 2")
    assert ours.end_session("task-1") and not ours.end_session("task-1")


def test_session_cache_grows_and_keeps_its_prefix(engines):
    ours, ref = engines
    ours.generate(_chat("Find the receipt total", max_tokens=6, session_id="grow"))
    held = ours.sessions.take("grow")
    small = held.cache.capacity
    ours.sessions.put("grow", held)
    msgs = [ChatMessage("user", "Find the receipt total"), ChatMessage("assistant", "ok"), ChatMessage("user", "more")]
    big = {"messages": msgs, "sampling": SamplingParams(max_tokens=small + 8)}  # needs a larger cache
    hits = ours.sessions.hits
    stop_after = 5

    def run(engine, **kw):
        seen = []
        return engine.generate(GenerateRequest(**big, **kw), on_token=seen.append,
                               should_stop=lambda: len(seen) >= stop_after)

    got, want = run(ours, session_id="grow"), run(ref)
    assert ours.sessions.hits > hits and got.completion_tokens == stop_after
    assert_same_greedy(got, want, ref, ref.prompt_ids(GenerateRequest(**big)), "grown session")
    ours.end_session("grow")


def test_stop_string_truncates_the_text_and_the_stream(engines):
    ours, ref = engines
    full = ours.generate(_chat(max_tokens=24))
    assert len(full.text) > 4, full.text
    stop = full.text[2:4]
    events = []
    cut = ours.generate(_chat(max_tokens=24, stop=(stop,)), on_token=events.append)
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
    assert "".join(e.text for e in events) == cut.text
    ref_full = ref.generate(_chat(max_tokens=24))
    if ref_full.token_ids == full.token_ids:
        assert ref.generate(_chat(max_tokens=24, stop=(stop,))).text == cut.text


def assert_tool_calls_match_numpy(ours, ref) -> None:
    """A forced call of the kv tool, without and with per-token uncertainty (the last row's
    logits / every row's): a valid call, numpy's greedy tokens, numpy's statistics."""
    jsonschema = pytest.importorskip("jsonschema")
    for uncertainty in (False, True):
        req = GenerateRequest(messages=[ChatMessage("user", "Increment the counter named visits")], tools=[KV_TOOL],
                              tool_choice="kv", sampling=SamplingParams(max_tokens=96, return_uncertainty=uncertainty))
        got = ours.generate(req)
        want = ref.generate(req)
        assert got.finish_reason == "tool_calls", got.text
        call = parse_tool_call(got.text)
        assert call.name == "kv"
        jsonschema.validate(call.arguments, KV_TOOL["function"]["parameters"])
        n = assert_same_greedy(got, want, ref, ref.prompt_ids(req), f"tool call (uncertainty={uncertainty})")
        if uncertainty:
            assert_stats_close(got, want, n, "tool call")


def assert_cancellation_stops_at_the_next_token(ours) -> None:
    """A request stopped after 3 tokens ends 'cancelled' with the first 3 of its free run, and
    the engine serves the same request as before afterwards."""
    before = ours.generate(_chat(max_tokens=8))
    seen = []
    cancelled = ours.generate(_chat(max_tokens=200), on_token=seen.append, should_stop=lambda: len(seen) >= 3)
    assert cancelled.finish_reason == "cancelled" and cancelled.completion_tokens == 3
    assert cancelled.token_ids == before.token_ids[:3]
    assert ours.generate(_chat(max_tokens=8)).token_ids == before.token_ids


def test_constrained_tool_call_matches_the_numpy_engine(engines):
    assert_tool_calls_match_numpy(*engines)   # graphs: the last row's logits / every row's (ALL_ROWS)


def test_cancellation_stops_at_the_next_token_and_leaves_the_engine_usable(engines):
    ours, _ = engines
    assert_cancellation_stops_at_the_next_token(ours)
    stopped_early = ours.generate(_chat(max_tokens=8), should_stop=lambda: True)
    assert stopped_early.finish_reason == "cancelled" and stopped_early.completion_tokens == 0


def test_seeded_sampling_on_the_gpu_repeats(engines):
    ours, _ = engines

    def run(seed):
        # no top-p: its threshold histogram is the sampler's one non-deterministic part
        return ours.generate(_chat(max_tokens=16, temperature=1.5, top_k=40, seed=seed, return_uncertainty=True))

    a, b = run(7), run(7)
    assert a.token_ids == b.token_ids and a.token_stats == b.token_stats
    assert all(s.logprob <= 1e-6 and s.entropy >= 0 and 0 <= s.margin <= 1 for s in a.token_stats)
    if a.uncertainty.max_entropy > 1.0:  # a flat enough distribution somewhere: the seed matters
        assert len({tuple(run(s).token_ids) for s in range(1, 5)}) > 1


@pytest.mark.parametrize("arch", ["qwen3", "qwen2"])  # q/k norm in the fused attention; biases
def test_fp16_checkpoint_keeps_fp16_weights_and_the_numpy_greedy_tokens(tmp_path, gpu, cpu, arch):
    d = make_tiny(arch, tmp_path / f"fp16-{arch}", seed=31, dtype="float16")
    ours, ref = Engine.load(d, backend=gpu), Engine.load(d, backend=cpu)
    layer = ours.model.layers[0]
    assert {ours.model.embed.dtype, layer.qkv.dtype, layer.input_norm.dtype, layer.down.dtype} == {"f16"}
    req = _chat(max_tokens=12)
    assert_same_greedy(ours.generate(req), ref.generate(req), ref, ours.prompt_ids(req), f"fp16 {arch}")


# ---- a SmolLM2-135M-shaped model (a GPU, or the kernel sources on the CPU at ~4 s a token) ------
@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory, gpu):
    from bench.cuda.models import make_random_model

    _not_on_contract_double(gpu)  # before writing 270 MB of weights
    work = os.environ.get("INLOOP_GPU_WORK")  # scripts/gpu_check.py: reuse (or leave) its model
    root = Path(work) if work else tmp_path_factory.mktemp("smollm2")
    return make_random_model(root / "smollm2-135m", "smollm2-135m", 0)


def _emulated(gpu) -> str:
    """'' on a GPU; 'source' or 'contract' on the driver double (fake_driver.py)."""
    fake = getattr(gpu, "fake_driver", None)
    return "" if fake is None else ("source" if fake.source is not None else "contract")


def _not_on_contract_double(gpu):
    if _emulated(gpu) == "contract":
        pytest.skip("SmolLM2 shapes take minutes in the numpy kernel contracts; the GPU and the "
                    "kernel-source emulator run this")


def _real_gpu_only(gpu):
    if _emulated(gpu):
        pytest.skip("a timing: only a GPU can give it")


def test_smollm2_shaped_engine_greedy_matches_numpy(gpu, cpu, smollm2_dir):
    ours, ref = Engine.load(smollm2_dir, backend=gpu), Engine.load(smollm2_dir, backend=cpu)
    steps = 8 if _emulated(gpu) else 24  # the CPU emulator takes ~4 s a token at these shapes
    req = GenerateRequest(prompt="Explain in two sentences why the sky is blue.",
                          sampling=SamplingParams(max_tokens=steps, return_uncertainty=True))
    got, want = ours.generate(req), ref.generate(req)
    n = assert_same_greedy(got, want, ref, ref.prompt_ids(req), "smollm2-shaped")
    # random weights of this size give logits of tens of units (bf16 errors of a few tenths),
    # so the statistics are reported here, and held to a tolerance on the tiny models
    diffs = [(abs(s.logprob - r.logprob), abs(s.entropy - r.entropy), abs(s.margin - r.margin))
             for s, r in zip(got.token_stats[:n], want.token_stats[:n])]
    report({"test": "engine_smollm2_stats", "emulated": _emulated(gpu) or None, "tokens_equal": n,
            "max_abs_diff_logprob_entropy_margin": [max(d) for d in zip(*diffs)] if diffs else None})
    assert len(got.token_stats) == len(got.token_ids) and all(s.logprob <= 1e-6 for s in got.token_stats)


def test_engine_fast_path_beats_the_op_path(gpu, smollm2_dir):
    """The engine bench's own loop (bench/runtime_vs_hf.py run_engine): graphs + GPU sampling
    against the same engine on the op-by-op forward pass, same GPU, same weights."""
    from inloop.services.runtime.engine.step_runner import ForwardStepRunner

    from bench.runtime_vs_hf import prompt_ids, run_engine

    _real_gpu_only(gpu)
    engine = Engine.load(smollm2_dir, backend=gpu)
    ids = prompt_ids(engine.tokenizer, 32, 0)
    run_engine(engine, ids, 4)  # capture the graphs
    fast = [run_engine(engine, ids, 64) for _ in range(3)]
    graphs_runner, engine.runner = engine.runner, ForwardStepRunner(engine.model)
    t = time.perf_counter()
    slow = run_engine(engine, ids, 16)
    slow_wall = time.perf_counter() - t
    engine.runner = graphs_runner
    fast_ms = sorted(d / 63 * 1e3 for _, d, _ in fast)[1]
    slow_ms = slow[1] / 15 * 1e3
    ttft_ms = sorted(t for t, _, _ in fast)[1] * 1e3
    report({"test": "engine_bench", "decode_ms_per_token_fast": fast_ms, "decode_ms_per_token_op_path": slow_ms,
            "ttft_ms_fast": ttft_ms, "ttft_ms_op_path": slow[0] * 1e3, "op_path_wall_s": slow_wall,
            "same_tokens_both_paths": fast[0][2][:16] == slow[2]})  # bf16 near-ties may part them
    assert fast_ms < slow_ms / 2, f"fast path {fast_ms:.3f} ms/token vs op path {slow_ms:.3f} ms/token"

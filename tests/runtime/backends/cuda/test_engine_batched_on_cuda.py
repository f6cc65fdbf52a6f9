"""The engine with --batching on over the CUDA backend, on a GPU and on the driver double's
kernel contracts: the batching core's steps on the GPU (paged pool, batch-invariant GEMMs,
bucket graphs, sampling in the step) behave as the numpy engine's core does: greedy tokens,
text and uncertainty, stop strings, constrained tool calls, cancellation, a task's pinned
blocks taken up by its next step, and concurrent requests through the runtime's Scheduler
(with preemption in a small pool) getting the tokens each gets alone. The kernels' own C runs
the same steps in test_paged.py (eager, graphs, sampled rows), so this module skips the
source mode (it would add two minutes to CI and check nothing new).
"""
from __future__ import annotations

import pytest

from inloop.services.contract.generation import (
    ChatMessage,
    GenerateRequest,
    SamplingParams,
)
from inloop.services.runtime.engine.engine import BatchConfig, Engine
from inloop.services.runtime.service.scheduler import Scheduler

from tests.conftest import ARCHS

from .test_engine_on_cuda import (
    assert_cancellation_stops_at_the_next_token,
    assert_same_greedy,
    assert_stats_close,
    assert_tool_calls_match_numpy,
    task_step_two,
)

MODES = ("device", "contract")
# a small pool: the double holds device memory in host memory (the default 2 GiB would be
# 131,072 blocks of a tiny model per engine)
BATCH = {"batching": "on", "block_size": 4, "max_num_batched_tokens": 16, "kv_cache_memory": 4 << 20}


@pytest.fixture(scope="module", params=ARCHS)
def engines(request, tiny_dirs, gpu, cpu):
    """(the batching core on the CUDA backend, the same on numpy) for one tiny model."""
    d = tiny_dirs[request.param]
    return Engine.load(d, backend=gpu, batch=BatchConfig(**BATCH)), Engine.load(d, backend=cpu)


def _chat(text="Summarize the receipt", max_tokens=20, session_id="", **kw) -> GenerateRequest:
    return GenerateRequest(messages=[ChatMessage("user", text)], sampling=SamplingParams(max_tokens=max_tokens, **kw),
                           session_id=session_id)


def test_the_core_runs_on_the_gpu(engines):
    ours, _ = engines
    assert ours.core is not None and ours.core.stepper is not None and ours.runner.name == "forward"
    assert ours.info["backend"] == "cuda" and ours.info["kv_cache"]["block_size"] == 4


def test_greedy_tokens_text_and_uncertainty_match_the_numpy_engine(engines):
    ours, ref = engines
    replays = ours.core.stepper.replays
    req = _chat(max_tokens=24, return_uncertainty=True)
    events = []
    got = ours.generate(req, on_token=events.append)
    want = ref.generate(req)
    n = assert_same_greedy(got, want, ref, ref.prompt_ids(req), "chat")
    assert_stats_close(got, want, n, "chat")
    assert "".join(e.text for e in events) == got.text
    assert ours.core.stepper.replays - replays >= len(got.token_ids) - 1   # decode steps replayed a graph


def test_stop_string_truncates_the_text(engines):
    ours, _ = engines
    full = ours.generate(_chat(max_tokens=24))
    assert len(full.text) > 4, full.text
    stop = full.text[2:4]
    cut = ours.generate(_chat(max_tokens=24, stop=(stop,)))
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(stop)]


def test_constrained_tool_call_matches_the_numpy_engine(engines):
    assert_tool_calls_match_numpy(*engines)   # forced text: every row's logits from an eager step


def test_cancellation_stops_at_the_next_token_and_frees_the_blocks(engines):
    ours, _ = engines
    assert_cancellation_stops_at_the_next_token(ours)
    assert not ours.core.open_seqs


def test_a_tasks_next_step_takes_up_its_pinned_blocks(engines):
    ours, ref = engines
    first = ours.generate(_chat("Find the receipt total", max_tokens=10, session_id="task-1"))
    assert ours.core.manager.pinned_blocks() > 0
    step2 = task_step_two(first)
    fresh = ours.generate(GenerateRequest(**step2))
    computed = ours.core.tokens_computed
    reused = ours.generate(GenerateRequest(**step2, session_id="task-1"))
    assert ours.core.tokens_computed - computed < reused.prompt_tokens   # the pinned prefix was not recomputed
    assert reused.token_ids == fresh.token_ids
    assert_same_greedy(reused, ref.generate(GenerateRequest(**step2)), ref,
                       ref.prompt_ids(GenerateRequest(**step2)), "session step 2")
    assert ours.end_session("task-1") and ours.core.manager.pinned_blocks() == 0


def test_concurrent_requests_through_the_scheduler_get_their_alone_tokens(tiny_dirs, gpu):
    """Six requests at once through the runtime's Scheduler, in a pool of 24 blocks of 4
    positions that cannot hold them all: preempted ones are recomputed, and every request
    gets the tokens it gets alone."""
    d = tiny_dirs[ARCHS[0]]
    engine = Engine.load(d, backend=gpu, batch=BatchConfig(**BATCH, num_blocks_override=24))
    reqs = [_chat(t, max_tokens=12, ignore_eos=True) for t in
            ("Hi", "The receipt lists bread, milk and coffee", "Name three fruits", "Once upon a time",
             "Count to five", "What is the capital of France")]
    alone = [engine.generate(r).token_ids for r in reqs]
    sched = Scheduler(lambda: engine, 16).start()
    try:
        sched.ready.result(timeout=60)
        handles = [sched.submit(r) for r in reqs]
        together = [h.future.result(timeout=300).token_ids for h in handles]
    finally:
        sched.close()
    assert together == alone
    assert engine.core.preemptions > 0 and engine.core.stepper.replays > 0


def test_seeded_sampling_draws_on_the_device_the_same_alone_and_in_a_batch(tiny_dirs, gpu):
    """Free picks are drawn in the step on the GPU (each row with its own temperature, top-k,
    seed and token index): a seeded request gets the same tokens and statistics alone and
    beside others through the Scheduler, and different seeds differ."""
    d = tiny_dirs[ARCHS[0]]
    engine = Engine.load(d, backend=gpu, batch=BatchConfig(**BATCH))
    assert engine.samples_on_device and engine.core.samples_on_device
    reqs = [_chat(t, max_tokens=10, temperature=1.5, top_k=k, seed=seed, return_uncertainty=True, ignore_eos=True)
            for t, k, seed in (("Hi", 0, 1), ("Name three fruits", 40, 2), ("Once upon a time", 5, 3))]
    alone = [engine.generate(r) for r in reqs]
    assert alone[0].token_ids == engine.generate(reqs[0]).token_ids   # a seed repeats
    if max(s.entropy for s in alone[0].token_stats) > 1.0:   # flat enough somewhere: the seed matters
        others = {tuple(engine.generate(_chat("Hi", max_tokens=10, temperature=1.5, seed=s, ignore_eos=True)).token_ids)
                  for s in range(4, 8)}
        assert len(others) > 1
    sched = Scheduler(lambda: engine, 16).start()
    try:
        sched.ready.result(timeout=60)
        together = [h.future.result(timeout=300) for h in [sched.submit(r) for r in reqs]]
    finally:
        sched.close()
    for a, t in zip(alone, together):
        assert t.token_ids == a.token_ids and t.token_stats == a.token_stats
        assert all(s.logprob <= 1e-6 and s.entropy >= 0 and 0 <= s.margin <= 1 for s in a.token_stats)

"""Continuous batching through the Scheduler on a tiny model: concurrent streams get the tokens
they get alone, cancel/deadline of one leaves the others alone, a small pool preempts and
still finishes all, no KV block leaks, a shared system prompt is served from the prefix cache."""
from __future__ import annotations

import threading
import time

import pytest

from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.generation import ChatMessage, GenerateRequest, SamplingParams
from inloop.services.runtime.engine.engine import BatchConfig, Engine
from inloop.services.runtime.service.scheduler import QueueFull, RequestExpired, Scheduler

NEAR_TIE = 1e-4
SYSTEM = ("You are a careful assistant for a shop. Answer in one short sentence, quote the receipt "
          "numbers exactly, and never invent an item that is not on the receipt.")


def _chat(user, max_tokens=12, system=None, **sampling):
    msgs = ([ChatMessage("system", system)] if system else []) + [ChatMessage("user", user)]
    return GenerateRequest(messages=msgs, sampling=SamplingParams(max_tokens=max_tokens, return_uncertainty=True,
                                                                  **sampling))


REQUESTS = [
    _chat("Summarize the receipt", 14),
    _chat("What is 17 * 23?", 9),
    _chat("Name three fruits", 20, stop=("e",)),
    _chat("Write a haiku about tea and biscuits on a rainy afternoon", 6),
    _chat("Translate hello", 17, temperature=0.8, seed=7),
    _chat("List the items", 11, system=SYSTEM),
    GenerateRequest(prompt="Once upon a time", sampling=SamplingParams(max_tokens=13, return_uncertainty=True)),
]


def _engine(tiny_llama, **batch):
    return Engine.load(tiny_llama, batch=BatchConfig(**batch))


def _serve(engine, max_queue=16):
    sched = Scheduler(lambda: engine, max_queue).start()
    sched.ready.result(timeout=30)
    return sched


def _submit_all(sched, reqs, **kw):
    """Submit every request at once from plain threads; the results and streamed texts."""
    texts = [[] for _ in reqs]
    handles = [sched.submit(r, on_token=lambda e, i=i: texts[i].append(e.text), **kw) for i, r in enumerate(reqs)]
    return handles, texts


def _same_or_near_tie(alone, batched, label, ties):
    """Greedy tokens equal, except after a step whose top-2 margin alone was under NEAR_TIE
    (OpenBLAS gives a row alone and in a batch slightly different bits): reported, not failed."""
    if batched.token_ids == alone.token_ids:
        return
    i = next((k for k, (a, b) in enumerate(zip(alone.token_ids, batched.token_ids)) if a != b),
             min(len(alone.token_ids), len(batched.token_ids)))
    margin = alone.token_stats[i].margin if i < len(alone.token_stats) else 1.0
    assert margin < NEAR_TIE, f"{label}: diverged at token {i} with a top-2 margin of {margin:.3g}"
    ties.append((label, i, margin))


def _no_leak(engine):
    core = engine.core
    deadline = time.monotonic() + 5
    while (core.pool.num_used or core.open_seqs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert core.pool.num_used == core.manager.pinned_blocks() == 0 and core.open_seqs == 0
    assert not core.running and not core.waiting


def test_concurrent_streams_get_the_tokens_they_get_alone(tiny_llama):
    engine = _engine(tiny_llama, enable_prefix_caching=False)
    alone = [engine.generate(r) for r in REQUESTS]          # inline: a batch of one each
    sched = _serve(engine)
    try:
        handles, texts = _submit_all(sched, REQUESTS)
        batched = [h.future.result(timeout=60) for h in handles]
    finally:
        sched.close()
    assert engine.core.steps > 0
    ties = []
    for k, (a, b, r) in enumerate(zip(alone, batched, REQUESTS)):
        assert "".join(texts[k]) == b.text
        if r.sampling.temperature == 0:
            _same_or_near_tie(a, b, f"request {k}", ties)
        else:   # seeded sampling: same draws over the same distribution
            assert b.completion_tokens == a.completion_tokens or b.finish_reason == a.finish_reason
        assert b.finish_reason == a.finish_reason or ties
    print("near ties:", ties)
    _no_leak(engine)
    # the scheduler is gone: the core runs a caller's feeds inline again instead of parking
    # them for a loop thread that has ended
    assert engine.core.loop_thread is None
    assert engine.generate(REQUESTS[0]).completion_tokens == alone[0].completion_tokens


def test_chunked_prefill_under_a_small_token_budget_changes_nothing(tiny_llama):
    engine = _engine(tiny_llama, max_num_batched_tokens=7, enable_prefix_caching=False)
    req = _chat("Summarize the receipt", 10, system=SYSTEM)
    alone = engine.generate(req)
    steps = engine.core.steps
    assert steps >= alone.prompt_tokens // 7 + alone.completion_tokens - 1   # the prompt in chunks
    sched = _serve(engine)
    try:
        handles, _ = _submit_all(sched, [req, REQUESTS[0], REQUESTS[1]])
        results = [h.future.result(timeout=60) for h in handles]
    finally:
        sched.close()
    ties = []
    _same_or_near_tie(alone, results[0], "chunked", ties)
    _no_leak(engine)


def test_cancelling_or_expiring_one_stream_leaves_the_others_untouched(tiny_llama):
    engine = _engine(tiny_llama, enable_prefix_caching=False)
    keep = [REQUESTS[0], REQUESTS[3], REQUESTS[6]]
    alone = [engine.generate(r) for r in keep]
    long = _chat("Tell a long story", 400, ignore_eos=True)
    sched = _serve(engine)
    try:
        first_token = threading.Event()
        victim = sched.submit(long, on_token=lambda e: first_token.set())
        # its reader takes 5 ms a token, so 400 tokens outlast the 0.3 s deadline on any machine
        # (the tiny model alone can write them in less)
        expiring = sched.submit(_chat("Another long story", 400, ignore_eos=True), timeout_s=0.3,
                                on_token=lambda e: time.sleep(0.005))
        handles, _ = _submit_all(sched, keep)
        assert first_token.wait(30)
        victim.cancel()
        cancelled = victim.future.result(timeout=30)
        results = [h.future.result(timeout=60) for h in handles]
        try:
            expired = expiring.future.result(timeout=30)
            assert expired.finish_reason == "cancelled" and expired.completion_tokens < 400
        except RequestExpired:
            pass
    finally:
        sched.close()
    assert cancelled.finish_reason == "cancelled" and cancelled.completion_tokens < 400
    ties = []
    for k, (a, b) in enumerate(zip(alone, results)):
        _same_or_near_tie(a, b, f"kept {k}", ties)
    _no_leak(engine)


def test_a_pool_too_small_for_the_load_preempts_and_still_finishes_every_request(tiny_llama):
    # 20 blocks of 4 positions; each request needs more than half of them and runs 40 steps,
    # so any two that meet preempt, and they meet however late their threads start
    engine = _engine(tiny_llama, block_size=4, num_blocks_override=20, enable_prefix_caching=False)
    reqs = [_chat(text, 40, ignore_eos=True) for text in ("Summarize the receipt", "What is 17 * 23?",
                                                          "Name three fruits", "Translate hello")]
    assert all(10 * 4 < len(engine.prompt_ids(r)) + 40 <= 20 * 4 for r in reqs)
    alone = [engine.generate(r) for r in reqs]
    sched = _serve(engine)
    try:
        handles, _ = _submit_all(sched, reqs)
        results = [h.future.result(timeout=120) for h in handles]
    finally:
        sched.close()
    assert engine.core.preemptions > 0
    ties = []
    for k, (a, b) in enumerate(zip(alone, results)):
        _same_or_near_tie(a, b, f"preempted {k}", ties)
    _no_leak(engine)


def test_the_context_is_capped_by_what_the_pool_holds(tiny_llama):
    engine = _engine(tiny_llama, block_size=4, num_blocks_override=3)
    assert engine.max_context == 12 and engine.info["context_length"] == 12
    with pytest.raises(InvalidRequest, match="holds 12"):
        engine.generate(_chat("Summarize the receipt", 4, system=SYSTEM))
    _no_leak(engine)


def test_a_shared_system_prompt_is_served_from_the_prefix_cache(tiny_llama):
    engine = _engine(tiny_llama)
    first = engine.generate(_chat("List the items", 4, system=SYSTEM))
    computed, hits = engine.core.tokens_computed, engine.core.pool.hit_tokens
    second = engine.generate(_chat("What did I buy?", 4, system=SYSTEM))
    shared = len(engine.prompt_ids(_chat("", system=SYSTEM)))
    bs = engine.core.pool.block_size
    assert engine.core.pool.hit_tokens - hits >= (shared // bs - 1) * bs > 0   # counted ...
    ran = engine.core.tokens_computed - computed                               # ... and not prefilled
    assert ran <= second.prompt_tokens - (shared // bs - 1) * bs + second.completion_tokens
    assert first.prompt_tokens > 0
    _no_leak(engine)


def test_beyond_max_queue_requests_are_refused(tiny_llama):
    engine = _engine(tiny_llama, max_num_seqs=1)
    sched = _serve(engine, max_queue=1)
    try:
        long = _chat("Tell a long story", 200, ignore_eos=True)
        running = sched.submit(long)
        deadline = time.monotonic() + 10
        while sched.queued() and time.monotonic() < deadline:   # wait until it is admitted
            time.sleep(0.01)
        waiting = sched.submit(long)
        with pytest.raises(QueueFull):
            sched.submit(long)
        running.cancel()
        waiting.cancel()
    finally:
        sched.close()
    _no_leak(engine)


TOOL = {"type": "function", "function": {
    "name": "kv", "description": "a key-value store", "parameters": {
        "type": "object", "properties": {"op": {"type": "string", "enum": ["get", "put"]}, "key": {"type": "string"},
                                         "amount": {"type": "integer"}},
        "required": ["op", "key"], "additionalProperties": False}}}


def test_constrained_tool_calls_batch_beside_free_streams(tiny_llama):
    """Grammar masks are per row: forced tool calls (host logits, forced text with statistics)
    run in the same steps as free sampling and give what they give alone."""
    engine = _engine(tiny_llama, enable_prefix_caching=False)
    calls = [GenerateRequest(messages=[ChatMessage("user", f"Store item {i}")], tools=[TOOL],
                             tool_choice=choice, sampling=SamplingParams(max_tokens=40, return_uncertainty=True))
             for i, choice in enumerate(("required", "kv", "auto"))]
    reqs = calls + REQUESTS[:3]
    alone = [engine.generate(r) for r in reqs]
    sched = _serve(engine)
    try:
        handles, _ = _submit_all(sched, reqs)
        batched = [h.future.result(timeout=120) for h in handles]
    finally:
        sched.close()
    ties = []
    for k, (a, b) in enumerate(zip(alone, batched)):
        _same_or_near_tie(a, b, f"request {k}", ties)
        if not ties:
            assert (b.text, b.finish_reason) == (a.text, a.finish_reason)
    assert batched[0].finish_reason in ("tool_calls", "length")
    _no_leak(engine)

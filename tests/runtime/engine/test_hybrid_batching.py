"""Qwen3.5 (tiny random, both layer kinds) through the batching core, several sequences per step:
each sequence's logits equal Qwen35Model.forward on it alone and its greedy tokens equal HF
generate, with prompts prefilled in chunks beside other sequences' decode rows; concurrent
requests through the Scheduler get the tokens they get alone; a cancelled one and preempted
ones give back their state slots and KV blocks."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from inloop.services.contract.generation import GenerateRequest, SamplingParams
from inloop.services.runtime.engine.engine import BatchConfig, Engine
from inloop.services.runtime.model.tiny_qwen3_5 import make_tiny_qwen3_5
from inloop.services.runtime.service.scheduler import Scheduler
from tests.conftest import requires_reference

ATOL, RTOL = 1e-5, 1e-4
NEAR_TIE = 1e-4
L, F = "linear_attention", "full_attention"
PATTERNS = {"3lin_1full": (L, L, L, F), "full_first": (F, L, L)}
TEXTS = ["Hi there",
         "The receipt from Corner Market on 2026-03-14 lists bread 2.50, milk 1.20 and coffee 7.90, "
         "paid by card at the till near the door",
         "Name three fruits and a vegetable",
         "Once upon a time a small robot"]
DECODE_STEPS = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("q35batch")
    return {name: make_tiny_qwen3_5(root / name, layers, vision=False, seed=20 + i)
            for i, (name, layers) in enumerate(PATTERNS.items())}


def _run_together(engine: Engine, prompts: list[list[int]], steps: int):
    """Each prompt on its own thread, fed to the core whole (all logits) and then `steps`
    greedy tokens one at a time, while a loop thread steps the core as the Scheduler does.
    Returns each sequence's logits [len(prompt) + steps, V], its greedy tokens (steps + 1),
    and the (rows, context) of every sequence of every step."""
    core, model = engine.core, engine.model
    plans, stop = [], threading.Event()
    forward_paged = model.forward_paged

    def spy(ids, positions, kv, seqs, logit_rows):
        plans.append([(s.rows, s.context) for s in seqs])
        return forward_paged(ids, positions, kv, seqs, logit_rows)

    def loop():
        with core.cond:
            while core.busy > 0 and not stop.is_set():   # every first feed is posted before the first step
                core.cond.wait(0.01)
            while not stop.is_set():
                if not core.step():
                    core.cond.wait(0.01)

    out: list = [None] * len(prompts)

    def request(i: int, seq):
        try:
            rows = [core.feed(seq, prompts[i], all_logits=True)]
            tokens = [int(rows[-1][-1].argmax())]
            for _ in range(steps):
                rows.append(core.feed(seq, [tokens[-1]]))
                tokens.append(int(rows[-1][-1].argmax()))
            out[i] = (np.concatenate(rows), tokens)
        finally:
            core.close(seq)

    model.forward_paged = spy
    looper = threading.Thread(target=loop, daemon=True)
    core.loop_thread = looper   # the request threads park their feeds for it
    try:
        threads = [threading.Thread(target=request, args=(i, core.open()), daemon=True) for i in range(len(prompts))]
        for t in threads:
            t.start()
        looper.start()
        for t in threads:
            t.join(120)
    finally:
        stop.set()
        if looper.is_alive():
            looper.join(10)
        del model.forward_paged
        core.loop_thread = None
    assert all(o is not None for o in out), "a request thread failed"
    return out, plans


def _alone(model, prompt: list[int], tokens: list[int]) -> np.ndarray:
    """Qwen35Model.forward on one sequence: the prompt at once, then the tokens one by one."""
    cache = model.new_cache(len(prompt) + len(tokens) + 1)
    rows = [model.forward(np.asarray(prompt, np.int32), np.arange(len(prompt), dtype=np.int32), cache, True)]
    cache.length = len(prompt)
    for t in tokens:
        rows.append(model.forward(np.asarray([t], np.int32), np.asarray([cache.length], np.int32), cache))
        cache.length += 1
    return np.concatenate(rows)


def _assert_close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.shape == ref.shape, what
    excess = np.abs(ours - ref) - (ATOL + RTOL * np.abs(ref))
    worst = np.unravel_index(int(excess.argmax()), excess.shape)
    assert excess.max() <= 0, f"{what}: at {worst} ours {ours[worst]:.7g} alone {ref[worst]:.7g}"


def _batched_run(model_dir):
    # 8 tokens a step: the long prompt is prefilled over several steps beside the others' decode rows
    engine = Engine.load(model_dir, batch=BatchConfig(block_size=4, max_num_batched_tokens=8))
    prompts = [engine.tokenizer.encode(t, add_special_tokens=True) for t in TEXTS]
    assert len({len(p) for p in prompts}) == len(prompts) and max(len(p) for p in prompts) > 3 * 8
    out, plans = _run_together(engine, prompts, DECODE_STEPS)
    return engine, prompts, out, plans


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_sequences_stepped_together_match_each_alone(pattern, models):
    engine, prompts, out, plans = _batched_run(models[pattern])
    # the core did batch: several sequences in a step, a prompt's later chunk beside a decode row
    assert max(len(p) for p in plans) > 1
    assert any(any(r > 1 and c > r for r, c in p) and any(r == 1 for r, c in p) for p in plans), plans
    assert any(sum(r == 1 for r, c in p) > 1 for p in plans), plans   # decode rows in one recurrence call
    for i, (prompt, (logits, tokens)) in enumerate(zip(prompts, out)):
        _assert_close(logits, _alone(engine.model, prompt, tokens[:-1]), f"sequence {i}")
    assert_nothing_held(engine)


@requires_reference
@pytest.mark.reference
def test_greedy_tokens_stepped_together_equal_hf_generate(models):
    import torch

    from tests.runtime.model.parity import hf_model

    engine, prompts, out, _ = _batched_run(models["3lin_1full"])
    hf = hf_model(models["3lin_1full"])
    for i, (prompt, (_, tokens)) in enumerate(zip(prompts, out)):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([prompt]), max_new_tokens=len(tokens), do_sample=False,
                              eos_token_id=None, pad_token_id=0)
        assert tokens == ref[0, len(prompt):].tolist(), f"sequence {i}"


# ---- through the Scheduler -------------------------------------------------------------------
def _req(text: str, max_tokens: int, **kw) -> GenerateRequest:
    return GenerateRequest(prompt=text, sampling=SamplingParams(max_tokens=max_tokens, ignore_eos=True,
                                                                return_uncertainty=True, **kw))


REQUESTS = [_req(TEXTS[0], 14), _req(TEXTS[1], 9), _req(TEXTS[2], 20), _req(TEXTS[3], 11),
            _req("A haiku about tea", 16)]


def _serve(engine):
    sched = Scheduler(lambda: engine, 16).start()
    sched.ready.result(timeout=30)
    return sched


def _serve_all(engine, reqs):
    """Submit every request at once to a scheduler over `engine`; their results."""
    sched = _serve(engine)
    try:
        handles = [sched.submit(r) for r in reqs]
        return [h.future.result(timeout=120) for h in handles]
    finally:
        sched.close()


def _same_or_near_tie(alone, batched, label):
    """Greedy tokens equal, except after a step whose top-2 margin alone was under NEAR_TIE
    (a row alone and in a batch may differ in the last bits)."""
    if batched.token_ids == alone.token_ids:
        return
    i = next(k for k, (a, b) in enumerate(zip(alone.token_ids, batched.token_ids)) if a != b)
    assert alone.token_stats[i].margin < NEAR_TIE, f"{label}: diverged at token {i}"


def assert_nothing_held(engine: Engine) -> None:
    core, manager = engine.core, engine.core.manager
    deadline = time.monotonic() + 5
    while (core.pool.num_used or core.open_seqs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert core.pool.num_used == 0 and core.open_seqs == 0 and not core.running and not core.waiting
    assert len(manager.states.free) == manager.states.num_slots and not manager.pins


def test_concurrent_requests_get_the_tokens_they_get_alone(models):
    engine = Engine.load(models["3lin_1full"], batch=BatchConfig(max_num_batched_tokens=16))
    alone = [engine.generate(r) for r in REQUESTS]           # inline: a batch of one each
    steps = engine.core.steps
    batched = _serve_all(engine, REQUESTS)
    # fewer steps than the requests alone took: they ran together
    assert engine.core.steps - steps < steps
    for k, (a, b) in enumerate(zip(alone, batched)):
        _same_or_near_tie(a, b, f"request {k}")
    assert_nothing_held(engine)


def test_a_cancelled_request_gives_back_its_state_slot_and_blocks(models):
    engine = Engine.load(models["3lin_1full"])
    keep = REQUESTS[:3]
    alone = [engine.generate(r) for r in keep]
    sched = _serve(engine)
    try:
        first_token = threading.Event()
        victim = sched.submit(_req("Tell a long story", 400), on_token=lambda e: (first_token.set(), time.sleep(0.002)))
        handles = [sched.submit(r) for r in keep]
        assert first_token.wait(30)
        with engine.core.cond:
            assert engine.core.manager.states.num_slots - len(engine.core.manager.states.free) >= 1
        victim.cancel()
        cancelled = victim.future.result(timeout=30)
        results = [h.future.result(timeout=60) for h in handles]
    finally:
        sched.close()
    assert cancelled.finish_reason == "cancelled" and cancelled.completion_tokens < 400
    for k, (a, b) in enumerate(zip(alone, results)):
        _same_or_near_tie(a, b, f"kept {k}")
    assert_nothing_held(engine)


def test_a_pool_too_small_preempts_and_every_request_still_gets_its_tokens(models):
    # 20 blocks of 4 positions; each request needs 11 to 13 of them (long enough that they
    # overlap however late their threads start), so a second running one already preempts
    engine = Engine.load(models["3lin_1full"], batch=BatchConfig(block_size=4, num_blocks_override=20,
                                                                 max_num_batched_tokens=16))
    reqs = [_req(TEXTS[0], 40), _req(TEXTS[2], 40), _req(TEXTS[3], 40), _req("A haiku about tea", 40)]
    alone = [engine.generate(r) for r in reqs]
    results = _serve_all(engine, reqs)
    assert engine.core.preemptions > 0
    for k, (a, b) in enumerate(zip(alone, results)):
        _same_or_near_tie(a, b, f"preempted {k}")
    assert_nothing_held(engine)

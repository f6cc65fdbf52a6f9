"""The engine with a hybrid model (Qwen3.5, tiny random) in the batching core: generation end
to end, a task's pinned linear-attention state continued (or started afresh when the next
prompt does not continue it), prefix caching off for such models."""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.contract.generation import GenerateRequest, SamplingParams
from inloop.services.runtime.engine.engine import BatchConfig, Engine
from inloop.services.runtime.model.tiny_qwen3_5 import make_tiny_qwen3_5

PROMPT = "The receipt from Corner Market lists bread and milk"


@pytest.fixture(scope="module")
def qwen35_dir(tmp_path_factory):
    return make_tiny_qwen3_5(tmp_path_factory.mktemp("q35") / "m", seed=11)


def _req(prompt: str, session: str = "", max_tokens: int = 6) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, session_id=session,
                           sampling=SamplingParams(max_tokens=max_tokens, ignore_eos=True))


def assert_nothing_held(engine: Engine) -> None:
    """Every KV block and state slot is back in its pool, no pin holds any."""
    core, manager = engine.core, engine.core.manager
    assert core.pool.num_used == 0 and not manager.pins and core.open_seqs == 0
    assert len(manager.states.free) == manager.states.num_slots


def test_generates_through_the_batching_core_on_auto_backend(qwen35_dir):
    engine = Engine.load(qwen35_dir, backend="auto")   # auto: cpu for the hybrid model
    assert engine.info["arch"] == "qwen3_5" and engine.model.backend.name == "cpu"
    assert engine.core is not None and engine.sessions is None
    # KV blocks for the one full-attention layer only; a state slot per running or pinned sequence
    assert engine.core.kv.k.shape[0] == 1 and engine.core.kv.recurrent.shape[:2] == (64, 3)
    assert engine.info["kv_cache"]["state_slots"] == 2 * engine.info["kv_cache"]["max_num_seqs"] == 64
    first = engine.generate(_req(PROMPT))
    assert len(first.token_ids) == 6 and first.finish_reason == "length"
    assert engine.generate(_req(PROMPT)).token_ids == first.token_ids
    assert_nothing_held(engine)


def test_a_session_continues_its_pinned_state_and_a_diverging_one_starts_afresh(qwen35_dir):
    # blocks of 4 positions: the pinned prompt ends inside a block, which the next step fills on
    engine = Engine.load(qwen35_dir, batch=BatchConfig(block_size=4))
    fresh = Engine.load(qwen35_dir)
    core, manager = engine.core, engine.core.manager
    engine.generate(_req(PROMPT, "task", max_tokens=1))  # the pin holds the prompt's state and blocks
    held = len(engine.prompt_ids(_req(PROMPT)))
    assert held % 4 and manager.pinned_states() == 1 and len(manager.pins["task"].tokens) == held
    assert manager.pinned_blocks() == -(-held // 4) == core.pool.num_used

    # the next step continues every token the state holds: only what is new is computed
    follow = PROMPT + " and coffee" + " and bread" * 6
    computed, hits = core.tokens_computed, core.pool.hit_tokens
    got = engine.generate(_req(follow, "task"))
    assert core.pool.hit_tokens - hits == held
    assert core.tokens_computed - computed == got.prompt_tokens - held + 5   # 6 tokens out: 5 fed
    assert got.token_ids == fresh.generate(_req(follow)).token_ids

    # a prompt sharing only part of the state cannot use it (the state cannot be cut back) ...
    hits = core.pool.hit_tokens
    other = "The receipt from Corner Market lists coffee"
    assert engine.generate(_req(other, "task")).token_ids == fresh.generate(_req(other)).token_ids
    # ... nor can one that is exactly the state's tokens (one token must run for its logits)
    engine.generate(_req(other, "task", max_tokens=1))
    assert engine.generate(_req(other, "task")).token_ids == fresh.generate(_req(other)).token_ids
    assert core.pool.hit_tokens == hits

    # the task ends: its slot and blocks go back
    assert engine.end_session("task")
    assert_nothing_held(engine)


def test_pinned_states_give_way_to_running_sequences(qwen35_dir):
    """Pins hold at most the spare slots; a sequence that needs a slot drops the oldest pin."""
    engine = Engine.load(qwen35_dir, batch=BatchConfig(max_num_seqs=1))
    manager = engine.core.manager
    assert manager.states.num_slots == 2
    engine.generate(_req(PROMPT, "a", max_tokens=1))
    engine.generate(_req(PROMPT, "b", max_tokens=1))
    assert list(manager.pins) == ["a", "b"] and not manager.states.free
    engine.generate(_req("Hello"))                     # the oldest pin (a) gives its slot up
    assert list(manager.pins) == ["b"] and manager.pin_evictions == 1
    assert engine.generate(_req(PROMPT + " and tea", "b")).token_ids == \
        engine.generate(_req(PROMPT + " and tea")).token_ids
    engine.end_session("b")
    assert_nothing_held(engine)


def test_a_model_of_linear_layers_only_runs_in_the_core(tmp_path):
    model_dir = make_tiny_qwen3_5(tmp_path / "lin", ("linear_attention", "linear_attention"), vision=False)
    engine = Engine.load(model_dir)
    assert engine.core.kv.k.shape[0] == 0   # no KV at all: only the state slots
    got = engine.generate(_req(PROMPT))
    ids = engine.prompt_ids(_req(PROMPT))
    model, cache = engine.model, engine.model.new_cache(len(ids) + 8)
    logits = model.forward(np.asarray(ids, np.int32), np.arange(len(ids), dtype=np.int32), cache)
    tokens = [int(logits[-1].argmax())]
    for pos in range(len(ids), len(ids) + 5):
        tokens.append(int(model.forward(np.asarray(tokens[-1:], np.int32), np.asarray([pos], np.int32),
                                        cache)[-1].argmax()))
    assert got.token_ids == tokens
    assert_nothing_held(engine)


def test_prefix_caching_stays_off_for_hybrid_models_and_says_so(qwen35_dir, log_events):
    engine = Engine.load(qwen35_dir)
    with log_events() as logs:
        engine.prefix_cache = True
    assert engine.prefix_cache is False and engine.core.manager.enable_prefix_caching is False
    assert any(e["event"] == "prefix_cache_off" for e in logs), logs
    engine.generate(_req(PROMPT))
    engine.generate(_req(PROMPT))
    assert engine.core.pool.hit_tokens == 0   # the second prompt recomputed every token

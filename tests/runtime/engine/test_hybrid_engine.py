"""The engine with a hybrid model (Qwen3.5, tiny random): generation end to end at batch 1,
sessions that carry the linear-attention state, and prefix caching off for such models."""
from __future__ import annotations

import pytest

from inloop.services.contract.generation import GenerateRequest, SamplingParams
from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.tiny_qwen3_5 import make_tiny_qwen3_5

PROMPT = "The receipt from Corner Market lists bread and milk"


@pytest.fixture(scope="module")
def qwen35_dir(tmp_path_factory):
    return make_tiny_qwen3_5(tmp_path_factory.mktemp("q35") / "m", seed=11)


def _req(prompt: str, session: str = "", max_tokens: int = 6) -> GenerateRequest:
    return GenerateRequest(prompt=prompt, session_id=session,
                           sampling=SamplingParams(max_tokens=max_tokens, ignore_eos=True))


def test_generates_through_the_engine_on_auto_backend(qwen35_dir):
    engine = Engine.load(qwen35_dir, backend="auto")   # auto: cpu for the hybrid model
    assert engine.info["arch"] == "qwen3_5" and engine.model.backend.name == "cpu"
    first = engine.generate(_req(PROMPT))
    assert len(first.token_ids) == 6 and first.finish_reason == "length"
    assert engine.generate(_req(PROMPT)).token_ids == first.token_ids


def test_a_session_continues_its_state_and_a_diverging_one_starts_afresh(qwen35_dir):
    engine = Engine.load(qwen35_dir)
    fresh = Engine.load(qwen35_dir)
    engine.generate(_req(PROMPT, "task", max_tokens=1))  # the session holds the prompt's tokens
    # the next step continues everything the session holds: the state is reused
    follow = PROMPT + " and coffee"
    hits = engine.sessions.hits
    got = engine.generate(_req(follow, "task"))
    assert engine.sessions.hits > hits
    assert got.token_ids == fresh.generate(_req(follow)).token_ids
    # a prompt that shares only part of the session cannot reuse it (no rewinding the state)
    hits = engine.sessions.hits
    other = "The receipt from Corner Market lists coffee"
    assert engine.generate(_req(other, "task")).token_ids == fresh.generate(_req(other)).token_ids
    assert engine.sessions.hits == hits


def test_a_session_that_outgrows_its_cache_keeps_the_state(qwen35_dir):
    engine = Engine.load(qwen35_dir)
    fresh = Engine.load(qwen35_dir)
    engine.generate(_req(PROMPT, "long", max_tokens=1))
    capacity = engine.sessions._sessions["long"].cache.capacity
    follow = PROMPT + " bread" * (capacity + 10)
    got = engine.generate(_req(follow, "long", max_tokens=4))
    assert engine.sessions._sessions["long"].cache.capacity > capacity
    assert got.token_ids == fresh.generate(_req(follow, max_tokens=4)).token_ids


def test_prefix_caching_stays_off_for_hybrid_models_and_says_so(qwen35_dir, log_events):
    engine = Engine.load(qwen35_dir)
    with log_events() as logs:
        engine.prefix_cache = True
    assert engine.prefix_cache is False
    assert any(e["event"] == "prefix_cache_off" for e in logs), logs

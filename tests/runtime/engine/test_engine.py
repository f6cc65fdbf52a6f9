"""Engine behaviour on a tiny model: streaming, stop strings, cancellation, limits."""
from __future__ import annotations

import pytest

from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.generation import ChatMessage, GenerateRequest, SamplingParams
from inloop.services.runtime.engine.detokenize import IncrementalDecoder, StopMatcher
from inloop.services.runtime.engine.engine import Engine


@pytest.fixture(scope="module")
def engine(tiny_llama):
    return Engine.load(tiny_llama)


def _req(max_tokens=16, **kw):
    return GenerateRequest(messages=[ChatMessage("user", "Summarize the receipt")],
                           sampling=SamplingParams(max_tokens=max_tokens, **kw))


def test_streamed_deltas_add_up_to_the_text(engine):
    events = []
    result = engine.generate(_req(24, return_uncertainty=True), on_token=events.append)
    assert "".join(e.text for e in events) == result.text
    assert result.completion_tokens == len(result.token_ids) > 0
    assert result.prompt_tokens == len(engine.prompt_ids(_req()))
    assert len(result.token_stats) == result.completion_tokens
    u = result.uncertainty
    assert u.min_logprob <= u.mean_logprob <= 0 and u.max_entropy >= u.mean_entropy >= 0
    assert 0 <= u.min_margin <= u.mean_margin <= 1
    assert result.timings.ttft_ms > 0 and result.timings.prefill_ms > 0


def test_greedy_is_deterministic_and_length_limited(engine):
    a, b = engine.generate(_req(10)), engine.generate(_req(10))
    assert a.token_ids == b.token_ids
    if a.finish_reason == "length":
        assert a.completion_tokens == 10


def test_stop_string_truncates(engine):
    full = engine.generate(_req(24))
    assert len(full.text) > 4
    stop = full.text[2:4]
    events = []
    cut = engine.generate(_req(24, stop=(stop,)), on_token=events.append)
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
    assert "".join(e.text for e in events) == cut.text  # the stop string never reached the stream


def test_should_stop_cancels_at_the_next_token(engine):
    seen = []
    result = engine.generate(_req(200), on_token=seen.append, should_stop=lambda: len(seen) >= 3)
    assert result.finish_reason == "cancelled"
    assert result.completion_tokens == 3


def test_prompt_longer_than_context_is_rejected(engine):
    long = GenerateRequest(prompt="bread milk " * 600, sampling=SamplingParams(max_tokens=4))
    with pytest.raises(InvalidRequest) as err:
        engine.generate(long)
    assert err.value.field == "prompt" and "context" in str(err.value)


def test_unknown_role_and_empty_request(engine):
    with pytest.raises(InvalidRequest, match=r"messages\[0\]\.role"):
        engine.generate(GenerateRequest(messages=[ChatMessage("robot", "hi")]))
    with pytest.raises(InvalidRequest, match="messages"):
        engine.generate(GenerateRequest())


def test_raw_prompt_generates(engine):
    result = engine.generate(GenerateRequest(prompt="The quick brown", sampling=SamplingParams(max_tokens=5)))
    assert result.completion_tokens >= 1


def test_incremental_decoder_holds_partial_characters(engine):
    tok = engine.tokenizer
    ids = tok.encode("naïve café ☕ done")
    dec = IncrementalDecoder(tok)
    assert "".join(dec.push(i) for i in ids) == "naïve café ☕ done"


def test_stop_matcher_holds_back_a_possible_stop_prefix():
    m = StopMatcher(("END",))
    assert m.feed("abcE") == ("abc", False)
    assert m.feed("N") == ("", False)
    assert m.feed("X") == ("ENX", False)
    assert m.feed("yyEND zz") == ("yy", True)
    assert m.text == "abcENXyy"


def test_warm_up_builds_the_grammar_masks_and_keeps_nothing(tiny_llama):
    from inloop.services.runtime.engine.engine import Engine

    engine = Engine.load(tiny_llama)
    assert engine._masks is None
    assert engine.warm_up() > 0
    assert engine._masks is not None and engine.core.pool.num_used == 0

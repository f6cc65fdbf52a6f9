"""Constrained tool calls and KV reuse across a task's steps, on a tiny model."""
from __future__ import annotations

import json

import jsonschema
import pytest

from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.generation import ChatMessage, GenerateRequest, SamplingParams
from inloop.services.contract.tool_calls import parse_tool_call
from inloop.services.runtime.engine.engine import Engine

TOOLS = [
    {"type": "function", "function": {
        "name": "search", "description": "BM25 search over the corpus",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
                       "required": ["query"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "kv", "description": "a key-value store",
        "parameters": {"type": "object", "properties": {
            "op": {"type": "string", "enum": ["get", "put", "increment"]}, "key": {"type": "string"},
            "amount": {"type": "number"}, "confirm": {"type": "boolean"}},
            "required": ["op", "key"], "additionalProperties": False}}},
]


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def engine(request, tiny_models):
    return Engine.load(tiny_models[request.param])


def _req(choice, seed=None, temperature=0.0, **kw):
    return GenerateRequest(messages=[ChatMessage("user", "Find the receipt total")], tools=TOOLS,
                           tool_choice=choice, sampling=SamplingParams(max_tokens=96, temperature=temperature,
                                                                       seed=seed), **kw)


def _schema(name):
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


@pytest.mark.parametrize("seed", range(6))
def test_required_choice_always_yields_a_schema_valid_call(engine, seed):
    result = engine.generate(_req("required", seed=seed, temperature=1.0))
    assert result.finish_reason == "tool_calls", result.text
    call = parse_tool_call(result.text)
    assert call.name in ("search", "kv")
    jsonschema.validate(call.arguments, _schema(call.name))


@pytest.mark.parametrize("after", [0, 1, 3, 8])
def test_a_cancelled_forced_call_stops_at_the_next_token(engine, after):
    """The constrained decoder asks should_stop before every token it picks or forces, as the
    free loop does: the worker is free at the next token, not at the end of the call."""
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > after

    full = engine.generate(_req("required", seed=1, temperature=1.0))
    result = engine.generate(_req("required", seed=1, temperature=1.0), should_stop=should_stop)
    assert result.finish_reason == "cancelled" and len(asked) == after + 1  # the first True ends it
    assert result.completion_tokens < full.completion_tokens and full.text.startswith(result.text)


def test_named_choice_forces_that_tool(engine):
    for seed in range(3):
        call = parse_tool_call(engine.generate(_req("kv", seed=seed, temperature=1.0)).text)
        assert call.name == "kv" and call.arguments["op"] in ("get", "put", "increment")
        jsonschema.validate(call.arguments, _schema("kv"))


def test_forced_tokens_carry_uncertainty_too(engine):
    req = _req("search")
    req.sampling = SamplingParams(max_tokens=96, return_uncertainty=True)
    result = engine.generate(req)
    assert len(result.token_stats) == len(result.token_ids)
    assert all(s.logprob <= 0 for s in result.token_stats)


def test_bad_tool_choice_and_bad_tool_definitions(engine):
    with pytest.raises(InvalidRequest, match="tool_choice"):
        engine.generate(_req("calculator"))
    bad = _req("auto")
    bad.tools = [{"type": "function", "function": {"description": "no name"}}]
    with pytest.raises(InvalidRequest, match=r"tools\[0\]"):
        engine.generate(bad)


def _hits(engine) -> int:
    return engine.core.pool.hit_tokens


def test_session_reuses_the_common_prefix_and_changes_nothing(engine):
    step1 = _req("search", session_id="task-1")
    first = engine.generate(step1)
    follow = [ChatMessage("user", "Find the receipt total"), ChatMessage("assistant", first.text),
              ChatMessage("tool", '{"hits": []}')]
    engine.prefix_cache = False   # a pinned session is reused with prefix caching off too
    try:
        fresh = engine.generate(GenerateRequest(messages=follow, tools=TOOLS, sampling=SamplingParams(max_tokens=12)))
        hits_before = _hits(engine)
        reused = engine.generate(GenerateRequest(messages=follow, tools=TOOLS,
                                                 sampling=SamplingParams(max_tokens=12), session_id="task-1"))
    finally:
        engine.prefix_cache = True
    # the whole first prompt was reused (but for the partly filled block at its end)
    assert _hits(engine) - hits_before >= first.prompt_tokens - engine.core.pool.block_size
    assert reused.token_ids == fresh.token_ids
    assert engine.end_session("task-1") and not engine.end_session("task-1")
    assert engine.core.pool.num_used == 0   # nothing held once the task ended


def test_pins_beyond_the_cap_evict_the_least_recently_used(tiny_llama):
    engine = Engine.load(tiny_llama, kv_session_positions=600)
    for i in range(4):
        engine.generate(_req("search", session_id=f"s{i}"))
    manager = engine.core.manager
    assert manager.pin_evictions >= 1
    assert manager.pinned_blocks() * engine.core.pool.block_size <= 600 or len(manager.pins) == 1
    assert "s3" in manager.pins   # the newest is kept


def test_prefix_cache_reuses_session_less_blocks_only_when_on(tiny_llama):
    """Automatic prefix caching: a stateless follow-up request (the external route's next model
    step) prefills only what the previous request did not, and gets the same tokens."""
    engine = Engine.load(tiny_llama)
    engine.prefix_cache = False
    first_req = _req("search")
    first = engine.generate(first_req)
    follow = [ChatMessage("user", "Find the receipt total"), ChatMessage("assistant", first.text),
              ChatMessage("tool", '{"hits": []}')]
    follow_req = GenerateRequest(messages=follow, tools=TOOLS, sampling=SamplingParams(max_tokens=12))
    fresh = engine.generate(follow_req)
    assert _hits(engine) == 0 and not engine.core.pool.cached   # off: nothing kept, nothing reused

    engine.prefix_cache = True
    engine.generate(first_req)
    assert engine.core.pool.cached and engine.core.pool.num_used == 0   # cached in free blocks
    reused = engine.generate(follow_req)
    assert _hits(engine) >= first.prompt_tokens - engine.core.pool.block_size   # not prefilled again
    assert reused.token_ids == fresh.token_ids
    # An unrelated prompt shares no block (and leaves the cached ones alone).
    hits = _hits(engine)
    engine.generate(GenerateRequest(prompt="x", sampling=SamplingParams(max_tokens=2)))
    assert _hits(engine) == hits


def test_prefix_cache_serves_a_tasks_first_step_from_an_ended_task(tiny_llama):
    """With the prefix cache on, both routes cache alike: an ended task's blocks stay in the
    prefix cache, and another task's first step (no pin of its own) starts from them."""
    engine = Engine.load(tiny_llama)
    engine.generate(_req("search", session_id="task-a"))
    assert engine.core.manager.pinned_blocks() > 0
    assert engine.end_session("task-a") and engine.core.manager.pinned_blocks() == 0
    before = _hits(engine)
    engine.generate(_req("search", session_id="task-b"))                 # same prompt, new task
    assert _hits(engine) - before >= 16


def test_sessions_nobody_touches_expire(tiny_llama):
    """A session a client opened and left no longer holds its KV until the cap forces it out:
    after ttl_s unused its pin is dropped."""
    import time

    engine = Engine.load(tiny_llama, kv_session_ttl_s=0.2)
    engine.generate(_req("none", session_id="left"))
    manager = engine.core.manager
    assert len(manager.pins) == 1 and manager.pinned_blocks() > 0
    time.sleep(0.3)
    manager.expire()
    assert manager.pinned_blocks() == 0 and not manager.pins and manager.pins_expired == 1
    assert engine.core.pool.num_used == 0


NESTED = {"type": "function", "function": {"name": "plan", "description": "plan a trip", "parameters": {
    "type": "object", "properties": {
        "stops": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        "where": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                   "days": {"type": "integer", "minimum": 1, "maximum": 9}},
                  "required": ["city", "days"], "additionalProperties": False},
        "mode": {"type": "string", "enum": ["train", "bus"]}},
    "required": ["stops", "where", "mode"], "additionalProperties": False}}}


@pytest.mark.parametrize("seed", range(4))
def test_arrays_and_nested_objects_follow_the_schema(engine, seed):
    """Arguments with an array and a nested object go through the JSON Schema grammar
    (llguidance): real arrays and objects, not strings, valid against the schema."""
    req = GenerateRequest(messages=[ChatMessage("user", "Plan a trip")], tools=[NESTED], tool_choice="plan",
                          sampling=SamplingParams(max_tokens=400, temperature=1.0, seed=seed))
    result = engine.generate(req)
    assert result.finish_reason == "tool_calls", result.text
    call = parse_tool_call(result.text)
    jsonschema.validate(call.arguments, NESTED["function"]["parameters"])
    assert isinstance(call.arguments["stops"], list) and isinstance(call.arguments["where"], dict)
    assert call.to_text() == result.text  # laid out as json.dumps writes it: the round trip is exact


def test_a_response_schema_shapes_the_whole_answer(engine):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 20},
                                               "sure": {"type": "boolean"}}, "required": ["answer", "sure"],
              "additionalProperties": False}
    req = GenerateRequest(messages=[ChatMessage("user", "Is the sky blue?")], response_schema=schema,
                          sampling=SamplingParams(max_tokens=200, temperature=1.0, seed=5))
    result = engine.generate(req)
    assert result.finish_reason == "stop"
    jsonschema.validate(json.loads(result.text), schema)

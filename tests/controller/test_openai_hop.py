"""The model hop over the OpenAI HTTP API (services/controller/openai_hop.py): conversation and
tools going up, tool_calls and uncertainty coming back, and HTTP failures retried or typed as
the gRPC hop's are. The upstream here is an httpx transport double (the HTTP boundary); the
mesh test in test_routes.py runs the hop against the runtime's real HTTP front."""
from __future__ import annotations

import asyncio
import json
import math
import time

import httpx
import pytest

from inloop.services.contract.errors import HopError
from inloop.services.contract.generation import SamplingParams
from inloop.services.contract.task import TaskSpec
from inloop.services.contract.tool_calls import ToolCall, parse_tool_call
from inloop.services.controller.hops import Policy
from inloop.services.controller.openai_hop import OpenAIModelHop, chat_body, openai_messages

KV = {"type": "function", "function": {"name": "kv", "parameters": {"type": "object", "properties": {}}}}
FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.002}


def task(deadline_s: float = 5.0) -> TaskSpec:
    return TaskSpec("t-1", [{"role": "user", "content": "hi"}], [KV], sampling=SamplingParams(max_tokens=9, seed=4),
                    deadline=time.monotonic() + deadline_s)


def completion(message: dict, finish="stop", logprobs=None) -> dict:
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3}}


def step(responses: list, policy: Policy, deadline_s: float = 5.0):
    """Run one step against a double answering `responses` in turn; (reply or HopError, requests)."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        answer = responses.pop(0) if len(responses) > 1 else responses[0]
        if isinstance(answer, Exception):
            raise answer
        status, doc = answer
        return httpx.Response(status, json=doc)

    async def run():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            hop = OpenAIModelHop(client, "http://upstream/v1", "m", policy, api_key="k")
            try:
                return await hop.step(task(deadline_s), [{"role": "user", "content": "hi"}], "kv")
            except HopError as exc:
                return exc
    return asyncio.run(run()), seen


def test_a_tool_call_goes_up_as_tools_and_comes_back_as_hermes_text():
    call = {"id": "c1", "type": "function", "function": {"name": "kv", "arguments": '{"op": "get", "key": "a"}'}}
    reply, seen = step([(200, completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"))],
                       Policy())
    assert parse_tool_call(reply.text) == ToolCall("kv", {"op": "get", "key": "a"})
    assert reply.finish_reason == "tool_calls" and (reply.prompt_tokens, reply.completion_tokens) == (5, 3)
    body = seen[0]
    assert body["tools"] == [KV] and body["tool_choice"] == {"type": "function", "function": {"name": "kv"}}
    assert (body["max_tokens"], body["seed"], body["logprobs"], body["top_logprobs"]) == (9, 4, True, 2)


def test_the_conversation_goes_up_as_openai_messages():
    text = ToolCall("kv", {"op": "get"}).to_text()
    messages = openai_messages([{"role": "user", "content": "q"}, {"role": "assistant", "content": text},
                                {"role": "tool", "content": '{"value": 1}'}, {"role": "assistant", "content": "1"}])
    assert messages[1]["tool_calls"][0]["function"] == {"name": "kv", "arguments": '{"op": "get"}'}
    call_id = messages[1]["tool_calls"][0]["id"]
    assert messages[2] == {"role": "tool", "tool_call_id": call_id, "content": '{"value": 1}'}
    assert messages[3] == {"role": "assistant", "content": "1"}
    assert "tools" not in chat_body(task(), [{"role": "user", "content": "q"}], "none", "m")


def test_uncertainty_from_logprobs_when_the_server_has_no_extension():
    tops = [{"token": "a", "logprob": math.log(0.6)}, {"token": "b", "logprob": math.log(0.3)}]
    lp = {"content": [{"token": "a", "logprob": math.log(0.6), "top_logprobs": tops}]}
    reply, _ = step([(200, completion({"role": "assistant", "content": "a"}, logprobs=lp))], Policy())
    u = reply.uncertainty
    assert u.mean_logprob == pytest.approx(math.log(0.6)) and u.min_margin == pytest.approx(0.3)
    assert u.mean_entropy == pytest.approx(-(0.6 * math.log(0.6) + 0.3 * math.log(0.3)))


@pytest.mark.parametrize("status", [503, 502, 429, 504])
def test_retryable_http_statuses_are_retried(status):
    ok = (200, completion({"role": "assistant", "content": "Five."}))
    reply, seen = step([(status, {"error": {"message": "busy"}}), ok], Policy(attempts=2, **FAST))
    assert reply.text == "Five." and reply.attempts == 2 and len(seen) == 2


def test_a_refused_request_is_not_retried_and_names_the_reason():
    err, seen = step([(400, {"error": {"message": "max_tokens: too many"}})], Policy(attempts=3, **FAST))
    assert isinstance(err, HopError) and err.error_type == "runtime_hop_failed" and "max_tokens" in str(err)
    assert len(seen) == 1


def test_an_unreachable_upstream_fails_typed_after_its_tries():
    err, seen = step([httpx.ConnectError("refused")], Policy(attempts=2, **FAST))
    assert isinstance(err, HopError) and err.error_type == "runtime_hop_failed" and err.attempts == 2

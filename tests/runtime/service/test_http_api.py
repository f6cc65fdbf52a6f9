"""The OpenAI-compatible HTTP front, driven by the official `openai` SDK, unmodified
(max_retries=0), against a real runtime process: chat (greedy equal to gRPC Generate),
streaming, tool calls, the SDK's multi-turn tool loop, logprobs, completions, models, and each
error as the SDK's own exception; curl-like checks of /health, 413 and the token."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request

import openai
import pytest

from inloop.services.common.grpc_client import insecure_channel
from inloop.services.runtime.model.tiny import make_tiny
from inloop.v1 import runtime_pb2 as pb
from inloop.v1 import runtime_pb2_grpc
from tests.service_procs import runtime_process

KV = {"type": "function", "function": {"name": "kv", "description": "a key-value store", "parameters": {
    "type": "object", "properties": {"op": {"type": "string", "enum": ["get", "put"]}, "key": {"type": "string"}},
    "required": ["op", "key"]}}}
HI = [{"role": "user", "content": "What is a service mesh?"}]


class Api:
    def __init__(self, proc, token: str | None = None):
        self.proc = proc
        self.base = f"http://127.0.0.1:{proc.wait_log('http_listening', timeout_s=30)['port']}"
        self.client = openai.OpenAI(base_url=f"{self.base}/v1", api_key=token or "unused", max_retries=0, timeout=60)
        self.grpc = runtime_pb2_grpc.RuntimeStub(insecure_channel(proc.target))

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict]:
        return self._open(urllib.request.Request(self.base + path, headers=headers or {}))

    def post(self, path: str, data: bytes, headers: dict | None = None) -> tuple[int, dict]:
        return self._open(urllib.request.Request(self.base + path, data=data, method="POST",
                                                 headers={"Content-Type": "application/json", **(headers or {})}))

    @staticmethod
    def _open(request) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    proc = runtime_process(make_tiny("llama", root / "tiny"), root / "runtime.jsonl", "--http-port", "0",
                           "--served-model-name", "tiny")
    yield Api(proc)
    proc.stop()


def chat(api: Api, **kw):
    return api.client.chat.completions.create(**{"model": "tiny", "messages": HI, "max_tokens": 12,
                                                 "temperature": 0, **kw})


def test_chat_greedy_equals_grpc_generate_for_the_same_messages(api):
    reply = chat(api)
    req = pb.GenerateRequest(sampling=pb.SamplingParams(max_tokens=12))
    req.messages.add(role="user", content=HI[0]["content"])
    ours = api.grpc.Generate(req, timeout=30)
    assert reply.choices[0].message.content == ours.text and reply.choices[0].finish_reason == ours.finish_reason
    assert reply.usage.completion_tokens == ours.usage.completion_tokens and reply.model == "tiny"


def test_streaming_gives_the_same_text_and_usage_last(api):
    whole = chat(api).choices[0].message.content
    chunks = list(chat(api, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole and chunks[-1].usage.completion_tokens == 12 and not chunks[-1].choices
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "kv"}}])
def test_a_forced_tool_call_comes_back_as_tool_calls(api, choice):
    reply = chat(api, tools=[KV], tool_choice=choice, max_tokens=400, temperature=1.0, seed=3)
    (call,) = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls" and call.type == "function" and call.function.name == "kv"
    args = json.loads(call.function.arguments)
    assert args["op"] in ("get", "put") and isinstance(args["key"], str)


def test_a_streamed_tool_call_arrives_as_delta_tool_calls(api):
    chunks = list(chat(api, tools=[KV], tool_choice="required", max_tokens=400, stream=True, seed=3,
                       temperature=1.0))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())]
    assert [tc.function.name for tc in calls] == ["kv"] and json.loads(calls[0].function.arguments)["key"] is not None
    assert not any(c.choices[0].delta.content for c in chunks if c.choices and "<tool_call>" in
                   (c.choices[0].delta.content or ""))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_the_sdks_multi_turn_tool_loop_is_accepted(api):
    first = chat(api, tools=[KV], tool_choice="required", max_tokens=400, seed=3, temperature=1.0).choices[0].message
    messages = [*HI, first.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": json.dumps({"value": 7})}]
    reply = chat(api, messages=messages, tools=[KV], max_tokens=8)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert reply.usage.prompt_tokens > chat(api, max_tokens=1).usage.prompt_tokens  # the history was rendered


PLAN = {"type": "function", "function": {"name": "plan", "description": "plan a trip", "parameters": {
    "type": "object", "properties": {
        "stops": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
        "where": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"],
                  "additionalProperties": False}},
    "required": ["stops", "where"], "additionalProperties": False}}}


def test_a_tool_with_an_array_and_a_nested_object_parameter(api):
    reply = chat(api, tools=[PLAN], tool_choice="required", max_tokens=400, temperature=1.0, seed=1)
    args = json.loads(reply.choices[0].message.tool_calls[0].function.arguments)
    assert isinstance(args["stops"], list) and isinstance(args["where"], dict) and "city" in args["where"]


def test_response_format_json_schema_and_json_object(api):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 20},
                                               "score": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["answer", "score"], "additionalProperties": False}
    reply = chat(api, max_tokens=300, temperature=1.0, seed=2,
                 response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    doc = json.loads(reply.choices[0].message.content)
    assert reply.choices[0].finish_reason == "stop" and set(doc) == {"answer", "score"} and 0 <= doc["score"] <= 9
    reply = chat(api, max_tokens=300, temperature=1.0, seed=2, response_format={"type": "json_object"})
    if reply.choices[0].finish_reason == "stop":  # an open object may run past max_tokens on a random model
        assert isinstance(json.loads(reply.choices[0].message.content), dict)


def test_logprobs_and_the_uncertainty_extension(api):
    reply = chat(api, logprobs=True, top_logprobs=3, extra_body={"inloop": {"uncertainty": True}})
    content = reply.choices[0].logprobs.content
    assert len(content) == 12 and all(t.logprob <= 0 for t in content)
    for t in content:  # greedy: the chosen token is the most likely one
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob
    extra = reply.model_extra["inloop"]
    assert set(extra["uncertainty"]) >= {"mean_logprob", "min_margin"} and len(extra["tokens"]) == 12


def test_completions_and_models(api):
    done = api.client.completions.create(model="tiny", prompt="Once upon", max_tokens=5, temperature=0)
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 5
    assert [m.id for m in api.client.models.list().data] == ["tiny"]


@pytest.mark.parametrize("kw, exception, param", [
    ({"model": "other"}, openai.NotFoundError, "model"),
    ({"temperature": 1e-30}, openai.BadRequestError, "temperature"),
    ({"max_tokens": 0}, openai.BadRequestError, "max_tokens"),
    ({"max_tokens": 100_000}, openai.BadRequestError, "max_tokens"),
    ({"messages": []}, openai.BadRequestError, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, openai.BadRequestError, "messages[0].role"),
    ({"tools": [KV], "tool_choice": {"type": "function", "function": {"name": "teleport"}}}, openai.BadRequestError,
     "tool_choice"),
    ({"n": 2}, openai.BadRequestError, "n"),
])
def test_bad_requests_raise_the_sdks_exception_naming_the_field(api, kw, exception, param):
    with pytest.raises(exception) as err:
        chat(api, **kw)
    assert err.value.body["param"] == param, err.value.body
    assert chat(api, max_tokens=2).usage.completion_tokens == 2  # still serving HTTP
    assert api.grpc.GetModelInfo(pb.GetModelInfoRequest(), timeout=10).name  # and gRPC


@pytest.mark.parametrize("body, field", [
    (b"{not json", None), (b'{"model": "tiny", "messages": "hi"}', "messages"),
    (b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}', "max_tokens"),
])
def test_malformed_bodies_are_400_with_the_error_object(api, body, field):
    status, doc = api.post("/v1/chat/completions", body)
    assert status == 400 and doc["error"]["type"] == "invalid_request_error"
    if field:
        assert doc["error"]["param"].startswith(field)


def curl(*args: str) -> tuple[int, dict]:
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code), json.loads(body)


def test_curl_health_and_a_body_over_4_mb(api, tmp_path):
    assert curl(f"{api.base}/health") == (200, {"status": "ok"})
    big = tmp_path / "big.json"
    big.write_bytes(b'{"messages": "' + b"x" * (5 << 20) + b'"}')
    status, doc = curl("-H", "Content-Type: application/json", "--data-binary", f"@{big}",
                       f"{api.base}/v1/chat/completions")
    assert status == 413 and "4194304" in doc["error"]["message"]


def test_a_client_that_disconnects_mid_stream_frees_the_worker(api):
    stream = chat(api, max_tokens=3000, stream=True, temperature=1.0)
    next(iter(stream))
    stream.close()
    started = time.monotonic()
    assert chat(api, max_tokens=1).usage.completion_tokens == 1
    assert time.monotonic() - started < 3  # not behind the abandoned 3000 tokens


def test_the_bearer_token_guards_everything_but_health(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    proc = runtime_process(make_tiny("llama", tmp_path / "tiny"), tmp_path / "rt.jsonl", "--http-port", "0",
                           "--token-file", str(token))
    try:
        api = Api(proc, token="s3cret")
        assert api.get("/health")[0] == 200
        assert chat(api, model=api.client.models.list().data[0].id, max_tokens=1).usage.completion_tokens == 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{api.base}/v1", api_key="wrong", max_retries=0).models.list()
    finally:
        proc.stop()


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.mark.slow
def test_smollm2_through_the_sdk_equals_grpc_and_calls_a_tool(tmp_path):
    """The real model: greedy chat equals gRPC Generate, and a forced call comes back as tool_calls."""
    from inloop.services.runtime.model.default_model import pull_default

    proc = runtime_process(pull_default(), tmp_path / "rt.jsonl", "--http-port", "0")
    try:
        api = Api(proc)
        name = api.client.models.list().data[0].id
        reply = api.client.chat.completions.create(model=name, messages=HI, max_tokens=16, temperature=0)
        req = pb.GenerateRequest(sampling=pb.SamplingParams(max_tokens=16))
        req.messages.add(role="user", content=HI[0]["content"])
        assert reply.choices[0].message.content == api.grpc.Generate(req, timeout=60).text
        call = api.client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Read the key named visits."}], tools=[KV],
            tool_choice="required", max_tokens=64, temperature=0).choices[0].message.tool_calls[0]
        assert call.function.name == "kv" and json.loads(call.function.arguments)["op"] in ("get", "put")
        # parallel calls where the model writes them (OpenAI's default), one when asked for one
        two = [{"role": "user", "content": "What is the weather in Paris and in London?"}]
        calls = [api.client.chat.completions.create(
            model=name, messages=two, tools=[WEATHER], tool_choice="required", max_tokens=120, temperature=0,
            **extra).choices[0].message.tool_calls for extra in ({}, {"parallel_tool_calls": False})]
        assert [json.loads(c.function.arguments)["city"] for c in calls[0]] == ["Paris", "London"]
        assert [json.loads(c.function.arguments)["city"] for c in calls[1]] == ["Paris"]
        assert len({c.id for c in calls[0]}) == 2
    finally:
        proc.stop()

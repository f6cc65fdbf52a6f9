"""A tiny Qwen3.5 (the multimodal layout users download, a template in Qwen3.5's forms) served
by a real runtime process: gRPC and the OpenAI HTTP front (official SDK), thinking on and
off, the thought apart from the answer, an XML-form tool call, prefix caching off."""
from __future__ import annotations

import json

import openai
import pytest

from inloop.services.common.grpc_client import insecure_channel
from inloop.services.runtime.model.tiny_qwen3_5 import make_tiny_qwen3_5
from inloop.v1 import runtime_pb2 as pb
from inloop.v1 import runtime_pb2_grpc
from tests.service_procs import runtime_process

HI = [{"role": "user", "content": "What is 17 * 23?"}]
KV = {"type": "function", "function": {"name": "kv", "description": "a key-value store", "parameters": {
    "type": "object", "properties": {"op": {"type": "string", "enum": ["get", "put"]}, "key": {"type": "string"},
                                     "amount": {"type": "integer"}}, "required": ["op", "key", "amount"]}}}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("q35serve")
    proc = runtime_process(make_tiny_qwen3_5(root / "qwen3_5-tiny", seed=3), root / "runtime.jsonl",
                           "--http-port", "0", "--served-model-name", "q35", "--prefix-cache")
    port = proc.wait_log("http_listening", timeout_s=60)["port"]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    yield proc, client, runtime_pb2_grpc.RuntimeStub(insecure_channel(proc.target))
    proc.stop()


def _grpc_req(thinking: bool | None) -> pb.GenerateRequest:
    req = pb.GenerateRequest(sampling=pb.SamplingParams(max_tokens=10))
    req.messages.add(role="user", content=HI[0]["content"])
    if thinking is not None:
        req.enable_thinking = thinking
    return req


def test_grpc_returns_the_thought_apart_and_thinking_off_answers(served):
    proc, _, stub = served
    thought = stub.Generate(_grpc_req(None), timeout=60)
    assert thought.reasoning_content and thought.text == "" and len(thought.token_ids) == 10
    chunks = list(stub.GenerateStream(_grpc_req(None), timeout=60))
    assert "".join(c.token.reasoning for c in chunks if c.HasField("token")) == thought.reasoning_content
    answer = stub.Generate(_grpc_req(False), timeout=60)
    assert answer.text and answer.reasoning_content == ""
    assert proc.wait_log("prefix_cache_off", timeout_s=5)["arch"] == "qwen3_5"


def test_http_reasoning_content_whole_and_streamed(served):
    _, client, stub = served
    reply = client.chat.completions.create(model="q35", messages=HI, max_tokens=10, temperature=0)
    message = reply.choices[0].message
    assert message.reasoning_content == stub.Generate(_grpc_req(None), timeout=60).reasoning_content
    assert not message.content
    chunks = list(client.chat.completions.create(model="q35", messages=HI, max_tokens=10, temperature=0, stream=True))
    streamed = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert streamed == message.reasoning_content
    off = client.chat.completions.create(model="q35", messages=HI, max_tokens=10, temperature=0,
                                         extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert off.choices[0].message.content == stub.Generate(_grpc_req(False), timeout=60).text
    assert getattr(off.choices[0].message, "reasoning_content", None) is None


def test_a_forced_tool_call_in_the_xml_form_comes_back_as_tool_calls(served):
    _, client, _ = served
    reply = client.chat.completions.create(
        model="q35", messages=HI, max_tokens=200, temperature=0, tools=[KV], tool_choice="required",
        extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    args = json.loads(choice.message.tool_calls[0].function.arguments)
    assert choice.message.tool_calls[0].function.name == "kv", args
    assert args["op"] in ("get", "put") and isinstance(args["key"], str) and isinstance(args["amount"], int)


def test_an_unknown_chat_template_variable_is_a_400_naming_it(served):
    _, client, _ = served
    with pytest.raises(openai.BadRequestError, match="chat_template_kwargs.tools_mode"):
        client.chat.completions.create(model="q35", messages=HI, max_tokens=4,
                                       extra_body={"chat_template_kwargs": {"tools_mode": 1}})

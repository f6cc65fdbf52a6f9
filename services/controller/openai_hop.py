"""The external route's model hop over the OpenAI HTTP API, to any compatible server (our
runtime's HTTP front, vLLM, llama.cpp's llama-server, ...): the same deadlines, retries and
spans as the gRPC hop, with HTTP failures mapped to the gRPC statuses `retry_on` names.

    connection error, 502, 503 -> UNAVAILABLE     429 -> RESOURCE_EXHAUSTED
    timeout, 504               -> DEADLINE_EXCEEDED   400, 413 -> INVALID_ARGUMENT (never retried)

The conversation goes upstream as OpenAI messages (a Hermes `<tool_call>` turn as the
assistant's `tool_calls`, a tool result as a `tool` message answering it), the offered tools as
`tools`. The reply's `tool_calls` come back as `<tool_call>` text, which the agent loop parses
as it does on every route. Uncertainty: our runtime's `inloop` extension where the server
sends it; otherwise from `logprobs`: the margin from the top two, the entropy over the
returned top-k alternatives only (a lower bound of the full distribution's).
"""
from __future__ import annotations

import json
import math

import grpc
import httpx
from opentelemetry import propagate, trace

from inloop.services.common.telemetry import tracer
from inloop.services.contract.errors import TaskError, ToolCallParseError
from inloop.services.contract.generation import TokenStats, UncertaintySummary
from inloop.services.contract.task import ModelReply, TaskSpec
from inloop.services.contract.tool_calls import ToolCall, parse_tool_calls
from inloop.services.controller.hops import CallFailed, Policy, _Hop

HTTP_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
               403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
               413: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
               429: grpc.StatusCode.RESOURCE_EXHAUSTED, 502: grpc.StatusCode.UNAVAILABLE,
               503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}
TOP_LOGPROBS = 2


def openai_messages(messages: list[dict]) -> list[dict]:
    """Our conversation (tool calls as Hermes text) as OpenAI messages with tool_calls."""
    out, pending = [], []
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            try:
                calls = parse_tool_calls(m["content"])
            except ToolCallParseError:
                calls = []
            if calls:
                pending = [f"call_{i}_{j}" for j in range(len(calls))]
                out.append({"role": "assistant", "content": None, "tool_calls": [
                    {"id": cid, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                    for cid, c in zip(pending, calls)]})
                continue
        if m["role"] == "tool" and pending:
            out.append({"role": "tool", "tool_call_id": pending.pop(0), "content": m["content"]})
            continue
        out.append({"role": m["role"], "content": m["content"]})
    return out


def chat_body(task: TaskSpec, messages: list[dict], tool_choice: str, model: str) -> dict:
    s = task.sampling
    body = {"model": model, "messages": openai_messages(messages), "max_tokens": s.max_tokens,
            "temperature": s.temperature, "top_p": s.top_p, "logprobs": True, "top_logprobs": TOP_LOGPROBS,
            "inloop": {"uncertainty": True}}  # our runtime's extension; other servers ignore it
    if s.seed is not None:
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = list(s.stop)
    if task.tools and tool_choice != "none":
        body["tools"] = task.tools
        body["tool_choice"] = tool_choice if tool_choice in ("auto", "required") else \
            {"type": "function", "function": {"name": tool_choice}}
    return body


def _token_stats(entry: dict) -> TokenStats:
    tops = sorted((t["logprob"] for t in entry.get("top_logprobs") or ()), reverse=True)
    probs = [math.exp(lp) for lp in tops]
    margin = probs[0] - probs[1] if len(probs) >= 2 else 1.0
    entropy = -sum(p * lp for p, lp in zip(probs, tops))  # over the returned top-k only
    return TokenStats(entry["logprob"], entropy, margin)


def reply_from(doc: dict, attempts: int) -> ModelReply:
    choice = doc["choices"][0]
    message = choice.get("message") or {}
    text = message.get("content") or ""
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            name = json.dumps(fn.get("name"))
            text += f'<tool_call>{{"name": {name}, "arguments": {fn.get("arguments")}}}</tool_call>'
            continue  # the loop's parser reports it as a bad tool call
        text += ToolCall(fn.get("name", ""), args if isinstance(args, dict) else {}).to_text()
    usage = doc.get("usage") or {}
    ours = (doc.get("inloop") or {}).get("uncertainty")
    if ours:
        summary = UncertaintySummary(**{k: ours[k] for k in UncertaintySummary.names()})
    else:
        entries = ((choice.get("logprobs") or {}).get("content")) or []
        summary = UncertaintySummary.of([_token_stats(e) for e in entries])
    return ModelReply(text, choice.get("finish_reason") or "stop", usage.get("prompt_tokens", 0),
                      usage.get("completion_tokens", 0), summary, attempts)


class OpenAIModelHop(_Hop):
    """ModelPort over POST {base_url}/chat/completions."""

    provider = "openai"
    hop = "runtime"
    timeout_type, failed_type = TaskError.RUNTIME_TIMEOUT, TaskError.RUNTIME_HOP_FAILED
    invalid_type = TaskError.RUNTIME_HOP_FAILED

    def __init__(self, client: httpx.AsyncClient, base_url: str, model: str, policy: Policy,
                 api_key: str | None = None):
        super().__init__(policy)
        self.client, self.url, self.name = client, base_url.rstrip("/") + "/chat/completions", model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def step(self, task: TaskSpec, messages: list[dict], tool_choice: str) -> ModelReply:
        body = chat_body(task, messages, tool_choice, self.name)
        doc, attempts = await self.run(task, lambda timeout: self._post(body, timeout))
        return reply_from(doc, attempts)

    async def _post(self, body: dict, timeout: float) -> dict:
        with tracer().start_as_current_span("POST /v1/chat/completions", kind=trace.SpanKind.CLIENT,
                                            attributes={"http.request.method": "POST", "url.full": self.url}) as span:
            headers = dict(self.headers)
            propagate.inject(headers)  # W3C traceparent: the server's spans join this trace
            try:
                r = await self.client.post(self.url, json=body, headers=headers, timeout=timeout)
            except httpx.TimeoutException as exc:
                raise CallFailed(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer in {timeout:.3f} s ({exc})") from None
            except httpx.TransportError as exc:
                raise CallFailed(grpc.StatusCode.UNAVAILABLE, f"cannot reach {self.url}: {exc}") from None
            span.set_attribute("http.response.status_code", r.status_code)
            if r.status_code != 200:
                try:
                    detail = r.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    detail = r.text[:300]
                raise CallFailed(HTTP_STATUS.get(r.status_code, grpc.StatusCode.INTERNAL),
                                 f"HTTP {r.status_code}: {detail}")
            return r.json()


async def upstream_model(client: httpx.AsyncClient, base_url: str, api_key: str | None, log) -> str:
    """The first model the upstream lists (GET {base_url}/models), or "model" if it cannot say."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = await client.get(base_url.rstrip("/") + "/models", headers=headers, timeout=5)
        return r.json()["data"][0]["id"]
    except Exception as exc:  # noqa: BLE001 - informational: the name labels spans; set it with a flag
        log.info("upstream_model_unknown", endpoint=base_url, detail=str(exc)[:200])
        return "model"

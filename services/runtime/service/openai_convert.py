"""OpenAI API bodies <-> the contract's GenerateRequest/GenerateResult, for the HTTP front.

Pure functions. The conversion keeps OpenAI's meaning where ours differs: temperature
defaults to 1 (ours to greedy), an assistant turn's `tool_calls` become the Hermes
`<tool_call>` text the chat template expects, and a reply holding tool calls comes back as
`tool_calls` with finish_reason "tool_calls".
"""
from __future__ import annotations

import json
import time
import uuid

from inloop.services.contract.errors import InvalidRequest, ToolCallParseError
from inloop.services.contract.generation import (
    MAX_TOKENS_LIMIT, ChatMessage, GenerateRequest, GenerateResult, SamplingParams, TokenEvent,
)
from inloop.services.contract.tool_calls import OPEN, ToolCall, parse_tool_calls
from inloop.services.runtime.service.openai_api import ChatCompletionRequest, CompletionRequest, Message

DEFAULT_MAX_TOKENS = 256  # OpenAI's is "up to the context"; on a CPU that can be minutes


def param_of(field: str) -> str:
    """Our field path as the OpenAI body names it: sampling.max_tokens -> max_tokens."""
    return field.removeprefix("sampling.")


def _sampling(body, max_tokens: int | None) -> SamplingParams:
    if body.n != 1:
        raise InvalidRequest("n", f"only n=1 is served, got {body.n}")
    return SamplingParams(
        max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed, stop=body.stops(),
        ignore_eos=body.ignore_eos,
        top_logprobs=(getattr(body, "top_logprobs", None) or 0) if body.logprobs else 0,
        return_uncertainty=bool(body.logprobs) or bool(body.inloop and body.inloop.uncertainty))


def _message(i: int, m: Message) -> ChatMessage:
    text = m.text()
    for j, call in enumerate(m.tool_calls or ()):
        try:
            args = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"messages[{i}].tool_calls[{j}].function.arguments", f"not JSON: {exc.msg}") from None
        text += ToolCall(call.function.name, args if isinstance(args, dict) else {}).to_text()
    return ChatMessage(m.role, text)


def _response_schema(body: ChatCompletionRequest) -> dict | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None:
        raise InvalidRequest("response_format.json_schema", "give {name, schema} with type json_schema")
    return fmt.json_schema.schema_


def _enable_thinking(body: ChatCompletionRequest) -> bool | None:
    kwargs = body.chat_template_kwargs or {}
    unknown = sorted(set(kwargs) - {"enable_thinking"})
    if unknown:
        raise InvalidRequest(f"chat_template_kwargs.{unknown[0]}", "the one chat-template variable served is enable_thinking")
    value = kwargs.get("enable_thinking")
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest("chat_template_kwargs.enable_thinking", f"must be true or false, got {value!r}")
    return value


def chat_request(body: ChatCompletionRequest, request_id: str) -> GenerateRequest:
    tools = [t.model_dump() for t in body.tools or ()]
    choice = body.tool_choice
    if choice is None:
        choice = "auto" if tools else "none"
    elif not isinstance(choice, str):
        choice = choice.function.get("name", "")
    req = GenerateRequest(messages=[_message(i, m) for i, m in enumerate(body.messages)],
                          sampling=_sampling(body, body.max_completion_tokens or body.max_tokens),
                          request_id=request_id, tools=tools, tool_choice=choice,
                          response_schema=_response_schema(body),
                          parallel_tool_calls=body.parallel_tool_calls is not False,

                          enable_thinking=_enable_thinking(body))
    req.validate()
    return req


def completion_request(body: CompletionRequest, request_id: str) -> GenerateRequest:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise InvalidRequest("prompt", f"one prompt per request is served, got {len(prompts)}")
    req = GenerateRequest(prompt=prompts[0], sampling=_sampling(body, body.max_tokens), request_id=request_id)
    req.validate()
    return req


# ---- responses ------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(result: GenerateResult) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def reply_message(text: str, offered_tools: list[dict] | bool, reasoning: str = "") -> tuple[dict, bool]:
    """(the assistant message, whether it holds tool calls) from the model's text (either
    tool-call form; `offered_tools` types the XML form's values) and its thought, if any."""
    message: dict = {"role": "assistant", "content": text}
    if reasoning:
        message["reasoning_content"] = reasoning
    if offered_tools and OPEN in text:
        try:
            calls = parse_tool_calls(text, offered_tools if isinstance(offered_tools, list) else None)
        except ToolCallParseError:
            calls = []  # a malformed call is returned as the text it is
        if calls:
            message.update(content=None, tool_calls=[
                {"id": new_id("call")[:29], "type": "function",
                 "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                for c in calls])
            return message, True
    return message, False


def _logprobs(result: GenerateResult, texts: list[str]) -> dict:
    """Each token's logprob and, when asked for, its most likely alternatives (a forced token's
    alternatives are not computed)."""
    return {"content": [{"token": t, "logprob": s.logprob, "bytes": list(t.encode()), "top_logprobs": [
        {"token": alt, "logprob": lp, "bytes": list(alt.encode())} for alt, lp in s.top]}
        for t, s in zip(texts, result.token_stats)]}


def extension(result: GenerateResult) -> dict | None:
    if result.uncertainty is None:
        return None
    return {"uncertainty": vars(result.uncertainty),
            "tokens": [{"logprob": s.logprob, "entropy": s.entropy, "margin": s.margin} for s in result.token_stats]}


def chat_response(body: ChatCompletionRequest, result: GenerateResult, model: str, texts: list[str]) -> dict:
    offered = [t.model_dump() for t in body.tools or ()] if body.tool_choice != "none" else []
    message, called = reply_message(result.text, offered, result.reasoning)
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if called else result.finish_reason,
              "logprobs": _logprobs(result, texts) if body.logprobs else None}
    out = {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
           "choices": [choice], "usage": usage(result)}
    if body.inloop and body.inloop.uncertainty:
        out["inloop"] = extension(result)
    return out


def completion_response(body: CompletionRequest, result: GenerateResult, model: str) -> dict:
    out = {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "text": result.text, "finish_reason": result.finish_reason, "logprobs": None}],
           "usage": usage(result)}
    if body.inloop and body.inloop.uncertainty:
        out["inloop"] = extension(result)
    return out


def chunk(kind: str, cid: str, model: str, delta: dict | None = None, finish: str | None = None,
          text: str | None = None) -> dict:
    """One streamed chunk of a chat ("chat.completion.chunk") or completion ("text_completion")."""
    choice = {"index": 0, "finish_reason": finish}
    if kind == "chat":
        choice["delta"] = delta or {}
    else:
        choice["text"] = text or ""
    return {"id": cid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice]}


class ToolCallHold:
    """Streams text until it opens a tool call: from `<tool_call>` on, text is held, and at the
    end the calls go out as `delta.tool_calls` (a prefix of the opener is held until known)."""

    def __init__(self, offered_tools: bool):
        self.offered = offered_tools
        self.text = ""
        self.sent = 0
        self.calling = False

    def feed(self, event: TokenEvent) -> str:
        """The text safe to stream now."""
        self.text += event.text
        if not self.offered or self.calling:
            return "" if self.calling else self._flush(len(self.text))
        at = self.text.find(OPEN)
        if at != -1:
            self.calling = True
            return self._flush(at)
        hold = next((n for n in range(min(len(OPEN) - 1, len(self.text)), 0, -1) if self.text.endswith(OPEN[:n])), 0)
        return self._flush(len(self.text) - hold)

    def _flush(self, end: int) -> str:
        out, self.sent = self.text[self.sent:end], max(self.sent, end)
        return out

    def rest(self) -> str:
        return "" if self.calling else self._flush(len(self.text))


__all__ = ["MAX_TOKENS_LIMIT", "ToolCallHold", "chat_request", "chat_response", "chunk", "completion_request",
           "completion_response", "param_of", "reply_message", "usage"]

"""The OpenAI API's request bodies, as vLLM serves them: shapes only (pydantic).

What a value means (ranges, roles, tool names, schemas) is checked after conversion by the
contract's validation layer, so the HTTP front and gRPC answer bad input alike. Unknown
fields are ignored, as OpenAI's API does; `inloop` is our one extension (uncertainty).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionCall(_Body):
    name: str
    arguments: str = "{}"          # JSON text, as OpenAI sends it


class ToolCall(_Body):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Body):
    role: str
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCall] | None = None    # an assistant turn that called tools
    tool_call_id: str | None = None             # a tool turn: which call it answers
    name: str | None = None

    def text(self) -> str:
        """The content as text (a list of content parts: their text parts joined)."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type", "text") == "text")
        return self.content or ""


class FunctionDef(_Body):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(_Body):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedToolChoice(_Body):
    type: Literal["function"] = "function"
    function: dict[str, str]       # {"name": ...}


class JsonSchemaFormat(_Body):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class Extension(_Body):
    """`"inloop": {"uncertainty": true}`: per-token entropy and top-1/top-2 margin with their
    summary, in the response's `inloop` field (standard clients ignore both)."""

    uncertainty: bool = False


class _Sampling(_Body):
    model: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None
    ignore_eos: bool = False       # vLLM's extension: generate max_tokens tokens
    inloop: Extension | None = None

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatCompletionRequest(_Sampling):
    messages: list[Message]
    max_completion_tokens: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: ResponseFormat | None = None
    top_logprobs: int | None = None
    logprobs: bool | None = None
    # vLLM's extension: variables for the chat template; `enable_thinking` is the one we pass
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str]

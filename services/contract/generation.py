"""A model request and its result, as every layer sees them (the wire formats convert to these)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from inloop.services.contract import validation
from inloop.services.contract.errors import InvalidRequest

ROLES = ("system", "user", "assistant", "tool")
MAX_TOKENS_LIMIT = 4096
MAX_PROMPT_CHARS = 200_000  # far over any context we serve; refused before tokenizing
MAX_TEMPERATURE = 100.0
MIN_TEMPERATURE = 1e-5      # below it (but above 0) the scaled logits overflow float32: use 0 for greedy
MAX_STOP_STRINGS = 16       # as OpenAI's API allows 4; each checked against every new token
MAX_STOP_CHARS = 256
MAX_SEED = 2 ** 63 - 1
MAX_TOP_LOGPROBS = 20        # OpenAI's limit


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = 0.0      # 0 = greedy
    top_k: int = 0                # 0 = off
    top_p: float = 1.0            # 1 = off
    seed: int | None = None
    stop: tuple[str, ...] = ()
    return_uncertainty: bool = False
    ignore_eos: bool = False      # generate max_tokens whatever the model says (benchmarks, as vLLM's)
    top_logprobs: int = 0         # per token, this many most likely alternatives with their logprobs (<= 20)

    def validate(self, max_tokens_limit: int = MAX_TOKENS_LIMIT) -> None:
        if self.max_tokens <= 0:
            raise InvalidRequest("max_tokens", f"must be > 0, got {self.max_tokens}")
        if self.max_tokens > max_tokens_limit:
            raise InvalidRequest("max_tokens", f"must be <= {max_tokens_limit}, got {self.max_tokens}")
        if not (self.temperature == 0.0 or MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE):  # and NaN
            raise InvalidRequest("temperature", f"must be 0 (greedy) or in [{MIN_TEMPERATURE:g}, "
                                                f"{MAX_TEMPERATURE:g}], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequest("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise InvalidRequest("top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidRequest("top_logprobs", f"must be in [0, {MAX_TOP_LOGPROBS}], got {self.top_logprobs}")
        if self.top_logprobs and not self.return_uncertainty:
            raise InvalidRequest("top_logprobs", "alternatives come with the per-token statistics: "
                                 "set return_uncertainty too")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise InvalidRequest("seed", f"must be in [0, 2^63 - 1] (unset = random), got {self.seed}")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidRequest("stop", f"{len(self.stop)} stop strings; the limit is {MAX_STOP_STRINGS}")
        for i, s in enumerate(self.stop):
            if not 0 < len(s) <= MAX_STOP_CHARS:
                raise InvalidRequest(f"stop[{i}]", f"must have 1 to {MAX_STOP_CHARS} characters, has {len(s)}")


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass
class GenerateRequest:
    """Either chat `messages` (rendered with the model's chat template) or a raw `prompt`."""

    messages: list[ChatMessage] = field(default_factory=list)
    prompt: str = ""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = ""
    # OpenAI-style tool definitions {"type": "function", "function": {name, description, parameters}}
    tools: list[dict] = field(default_factory=list)
    tool_choice: str = "auto"     # none | auto | required | <tool name>
    # A running task's id: its KV cache is kept between calls and reused for the longest
    # common token prefix, so each agent step prefills only what is new.
    session_id: str = ""
    # A JSON Schema the whole answer must follow (OpenAI's response_format; json_object is
    # {"type": "object"}); decoded through the JSON grammar, finish_reason "stop" when complete.
    response_schema: dict | None = None
    # With tool_choice auto/required: after a call the model may open another in the same turn
    # (OpenAI's parallel_tool_calls; the HTTP front's default is true, gRPC's false).
    parallel_tool_calls: bool = False
    # Passed to the chat template as `enable_thinking` (Qwen3, Qwen3.5, SmolLM3); None leaves
    # the template's default. A thinking model's thought comes back in GenerateResult.reasoning.
    enable_thinking: bool | None = None

    def validate(self) -> None:
        if not self.messages and not self.prompt:
            raise InvalidRequest("messages", "give chat messages or a raw prompt (both are empty)")
        if self.messages and self.prompt:
            raise InvalidRequest("prompt", "give chat messages or a raw prompt, not both")
        if self.prompt and len(self.prompt) > MAX_PROMPT_CHARS:
            raise InvalidRequest("prompt", f"{len(self.prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
        check_messages(self.messages)
        try:
            self.sampling.validate()
        except InvalidRequest as exc:
            raise exc.within("sampling") from None
        names = []
        for i, t in enumerate(self.tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise InvalidRequest(f"tools[{i}]", 'expected {"type": "function", "function": {"name": ..., "parameters": {...}}}')
            params = fn.get("parameters", {"type": "object", "properties": {}})
            if not isinstance(params, dict) or params.get("type", "object") != "object":
                raise InvalidRequest(f"tools[{i}].function.parameters", "must be a JSON Schema of type object")
            validation.tool_schema(f"tools[{i}].function.parameters", params)
            names.append(fn["name"])
        if self.tool_choice not in ("none", "auto", "required") and self.tool_choice not in names:
            raise InvalidRequest("tool_choice", f"{self.tool_choice!r} is not none, auto, required or an offered tool "
                                                f"({', '.join(names) or 'no tools offered'})")
        if self.response_schema is not None:
            validation.tool_schema("response_format.json_schema", self.response_schema)
            if self.tool_choice not in ("none", "auto") and names:
                raise InvalidRequest("response_format", "a forced tool call and a response format cannot both apply")
        if self.tool_choice != "none" and self.tool_choice != "auto" and not names:
            raise InvalidRequest("tool_choice", f"{self.tool_choice!r} needs at least one tool in `tools`")


def check_messages(messages: list[ChatMessage]) -> None:
    """Roles and total size: the same rules for Generate and for a task's messages."""
    chars = sum(len(m.content) for m in messages)
    if chars > MAX_PROMPT_CHARS:
        raise InvalidRequest("messages", f"{chars} characters; the limit is {MAX_PROMPT_CHARS}")
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role", f"unknown role {validation.shown(m.role)}; use one of "
                                                        f"{', '.join(ROLES)}")


@dataclass(frozen=True)
class TokenStats:
    """Uncertainty of one sampled token, from the full (temperature 1) distribution.

    logprob: log p(chosen token); entropy: -sum p log p (nats);
    margin: p(top-1) - p(top-2), in [0, 1].
    """

    logprob: float
    entropy: float
    margin: float
    # the most likely tokens at this step, (text, logprob), best first, when asked for
    # (SamplingParams.top_logprobs; OpenAI's top_logprobs)
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    index: int
    token_id: int
    text: str                     # the answer text this token adds (may be "" mid-codepoint)
    stats: TokenStats | None = None
    reasoning: str = ""           # the thought text it adds (a thinking model, before </think>)


@dataclass(frozen=True)
class UncertaintySummary:
    mean_logprob: float
    min_logprob: float
    mean_entropy: float
    max_entropy: float
    mean_margin: float
    min_margin: float

    @classmethod
    def of(cls, stats: list[TokenStats]) -> "UncertaintySummary | None":
        if not stats:
            return None
        lp = [s.logprob for s in stats]
        en = [s.entropy for s in stats]
        mg = [s.margin for s in stats]
        return cls(sum(lp) / len(lp), min(lp), sum(en) / len(en), max(en), sum(mg) / len(mg), min(mg))

    @classmethod
    def combined(cls, parts: list[tuple["UncertaintySummary", int]]) -> "UncertaintySummary | None":
        """Several summaries as one, each (summary, its token count): means weighted by tokens,
        extremes over all (a task's summary over its model steps)."""
        if not parts:
            return None
        total = sum(n for _, n in parts)
        mean = lambda name: sum(getattr(u, name) * n for u, n in parts) / total  # noqa: E731
        return cls(mean("mean_logprob"), min(u.min_logprob for u, _ in parts),
                   mean("mean_entropy"), max(u.max_entropy for u, _ in parts),
                   mean("mean_margin"), min(u.min_margin for u, _ in parts))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, for converting to and from a wire message of the same fields."""
        return tuple(f.name for f in fields(cls))


@dataclass
class Timings:
    queue_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    ttft_ms: float = 0.0


@dataclass
class GenerateResult:
    text: str
    token_ids: list[int]
    finish_reason: str            # "stop" (EOS or stop string), "length", "cancelled"
    prompt_tokens: int
    completion_tokens: int
    timings: Timings
    token_stats: list[TokenStats] = field(default_factory=list)
    uncertainty: UncertaintySummary | None = None
    # A thinking model's thought (contract/reasoning.py); `text` is then the answer after it.
    reasoning: str = ""

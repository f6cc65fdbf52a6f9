from inloop.v1 import tools_pb2 as _tools_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_k", "top_p", "seed", "stop", "return_uncertainty", "top_logprobs")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    RETURN_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    TOP_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    return_uncertainty: bool
    top_logprobs: int
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_k: _Optional[int] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., return_uncertainty: _Optional[bool] = ..., top_logprobs: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("messages", "prompt", "sampling", "request_id", "tools", "tool_choice", "session_id", "response_json_schema", "parallel_tool_calls", "enable_thinking")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    PARALLEL_TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_THINKING_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    prompt: str
    sampling: SamplingParams
    request_id: str
    tools: _containers.RepeatedCompositeFieldContainer[_tools_pb2.ToolDefinition]
    tool_choice: str
    session_id: str
    response_json_schema: str
    parallel_tool_calls: bool
    enable_thinking: bool
    def __init__(self, messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., prompt: _Optional[str] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., request_id: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_tools_pb2.ToolDefinition, _Mapping]]] = ..., tool_choice: _Optional[str] = ..., session_id: _Optional[str] = ..., response_json_schema: _Optional[str] = ..., parallel_tool_calls: _Optional[bool] = ..., enable_thinking: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_ms", "prefill_ms", "decode_ms", "ttft_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_MS_FIELD_NUMBER: _ClassVar[int]
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    prefill_ms: float
    decode_ms: float
    ttft_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., prefill_ms: _Optional[float] = ..., decode_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ...) -> None: ...

class TokenUncertainty(_message.Message):
    __slots__ = ("token_id", "logprob", "entropy", "margin", "top")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    token_id: int
    logprob: float
    entropy: float
    margin: float
    top: _containers.RepeatedCompositeFieldContainer[TopLogprob]
    def __init__(self, token_id: _Optional[int] = ..., logprob: _Optional[float] = ..., entropy: _Optional[float] = ..., margin: _Optional[float] = ..., top: _Optional[_Iterable[_Union[TopLogprob, _Mapping]]] = ...) -> None: ...

class TopLogprob(_message.Message):
    __slots__ = ("token", "logprob")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    token: str
    logprob: float
    def __init__(self, token: _Optional[str] = ..., logprob: _Optional[float] = ...) -> None: ...

class UncertaintySummary(_message.Message):
    __slots__ = ("mean_logprob", "min_logprob", "mean_entropy", "max_entropy", "mean_margin", "min_margin")
    MEAN_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    MIN_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    MEAN_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    MEAN_MARGIN_FIELD_NUMBER: _ClassVar[int]
    MIN_MARGIN_FIELD_NUMBER: _ClassVar[int]
    mean_logprob: float
    min_logprob: float
    mean_entropy: float
    max_entropy: float
    mean_margin: float
    min_margin: float
    def __init__(self, mean_logprob: _Optional[float] = ..., min_logprob: _Optional[float] = ..., mean_entropy: _Optional[float] = ..., max_entropy: _Optional[float] = ..., mean_margin: _Optional[float] = ..., min_margin: _Optional[float] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("request_id", "text", "token_ids", "finish_reason", "usage", "timings", "token_uncertainty", "uncertainty", "model", "reasoning_content")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASONING_CONTENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    finish_reason: str
    usage: Usage
    timings: Timings
    token_uncertainty: _containers.RepeatedCompositeFieldContainer[TokenUncertainty]
    uncertainty: UncertaintySummary
    model: str
    reasoning_content: str
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., finish_reason: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., token_uncertainty: _Optional[_Iterable[_Union[TokenUncertainty, _Mapping]]] = ..., uncertainty: _Optional[_Union[UncertaintySummary, _Mapping]] = ..., model: _Optional[str] = ..., reasoning_content: _Optional[str] = ...) -> None: ...

class TokenDelta(_message.Message):
    __slots__ = ("index", "token_id", "text", "uncertainty", "reasoning")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    REASONING_FIELD_NUMBER: _ClassVar[int]
    index: int
    token_id: int
    text: str
    uncertainty: TokenUncertainty
    reasoning: str
    def __init__(self, index: _Optional[int] = ..., token_id: _Optional[int] = ..., text: _Optional[str] = ..., uncertainty: _Optional[_Union[TokenUncertainty, _Mapping]] = ..., reasoning: _Optional[str] = ...) -> None: ...

class GenerateChunk(_message.Message):
    __slots__ = ("token", "result")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    token: TokenDelta
    result: GenerateResponse
    def __init__(self, token: _Optional[_Union[TokenDelta, _Mapping]] = ..., result: _Optional[_Union[GenerateResponse, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "arch", "backend", "dtype", "vocab_size", "context_length", "num_parameters", "eos_token_ids", "max_tokens_limit", "max_queue", "settings")
    class SettingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    NUM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    name: str
    arch: str
    backend: str
    dtype: str
    vocab_size: int
    context_length: int
    num_parameters: int
    eos_token_ids: _containers.RepeatedScalarFieldContainer[int]
    max_tokens_limit: int
    max_queue: int
    settings: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., arch: _Optional[str] = ..., backend: _Optional[str] = ..., dtype: _Optional[str] = ..., vocab_size: _Optional[int] = ..., context_length: _Optional[int] = ..., num_parameters: _Optional[int] = ..., eos_token_ids: _Optional[_Iterable[int]] = ..., max_tokens_limit: _Optional[int] = ..., max_queue: _Optional[int] = ..., settings: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RoutePolicy(_message.Message):
    __slots__ = ("per_try_timeout_ms", "attempts", "backoff_base_ms", "backoff_max_ms", "retry_on", "runtime_per_try_timeout_ms")
    PER_TRY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_BASE_MS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_ON_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_PER_TRY_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    per_try_timeout_ms: float
    attempts: int
    backoff_base_ms: float
    backoff_max_ms: float
    retry_on: _containers.RepeatedScalarFieldContainer[str]
    runtime_per_try_timeout_ms: float
    def __init__(self, per_try_timeout_ms: _Optional[float] = ..., attempts: _Optional[int] = ..., backoff_base_ms: _Optional[float] = ..., backoff_max_ms: _Optional[float] = ..., retry_on: _Optional[_Iterable[str]] = ..., runtime_per_try_timeout_ms: _Optional[float] = ...) -> None: ...

class FaultSpec(_message.Message):
    __slots__ = ("abort", "delay", "key")
    ABORT_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    abort: str
    delay: str
    key: str
    def __init__(self, abort: _Optional[str] = ..., delay: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GateConfig(_message.Message):
    __slots__ = ("enabled", "statistic", "threshold", "tool")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    statistic: str
    threshold: float
    tool: str
    def __init__(self, enabled: _Optional[bool] = ..., statistic: _Optional[str] = ..., threshold: _Optional[float] = ..., tool: _Optional[str] = ...) -> None: ...

class TaskRequest(_message.Message):
    __slots__ = ("task_id", "messages", "tools", "tool_choice", "max_steps", "sampling", "deadline_ms", "policy", "fault", "gate", "setup_json", "family")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    FAULT_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    SETUP_JSON_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    tools: _containers.RepeatedScalarFieldContainer[str]
    tool_choice: str
    max_steps: int
    sampling: SamplingParams
    deadline_ms: float
    policy: RoutePolicy
    fault: FaultSpec
    gate: GateConfig
    setup_json: str
    family: str
    def __init__(self, task_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., tools: _Optional[_Iterable[str]] = ..., tool_choice: _Optional[str] = ..., max_steps: _Optional[int] = ..., sampling: _Optional[_Union[SamplingParams, _Mapping]] = ..., deadline_ms: _Optional[float] = ..., policy: _Optional[_Union[RoutePolicy, _Mapping]] = ..., fault: _Optional[_Union[FaultSpec, _Mapping]] = ..., gate: _Optional[_Union[GateConfig, _Mapping]] = ..., setup_json: _Optional[str] = ..., family: _Optional[str] = ...) -> None: ...

class TaskStep(_message.Message):
    __slots__ = ("kind", "name", "attempts", "latency_ms", "status", "error_type", "detail", "arguments_json", "text", "usage", "uncertainty", "start_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    attempts: int
    latency_ms: float
    status: str
    error_type: str
    detail: str
    arguments_json: str
    text: str
    usage: Usage
    uncertainty: UncertaintySummary
    start_ms: float
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., attempts: _Optional[int] = ..., latency_ms: _Optional[float] = ..., status: _Optional[str] = ..., error_type: _Optional[str] = ..., detail: _Optional[str] = ..., arguments_json: _Optional[str] = ..., text: _Optional[str] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., uncertainty: _Optional[_Union[UncertaintySummary, _Mapping]] = ..., start_ms: _Optional[float] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "route", "ok", "answer", "steps", "uncertainty", "trace_id", "error_type", "error_message", "latency_ms", "retries", "family", "finish_reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    route: str
    ok: bool
    answer: str
    steps: _containers.RepeatedCompositeFieldContainer[TaskStep]
    uncertainty: UncertaintySummary
    trace_id: str
    error_type: str
    error_message: str
    latency_ms: float
    retries: int
    family: str
    finish_reason: str
    def __init__(self, task_id: _Optional[str] = ..., route: _Optional[str] = ..., ok: _Optional[bool] = ..., answer: _Optional[str] = ..., steps: _Optional[_Iterable[_Union[TaskStep, _Mapping]]] = ..., uncertainty: _Optional[_Union[UncertaintySummary, _Mapping]] = ..., trace_id: _Optional[str] = ..., error_type: _Optional[str] = ..., error_message: _Optional[str] = ..., latency_ms: _Optional[float] = ..., retries: _Optional[int] = ..., family: _Optional[str] = ..., finish_reason: _Optional[str] = ...) -> None: ...

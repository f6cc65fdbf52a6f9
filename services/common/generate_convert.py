"""Wire (inloop.v1 protos) <-> the contract's generation types, for the runtime's Generate and
the controller's model hop. Pure functions, no validation beyond shape: the contract's types
validate, so one set of rules serves gRPC and in-process callers."""
from __future__ import annotations

import json

from inloop.services.contract import validation
from inloop.services.contract.generation import (
    ChatMessage, GenerateRequest, GenerateResult, SamplingParams, TokenEvent, TokenStats, UncertaintySummary,
)
from inloop.v1 import runtime_pb2 as pb
from inloop.v1 import tools_pb2

_DEFAULT_SAMPLING = SamplingParams()


def sampling_from_proto(msg: pb.SamplingParams) -> SamplingParams:
    # `optional` fields: unset means the engine default; set (even to 0) is taken as given.
    return SamplingParams(
        max_tokens=msg.max_tokens if msg.HasField("max_tokens") else _DEFAULT_SAMPLING.max_tokens,
        temperature=msg.temperature,
        top_k=msg.top_k,
        top_p=msg.top_p if msg.HasField("top_p") else _DEFAULT_SAMPLING.top_p,
        seed=msg.seed if msg.HasField("seed") else None,
        stop=tuple(msg.stop),
        return_uncertainty=msg.return_uncertainty,
        top_logprobs=msg.top_logprobs,
    )


def sampling_to_proto(sp: SamplingParams) -> pb.SamplingParams:
    msg = pb.SamplingParams(max_tokens=sp.max_tokens, temperature=sp.temperature, top_k=sp.top_k, top_p=sp.top_p,
                            stop=list(sp.stop), return_uncertainty=sp.return_uncertainty,
                            top_logprobs=sp.top_logprobs)
    if sp.seed is not None:
        msg.seed = sp.seed
    return msg


def request_from_proto(msg: pb.GenerateRequest, request_id: str | None = None) -> GenerateRequest:
    return GenerateRequest(
        messages=[ChatMessage(role=m.role, content=m.content) for m in msg.messages],
        prompt=msg.prompt,
        sampling=sampling_from_proto(msg.sampling),
        request_id=request_id if request_id is not None else msg.request_id,
        tools=[tool_from_proto(t, i) for i, t in enumerate(msg.tools)],
        tool_choice=msg.tool_choice or "auto",
        session_id=msg.session_id,
        response_schema=validation.parse_json("response_json_schema", msg.response_json_schema)
        if msg.response_json_schema else None,
        parallel_tool_calls=msg.parallel_tool_calls,
        enable_thinking=msg.enable_thinking if msg.HasField("enable_thinking") else None,
    )


def tool_from_proto(t: tools_pb2.ToolDefinition, index: int) -> dict:
    """A ToolDefinition as the OpenAI-style dict the engine takes."""
    params = validation.parse_json(f"tools[{index}].parameters_json", t.parameters_json) if t.parameters_json \
        else {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": params}}


def tool_to_proto(tool: dict) -> tools_pb2.ToolDefinition:
    fn = tool["function"]
    return tools_pb2.ToolDefinition(name=fn["name"], description=fn.get("description", ""),
                                    parameters_json=json.dumps(fn.get("parameters", {})))


def uncertainty_to_proto(token_id: int, stats: TokenStats) -> pb.TokenUncertainty:
    return pb.TokenUncertainty(token_id=token_id, logprob=stats.logprob, entropy=stats.entropy, margin=stats.margin,
                               top=[pb.TopLogprob(token=t, logprob=lp) for t, lp in stats.top])


def result_to_proto(result: GenerateResult, request_id: str, model: str) -> pb.GenerateResponse:
    t = result.timings
    msg = pb.GenerateResponse(
        request_id=request_id,
        text=result.text,
        token_ids=result.token_ids,
        finish_reason=result.finish_reason,
        usage=pb.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens),
        timings=pb.Timings(queue_ms=t.queue_ms, prefill_ms=t.prefill_ms,
                           decode_ms=t.decode_ms, ttft_ms=t.ttft_ms),
        token_uncertainty=[uncertainty_to_proto(tok, st)
                           for tok, st in zip(result.token_ids, result.token_stats)],
        model=model,
        reasoning_content=result.reasoning,
    )
    if result.uncertainty is not None:
        msg.uncertainty.CopyFrom(summary_to_proto(result.uncertainty))
    return msg


def summary_to_proto(u: UncertaintySummary) -> pb.UncertaintySummary:
    return pb.UncertaintySummary(**{name: getattr(u, name) for name in UncertaintySummary.names()})


def summary_from_proto(msg: pb.UncertaintySummary) -> UncertaintySummary:
    return UncertaintySummary(**{name: getattr(msg, name) for name in UncertaintySummary.names()})


def event_to_chunk(event: TokenEvent) -> pb.GenerateChunk:
    delta = pb.TokenDelta(index=event.index, token_id=event.token_id, text=event.text, reasoning=event.reasoning)
    if event.stats is not None:
        delta.uncertainty.CopyFrom(uncertainty_to_proto(event.token_id, event.stats))
    return pb.GenerateChunk(token=delta)


def result_to_chunk(response: pb.GenerateResponse) -> pb.GenerateChunk:
    return pb.GenerateChunk(result=response)


def info_to_proto(info: dict, max_tokens_limit: int, max_queue: int,
                  settings: dict[str, str] | None = None) -> pb.ModelInfo:
    return pb.ModelInfo(
        settings=dict(settings or {}),
        name=str(info.get("name", "")),
        arch=str(info.get("arch", "")),
        backend=str(info.get("backend", "")),
        dtype=str(info.get("dtype", "")),
        vocab_size=int(info.get("vocab_size", 0)),
        context_length=int(info.get("context_length", 0)),
        num_parameters=int(info.get("num_parameters", 0)),
        eos_token_ids=[int(i) for i in info.get("eos_token_ids", ())],
        max_tokens_limit=max_tokens_limit,
        max_queue=max_queue,
    )

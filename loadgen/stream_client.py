"""One timed `Runtime.GenerateStream` call, as both `coldwarm` and `load` measure it.

Times are taken on the client, from just before the call is issued:

- TTFT: until the first chunk of the stream (normally the first token's delta; for an
  answer with no tokens, the final result chunk), as vLLM's benchmark takes the first
  chunk of the HTTP stream.
- ITL: the gaps between consecutive token chunks (each chunk is one token here, so these
  are per-token gaps; the final result chunk is not a token and adds no gap).
- E2EL: until the stream has ended (the final chunk with the full response received).

Every call has a deadline (`timeout_s`). A failed call (a gRPC status, a deadline, a
stream that ends without its result chunk) comes back with `success=False` and the status
in `error`, never as an exception: a load run counts failures instead of dying of one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc

from inloop.v1 import runtime_pb2 as pb


@dataclass
class StreamResult:
    request_id: str
    success: bool = False
    ttft_ms: float = 0.0
    e2el_ms: float = 0.0
    itl_ms: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0      # the server's usage.completion_tokens
    finish_reason: str = ""
    text: str = ""
    error: str = ""             # "UNAVAILABLE: ..." on failure
    sent_at: float = 0.0        # time.perf_counter() when the call was issued

    @property
    def status(self) -> str:
        """The gRPC status name of a failure ("" on success)."""
        return self.error.split(":", 1)[0] if self.error else ""


def chat_request(prompt: str, max_tokens: int, request_id: str = "", temperature: float = 0.0,
                 seed: int | None = None) -> pb.GenerateRequest:
    """A one-user-message chat request (the model's chat template applies), greedy by default."""
    sampling = pb.SamplingParams(max_tokens=max_tokens, temperature=temperature)
    if seed is not None:
        sampling.seed = seed
    return pb.GenerateRequest(messages=[pb.ChatMessage(role="user", content=prompt)], sampling=sampling,
                              request_id=request_id)


async def stream_generate(stub, request: pb.GenerateRequest, timeout_s: float) -> StreamResult:
    """Run one GenerateStream on an aio RuntimeStub and time it (see the module docstring)."""
    out = StreamResult(request_id=request.request_id)
    pieces: list[str] = []
    final = None
    first_at = last_token_at = None
    out.sent_at = start = time.perf_counter()
    try:
        call = stub.GenerateStream(request, timeout=timeout_s)
        async for chunk in call:
            now = time.perf_counter()
            if first_at is None:
                first_at = now
                out.ttft_ms = (now - start) * 1e3
            if chunk.HasField("token"):
                if last_token_at is not None:
                    out.itl_ms.append((now - last_token_at) * 1e3)
                last_token_at = now
                pieces.append(chunk.token.text)
            else:
                final = chunk.result
        out.e2el_ms = (time.perf_counter() - start) * 1e3
    except grpc.aio.AioRpcError as exc:
        out.e2el_ms = (time.perf_counter() - start) * 1e3
        out.error = f"{exc.code().name}: {exc.details()}"
        return out
    except Exception as exc:  # noqa: BLE001 -- a client bug must count as a failed request, not end the run
        out.e2el_ms = (time.perf_counter() - start) * 1e3
        out.error = f"CLIENT_ERROR: {type(exc).__name__}: {exc}"
        return out
    if final is None:
        out.error = "INCOMPLETE: the stream ended without its result chunk"
        return out
    out.success = True
    out.prompt_tokens = final.usage.prompt_tokens
    out.output_tokens = final.usage.completion_tokens
    out.finish_reason = final.finish_reason
    out.text = final.text or "".join(pieces)
    return out


async def model_info(channel, timeout_s: float = 10.0) -> pb.ModelInfo:
    """GetModelInfo with a deadline (raises grpc.aio.AioRpcError when the runtime is down)."""
    from inloop.v1 import runtime_pb2_grpc

    return await runtime_pb2_grpc.RuntimeStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=timeout_s)

"""One streamed chat completion against any OpenAI-compatible server, timed as vLLM's
`bench serve` times it: TTFT to the first content token, ITL between tokens, E2EL to the
end; the server's usage counts the output tokens (`stream_options.include_usage`)."""
from __future__ import annotations

import json
import time

import httpx

from inloop.loadgen.stream_client import StreamResult


# How a server is told to write exactly max_tokens (greedy runs stop early at an end token):
# vLLM, llama.cpp and ours honour `ignore_eos` (vLLM also `min_tokens`); HF's `transformers
# serve` rejects unknown fields and takes generation settings as a JSON string instead.
FIXED_LENGTH_OPENAI = "ignore_eos"
FIXED_LENGTH_HF = "generation_config"


def chat_body(model: str, prompt: str, max_tokens: int, fixed_length: str | None = FIXED_LENGTH_OPENAI) -> dict:
    """A greedy streamed chat request; `fixed_length` names the way this server is asked for
    exactly max_tokens (None: let it stop at its end token)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if fixed_length == FIXED_LENGTH_OPENAI:
        body.update(ignore_eos=True, min_tokens=max_tokens)
    elif fixed_length == FIXED_LENGTH_HF:
        body["generation_config"] = json.dumps({"min_new_tokens": max_tokens})
    return body


async def stream_chat(client: httpx.AsyncClient, base_url: str, body: dict, timeout_s: float,
                      request_id: str = "") -> StreamResult:
    out = StreamResult(request_id=request_id)
    pieces: list[str] = []
    first_at = last_at = None
    out.sent_at = start = time.perf_counter()
    try:
        async with client.stream("POST", base_url.rstrip("/") + "/chat/completions", json=body,
                                 timeout=timeout_s) as r:
            if r.status_code != 200:
                out.error = f"HTTP_{r.status_code}: {(await r.aread()).decode(errors='replace')[:200]}"
                out.e2el_ms = (time.perf_counter() - start) * 1e3
                return out
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    out.success = True
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    out.prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
                    out.output_tokens = chunk["usage"].get("completion_tokens", 0)
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        now = time.perf_counter()
                        if first_at is None:
                            first_at = now
                            out.ttft_ms = (now - start) * 1e3
                        else:
                            out.itl_ms.append((now - last_at) * 1e3)
                        last_at = now
                        pieces.append(text)
                    if choice.get("finish_reason"):
                        out.finish_reason = choice["finish_reason"]
    except (httpx.HTTPError, ValueError) as exc:
        out.error = f"CLIENT_ERROR: {type(exc).__name__}: {exc}"
    out.e2el_ms = (time.perf_counter() - start) * 1e3
    out.text = "".join(pieces)
    if not out.success and not out.error and out.finish_reason:
        out.success = True  # HF's `transformers serve` ends a complete stream without [DONE]
    if out.success and not out.output_tokens:
        out.output_tokens = len(out.itl_ms) + (first_at is not None)  # no usage: count content chunks
    if not out.success and not out.error:
        out.error = "INCOMPLETE: the stream ended without [DONE] or a finish_reason"
    return out

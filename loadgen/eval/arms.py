"""The arms of `inloop eval bfcl`, each answering one BFCL item with a fixed max_tokens, greedy.

- ours, constrained: the chat messages and the item's tools with tool_choice auto (parallel
  calls on for the parallel category): the model writes freely until it opens `<tool_call>`,
  then the grammar keeps the call valid. gRPC Generate on our runtime, or an OpenAI-compatible
  server's /chat/completions.
- ours, required: the same with tool_choice required: the call is forced from the first token,
  so it shows what the grammar does for a model that would otherwise answer in prose (it
  passes `irrelevance`, whose right answer is no call, only where max_tokens cuts its call
  short; it answers those items too, so that every arm scores the same items).
- ours, unconstrained: the same prompt text as the constrained arm renders it, sent raw (no
  template, no tools), decoded freely; tool calls are parsed from the text. gRPC Generate with
  `prompt`, or /completions.
- HF transformers, unconstrained: the same prompt text on the same weights, `generate` greedy.

Each answer is a record: BFCL's FC result (bfcl_calls), the text, the token ids, the
finish reason, the client-side latency, and per token the top-1/top-2 probability margin (and
the top-2 alternatives) for the item-by-item equality check of the two unconstrained arms.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from inloop.loadgen.eval.bfcl_calls import result_from_openai_message, result_from_text

CONSTRAINED, REQUIRED = "ours-constrained", "ours-required"
UNCONSTRAINED, HF = "ours-unconstrained", "hf-unconstrained"
ARMS = (CONSTRAINED, REQUIRED, UNCONSTRAINED, HF)
TOOL_CHOICE = {CONSTRAINED: "auto", REQUIRED: "required"}   # the arms that send the tools


@dataclass(frozen=True)
class Item:
    id: str
    category: str
    messages: list[dict]
    tools: list[dict]
    prompt: str            # the chat template's rendering of messages + tools (the unconstrained arms' input)
    max_tokens: int        # the same for every arm (a category may have its own: parallel answers are longer)

    @property
    def parallel(self) -> bool:
        return "parallel" in self.category


def record(item: Item, arm: str, result, text: str, token_ids: list[int], finish: str, latency_s: float,
           prompt_tokens: int, margins: list[float] | None = None, top2: list | None = None) -> dict:
    return {"id": item.id, "category": item.category, "arm": arm, "result": result, "text": text,
            "token_ids": token_ids, "finish_reason": finish, "latency_ms": round(latency_s * 1e3, 2),
            "prompt_tokens": prompt_tokens, "completion_tokens": len(token_ids),
            "margins": margins or [], "top2": top2 or []}


# ---- our runtime over gRPC ----------------------------------------------------------------
class GrpcArms:
    """Both of our arms on a runtime's gRPC Generate (a sync channel; one request at a time)."""

    def __init__(self, target: str, timeout_s: float = 600.0):
        from inloop.services.common.grpc_client import insecure_channel
        from inloop.v1 import runtime_pb2_grpc

        self.channel = insecure_channel(target)
        self.stub = runtime_pb2_grpc.RuntimeStub(self.channel)
        self.timeout_s = timeout_s

    def constrained(self, item: Item, arm: str = CONSTRAINED) -> dict:
        from inloop.services.common.generate_convert import tool_to_proto
        from inloop.v1 import runtime_pb2 as pb

        req = pb.GenerateRequest(messages=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in item.messages],
                                 tools=[tool_to_proto(t) for t in item.tools], tool_choice=TOOL_CHOICE[arm],
                                 parallel_tool_calls=item.parallel,
                                 sampling=pb.SamplingParams(max_tokens=item.max_tokens, temperature=0.0),
                                 request_id=f"bfcl-{item.id}-{arm}")
        t0 = time.perf_counter()
        r = self.stub.Generate(req, timeout=self.timeout_s)
        dt = time.perf_counter() - t0
        return record(item, arm, result_from_text(r.text), r.text, list(r.token_ids), r.finish_reason, dt,
                      r.usage.prompt_tokens)

    def unconstrained(self, item: Item) -> dict:
        from inloop.v1 import runtime_pb2 as pb

        req = pb.GenerateRequest(prompt=item.prompt, request_id=f"bfcl-{item.id}-free",
                                 sampling=pb.SamplingParams(max_tokens=item.max_tokens, temperature=0.0,
                                                            return_uncertainty=True, top_logprobs=2))
        t0 = time.perf_counter()
        r = self.stub.Generate(req, timeout=self.timeout_s)
        dt = time.perf_counter() - t0
        margins = [u.margin for u in r.token_uncertainty]
        top2 = [[[t.token, round(t.logprob, 6)] for t in u.top] for u in r.token_uncertainty]
        return record(item, UNCONSTRAINED, result_from_text(r.text), r.text, list(r.token_ids), r.finish_reason, dt,
                      r.usage.prompt_tokens, margins, top2)

    def close(self) -> None:
        self.channel.close()


# ---- any OpenAI-compatible server ------------------------------------------------------------
class OpenAIArms:
    """Both of our arms' requests sent to an OpenAI-compatible server (/v1 base URL): the
    constrained one as /chat/completions with tools (the server's own tool-call decoding), the
    unconstrained one as /completions of the rendered prompt."""

    def __init__(self, base_url: str, model: str = "", api_key: str = "", timeout_s: float = 600.0):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.model = model or self.client.get("/models").raise_for_status().json()["data"][0]["id"]

    def _post(self, path: str, body: dict) -> tuple[dict, float]:
        t0 = time.perf_counter()
        r = self.client.post(path, json=body)
        dt = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {r.status_code}: {r.text[:300]}")
        return r.json(), dt

    def constrained(self, item: Item, arm: str = CONSTRAINED) -> dict:
        body = {"model": self.model, "messages": item.messages, "tools": item.tools, "tool_choice": TOOL_CHOICE[arm],
                "parallel_tool_calls": item.parallel, "max_tokens": item.max_tokens, "temperature": 0.0}
        reply, dt = self._post("/chat/completions", body)
        msg = reply["choices"][0]["message"]
        text = msg.get("content") or ""
        if msg.get("tool_calls"):
            text += "".join(f"<tool_call>{json.dumps({'name': c['function']['name'], 'arguments': c['function']['arguments']})}"
                            "</tool_call>" for c in msg["tool_calls"])
        usage = reply.get("usage") or {}
        return {**record(item, arm, result_from_openai_message(msg), text, [],
                         reply["choices"][0].get("finish_reason") or "", dt, usage.get("prompt_tokens", 0)),
                "completion_tokens": usage.get("completion_tokens", 0)}

    def unconstrained(self, item: Item) -> dict:
        body = {"model": self.model, "prompt": item.prompt, "max_tokens": item.max_tokens, "temperature": 0.0,
                "logprobs": 2}
        reply, dt = self._post("/completions", body)
        choice = reply["choices"][0]
        lp = choice.get("logprobs") or {}
        margins, top2 = [], []
        for alts in _top_logprobs(lp):
            ranked = sorted(alts.items(), key=lambda kv: -kv[1])[:2]
            probs = [math.exp(v) for _, v in ranked] + [0.0, 0.0]
            margins.append(probs[0] - probs[1])
            top2.append([[t, round(v, 6)] for t, v in ranked])
        usage = reply.get("usage") or {}
        return {**record(item, UNCONSTRAINED, result_from_text(choice["text"]), choice["text"], [],
                         choice.get("finish_reason") or "", dt, usage.get("prompt_tokens", 0), margins, top2),
                "completion_tokens": usage.get("completion_tokens", 0)}

    def close(self) -> None:
        self.client.close()


def _top_logprobs(lp: dict) -> list[dict[str, float]]:
    """Per token {token: logprob} of the alternatives: the legacy completions form
    ({"top_logprobs": [{tok: lp}]}) or the chat form some servers use here too, llama-server's
    ({"content": [{"top_logprobs": [{"token", "logprob"}]}]})."""
    if lp.get("top_logprobs"):
        return [alts or {} for alts in lp["top_logprobs"]]
    return [{a["token"]: a["logprob"] for a in (t.get("top_logprobs") or [])} for t in lp.get("content") or []]


# ---- HF transformers -----------------------------------------------------------------------
class HFArm:
    """HF transformers on the model directory's weights, float32 on the CPU, greedy `generate`
    of the rendered prompt (tokenized by HF's own tokenizer, as a raw prompt: special tokens
    written in the text are parsed, nothing is added)."""

    def __init__(self, model_dir: Path, threads: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.eos = self.model.generation_config.eos_token_id

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"]

    def unconstrained(self, item: Item) -> dict:
        torch = self.torch
        ids = self.prompt_ids(item.prompt)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=item.max_tokens, do_sample=False, output_logits=True,
                                      return_dict_in_generate=True, pad_token_id=self.eos if isinstance(self.eos, int)
                                      else self.eos[0])
        dt = time.perf_counter() - t0
        new = out.sequences[0, len(ids):].tolist()
        margins, top2 = [], []
        for logits in out.logits:
            probs = torch.softmax(logits[0].float(), dim=-1)
            p, i = torch.topk(probs, 2)
            margins.append(float(p[0] - p[1]))
            top2.append([[int(i[0]), float(p[0])], [int(i[1]), float(p[1])]])
        eos = {self.eos} if isinstance(self.eos, int) else set(self.eos)
        finish = "stop" if new and new[-1] in eos else "length"
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return record(item, HF, result_from_text(text), text, new, finish, dt, len(ids), margins, top2)

"""The generation engine: prefill, decode_one_token, sample, one request at a time.

`generate` is blocking and runs on the caller's thread (the scheduler's worker). It checks
`should_stop()` before every token, so a cancelled or expired request stops at the next
token and its KV cache is released when the call returns.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import structlog

from services.runtime.backends.base import Backend, KVCache
from services.runtime.engine.detokenize import IncrementalDecoder, StopMatcher
from services.runtime.engine.sampler import Sampler
from services.runtime.engine.types import (
    GenerateRequest, GenerateResult, InvalidRequest, TokenEvent, Timings, UncertaintySummary,
)
from services.runtime.model.config import ModelConfig
from services.runtime.model.tokenizer import Tokenizer
from services.runtime.model.transformer import Transformer
from services.runtime.model.weights import Weights

log = structlog.get_logger("engine")
DEFAULT_MAX_CONTEXT = 8192


def make_backend(name: str) -> Backend:
    """cpu, cuda, or auto (cuda where a device answers, else cpu)."""
    if name in ("cuda", "auto"):
        try:
            from services.runtime.backends.cuda.backend import CudaBackend
            from services.runtime.backends.cuda.driver import cuda_available
            ok, reason = cuda_available()
        except ImportError as exc:
            ok, reason = False, f"cuda backend unavailable: {exc}"
        if ok:
            return CudaBackend()
        if name == "cuda":
            raise RuntimeError(f"--backend cuda: no usable CUDA device ({reason})")
        log.info("backend_auto_fallback", chosen="cpu", reason=reason)
    elif name != "cpu":
        raise ValueError(f"unknown backend {name!r}: use cpu, cuda or auto")
    from services.runtime.backends.cpu.backend import NumpyBackend
    return NumpyBackend()


def _eos_ids(model_dir: Path, cfg: ModelConfig, tokenizer: Tokenizer) -> tuple[int, ...]:
    ids = set(cfg.eos_token_ids)
    gen = model_dir / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else ([] if eos is None else [eos]))
    tok_eos = tokenizer.token_id(tokenizer.eos_token)
    if tok_eos is not None:
        ids.add(tok_eos)
    return tuple(sorted(ids))


class Engine:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, eos_ids: tuple[int, ...],
                 name: str, max_context: int = DEFAULT_MAX_CONTEXT):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = frozenset(eos_ids)
        self.max_context = min(max_context, model.cfg.max_position)
        cfg = model.cfg
        self.info = {
            "name": name, "arch": cfg.arch, "backend": model.backend.name,
            "dtype": model.backend.compute_dtype, "vocab_size": cfg.vocab_size,
            "context_length": self.max_context, "num_parameters": model.num_parameters,
            "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
            "eos_token_ids": sorted(self.eos_ids),
        }

    @classmethod
    def load(cls, model_dir: str | Path, backend: str | Backend = "cpu",
             max_context: int = DEFAULT_MAX_CONTEXT) -> "Engine":
        model_dir = Path(model_dir)
        t0 = time.perf_counter()
        cfg = ModelConfig.from_dir(model_dir)
        tokenizer = Tokenizer(model_dir)
        be = make_backend(backend) if isinstance(backend, str) else backend
        model = Transformer(cfg, be, Weights(model_dir))
        engine = cls(model, tokenizer, _eos_ids(model_dir, cfg, tokenizer), model_dir.name, max_context)
        log.info("model_loaded", model=model_dir.name, arch=cfg.arch, backend=be.name,
                 params=model.num_parameters, load_ms=round((time.perf_counter() - t0) * 1e3, 1))
        return engine

    # ---- prompt -------------------------------------------------------------------
    def prompt_ids(self, req: GenerateRequest) -> list[int]:
        if req.messages:
            text = self.tokenizer.render_chat([{"role": m.role, "content": m.content} for m in req.messages])
            ids = self.tokenizer.encode(text)
        else:
            ids = self.tokenizer.encode(req.prompt, add_special_tokens=True)
        field = "messages" if req.messages else "prompt"
        if not ids:
            raise InvalidRequest(field, "the prompt encodes to zero tokens")
        if len(ids) >= self.max_context:
            raise InvalidRequest(field, f"the prompt has {len(ids)} tokens; the context holds "
                                        f"{self.max_context} (prompt plus at least one new token)")
        return ids

    # ---- the steps ----------------------------------------------------------------
    def prefill(self, ids: list[int], cache: KVCache) -> np.ndarray:
        """Run the prompt (from cache.length on) through the model; logits of the last token [V]."""
        b = self.model.backend
        start = cache.length
        positions = np.arange(start, len(ids), dtype=np.int32)
        logits = self.model.forward(b.ids(np.asarray(ids[start:], np.int32)), b.ids(positions), cache)
        cache.length = len(ids)
        return b.to_host(logits)[-1]

    def decode_one_token(self, token: int, cache: KVCache) -> np.ndarray:
        b = self.model.backend
        pos = np.array([cache.length], np.int32)
        logits = self.model.forward(b.ids(np.array([token], np.int32)), b.ids(pos), cache)
        cache.length += 1
        return b.to_host(logits)[-1]

    # ---- one request --------------------------------------------------------------
    def generate(self, req: GenerateRequest, on_token: Callable[[TokenEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> GenerateResult:
        req.validate()
        ids = self.prompt_ids(req)
        sp = req.sampling
        budget = min(sp.max_tokens, self.max_context - len(ids))
        sampler = Sampler(sp)
        decoder, stops = IncrementalDecoder(self.tokenizer), StopMatcher(sp.stop)
        cache = self.model.new_cache(len(ids) + budget)
        timings, stats, out_ids = Timings(), [], []
        finish = "length"
        t0 = time.perf_counter()
        try:
            if should_stop and should_stop():
                return self._result("", out_ids, "cancelled", len(ids), timings, stats)
            logits = self.prefill(ids, cache)
            timings.prefill_ms = (time.perf_counter() - t0) * 1e3
            t_decode = time.perf_counter()
            while True:
                token, st = sampler.sample(logits)
                out_ids.append(token)
                if st is not None:
                    stats.append(st)
                if len(out_ids) == 1:
                    timings.ttft_ms = (time.perf_counter() - t0) * 1e3
                if token in self.eos_ids:
                    finish = "stop"
                    break
                delta, hit = stops.feed(decoder.push(token))
                if on_token:
                    on_token(TokenEvent(len(out_ids) - 1, token, delta, st))
                if hit:
                    finish = "stop"
                    break
                if len(out_ids) >= budget:
                    break
                if should_stop and should_stop():
                    finish = "cancelled"
                    break
                logits = self.decode_one_token(token, cache)
            timings.decode_ms = (time.perf_counter() - t_decode) * 1e3
        finally:
            self.model.backend.free_kv(cache)
        tail = stops.flush()
        if tail and on_token:
            on_token(TokenEvent(len(out_ids) - 1, out_ids[-1], tail, None))
        return self._result(stops.text, out_ids, finish, len(ids), timings, stats)

    @staticmethod
    def _result(text, out_ids, finish, n_prompt, timings, stats) -> GenerateResult:
        return GenerateResult(text=text, token_ids=out_ids, finish_reason=finish,
                              prompt_tokens=n_prompt, completion_tokens=len(out_ids),
                              timings=timings, token_stats=stats,
                              uncertainty=UncertaintySummary.of(stats))

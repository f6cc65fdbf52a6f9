"""The generation engine: a request's decode loop (prefill, pick, force), its KV cache.

`generate` is blocking and runs on the caller's thread (a request thread of the scheduler,
or the scheduler's worker). It checks `should_stop()` before every token, so a cancelled
or expired request stops at the next token and its KV blocks are released when it returns.

Two ways to run the model:
  * the batching core (engine/core.py), where the backend has a paged KV pool (numpy):
    a request's model calls join the other running requests' in one step, its KV lives in
    blocks of the pool, with prefix caching and pinned task sessions (kv_cache_manager.py);
    a hybrid model's (Qwen3.5) linear layers keep their state in a slot per sequence beside
    it, and prefix caching is off for them;
  * a StepRunner with a cache per sequence (engine/step_runner.py; CUDA graphs with GPU
    sampling on the CUDA backend), one request at a time, with the longest-common-prefix
    session store (kv_sessions.py) until that backend has its batched path.
The backend also loads the weights where it has its own loader (`backend.load_model`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import structlog

from inloop.services.contract.backend import Backend, KVCache
from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.generation import (
    ChatMessage, GenerateRequest, GenerateResult, SamplingParams, TokenEvent, UncertaintySummary,
)
from inloop.services.contract.step_runner import StepRunner
from inloop.services.contract.reasoning import THINK_CLOSE, ReasoningSplit, opens_thought, template_thinks
from inloop.services.contract.tool_calls import OPEN, XML, in_form, tool_call_form, with_tools_prompt
from inloop.services.runtime.engine import constrained, constrained_xml
from inloop.services.runtime.engine.block_pool import BlockPool
from inloop.services.runtime.engine.core import EngineCore, Sequence
from inloop.services.runtime.engine.kv_cache_manager import KVCacheManager
from inloop.services.runtime.engine.generation import Generation
from inloop.services.runtime.engine.kv_sessions import KVSessionStore, Session, common_prefix
from inloop.services.runtime.engine.sampler import Sampler
from inloop.services.runtime.engine.step_runner import ForwardStepRunner, runner_for
from inloop.services.runtime.engine.vocab_masks import VocabMasks
from inloop.services.runtime.model.architectures import backend_for, build_model, read_config
from inloop.services.runtime.model.config import ModelConfig
from inloop.services.runtime.model.tokenizer import Tokenizer
from inloop.services.runtime.model.transformer import Transformer
from inloop.services.runtime.model.weights import Weights

log = structlog.get_logger("engine")
DEFAULT_MAX_CONTEXT = 8192
# A tool with one enum argument: a forced call of it picks masked tokens (host logits) and forces text.
_WARM_UP_TOOL = {"type": "function", "function": {"name": "ping", "description": "warm-up", "parameters": {
    "type": "object", "properties": {"mode": {"type": "string", "enum": ["a", "b"]}}, "required": ["mode"]}}}
PREFIX_NAMESPACE = "prefix-cache:"   # store keys of anonymous (session-less) caches
PREFIX_MIN_TOKENS = 16               # a shorter shared prefix is not worth reusing a cache for
GiB = 1 << 30
BATCHING = ("auto", "on", "off")


@dataclass(frozen=True)
class BatchConfig:
    """The batching core's sizes, named as vLLM's flags."""

    kv_cache_memory: int = 2 * GiB        # bytes of KV blocks (float32 on the numpy backend)
    block_size: int = 16                  # positions per KV block
    max_num_seqs: int = 32                # sequences in one step
    max_num_batched_tokens: int = 512     # tokens in one step (prefill chunks + decode rows)
    enable_prefix_caching: bool = True
    max_blocks: int = 1 << 17             # a tiny model's 2 GiB would be millions of blocks
    num_blocks_override: int | None = None  # exactly this many blocks (tests; vLLM's num_gpu_blocks_override)
    # auto: the core where the backend has no step runner of its own (numpy; Qwen3.5 on cuda),
    # one request at a time through CUDA's graphs for a dense model on cuda; on: the core on any
    # paging backend (cuda: its paged stepper, batch invariant); off: one request at a time
    batching: str = "auto"

    def __post_init__(self):
        for name in ("kv_cache_memory", "block_size", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, got {self.batching!r}")


def make_backend(name: str) -> Backend:
    """cpu, cuda, or auto (cuda where a device answers, else cpu)."""
    if name in ("cuda", "auto"):
        try:
            from inloop.services.runtime.backends.cuda.backend import CudaBackend
            from inloop.services.runtime.backends.cuda.driver import cuda_available
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
    from inloop.services.runtime.backends.cpu.backend import NumpyBackend
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
                 name: str, max_context: int = DEFAULT_MAX_CONTEXT, kv_session_positions: int = 65536,
                 kv_session_ttl_s: float = 600.0,
                 runner: StepRunner | None = None, batch: BatchConfig | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.eos_ids = frozenset(eos_ids)
        self.max_context = min(max_context, model.cfg.max_position)
        batch = batch or BatchConfig()
        if batch.batching == "on" and not (model.backend.paged_kv and self._pages(model)):
            raise ValueError(f"--batching on: the {model.backend.name} backend has no paged KV pool"
                             if not model.backend.paged_kv else
                             "--batching on: a model with dynamic RoPE cannot share the paged pool (its "
                             "frequencies follow one sequence's length)")
        # --batching on: the core serves, whatever step runner the backend has (its steps go
        # through the backend's paged stepper, or forward_paged)
        self.runner = runner or (ForwardStepRunner(model) if batch.batching == "on"
                                 else runner_for(model, self.max_context))
        cfg = model.cfg
        self.info = {
            "name": name, "arch": cfg.arch, "backend": model.backend.name,
            "dtype": model.backend.compute_dtype, "vocab_size": cfg.vocab_size,
            "context_length": self.max_context, "num_parameters": model.num_parameters,
            "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
            "eos_token_ids": sorted(self.eos_ids), "step_runner": self.runner.name,
        }
        # A backend with a paged KV pool serves through the batching core (numpy always, CUDA with
        # --batching on); one whose runner keeps a cache per sequence (CUDA graphs) serves one
        # request at a time with the longest-common-prefix session store.
        self.core: EngineCore | None = None
        self.sessions: KVSessionStore | None = None
        if (batch.batching != "off" and model.backend.paged_kv and not self.runner.samples_on_device
                and self._pages(model)):
            self.core = self._make_core(batch, kv_session_positions, kv_session_ttl_s)
            self.info["kv_cache"] = {"num_blocks": self.core.pool.num_blocks, "block_size": batch.block_size,
                                     "max_num_seqs": batch.max_num_seqs,
                                     "max_num_batched_tokens": batch.max_num_batched_tokens}
            if self.core.manager.states is not None:   # a hybrid model's linear-attention state slots
                self.info["kv_cache"]["state_slots"] = self.core.manager.states.num_slots
        else:
            self.sessions = KVSessionStore(model.backend, max_positions=kv_session_positions,
                                           ttl_s=kv_session_ttl_s)
        # the session store's prefix cache is turned on after warm-up (the CLI does), so the
        # warm-up's requests leave nothing behind
        self._prefix_cache = False
        if self.core is not None:
            self.prefix_cache = batch.enable_prefix_caching   # off, and logged, for a hybrid model
        self._anonymous = 0
        self.template_renders_tools = "tools" in (tokenizer.chat_template or "")
        # what the chat template asks for: the tool-call form, and whether the output may think
        self.tool_form = tool_call_form(tokenizer.chat_template) if self.template_renders_tools else "hermes"
        self.thinks = template_thinks(tokenizer.chat_template)
        self._masks: VocabMasks | None = None

    def _make_core(self, batch: BatchConfig, pinned_positions: int, pin_ttl_s: float) -> EngineCore:
        c, model = self.model.cfg, self.model
        # a hybrid model (Qwen3.5): KV blocks for its full-attention layers only, and a
        # linear-attention state slot per running sequence plus as many for pinned task
        # sessions (a task between two model steps), taken from the same memory budget
        hybrid = hasattr(model, "alloc_paged_kv")
        kv_layers = model.kv_layers if hybrid else c.num_layers
        state_slots = 2 * batch.max_num_seqs if hybrid else 0
        memory = batch.kv_cache_memory - (state_slots * model.state_bytes() if hybrid else 0)
        per_block = 2 * kv_layers * c.num_kv_heads * c.head_dim * batch.block_size * model.backend.kv_element_bytes
        # (a model of linear layers only has no KV: its blocks are bookkeeping)
        num_blocks = batch.num_blocks_override or min(max(memory, 0) // per_block if per_block else batch.max_blocks,
                                                      batch.max_blocks)
        if num_blocks < 1:
            raise ValueError(f"--kv-cache-memory {batch.kv_cache_memory} bytes holds no block of "
                             f"{batch.block_size} positions ({per_block} bytes)"
                             + (f" beside {state_slots} linear-attention states of {model.state_bytes()} bytes"
                                if hybrid else ""))
        self.max_context = min(self.max_context, num_blocks * batch.block_size)
        self.info["context_length"] = self.max_context
        pool = BlockPool(num_blocks, batch.block_size)
        manager = KVCacheManager(pool, batch.enable_prefix_caching, num_state_slots=state_slots,
                                 max_pinned_blocks=max(1, pinned_positions // batch.block_size), pin_ttl_s=pin_ttl_s)
        if hybrid:
            kv = model.alloc_paged_kv(num_blocks, batch.block_size, state_slots)
        else:
            kv = model.backend.alloc_paged_kv(c.num_layers, c.num_kv_heads, num_blocks, batch.block_size, c.head_dim)
        return EngineCore(model, kv, manager, batch.max_num_seqs, batch.max_num_batched_tokens,
                          stepper=model.backend.paged_stepper(model, kv, self.max_context))

    @property
    def prefix_cache(self) -> bool:
        """Automatic prefix caching for requests without a session (on by default, as vLLM v1's)."""
        return self._prefix_cache

    @prefix_cache.setter
    def prefix_cache(self, on: bool) -> None:
        # A hybrid model's linear-attention state holds every token it was fed: a cached entry
        # serves only a prompt that continues all of it, so prefix caching stays off for them.
        if on and not getattr(self.model, "prefix_cacheable", True):
            log.info("prefix_cache_off", arch=self.model.cfg.arch,
                     reason="linear-attention state cannot be cut back to a shared prefix")
            on = False
        self._prefix_cache = bool(on)
        if self.core is not None:
            with self.core.cond:
                self.core.manager.enable_prefix_caching = self._prefix_cache

    @staticmethod
    def _pages(model) -> bool:
        """Whether the model runs in the batching core's paged pool: every model but one with
        dynamic RoPE (whose frequencies follow the current length of the one sequence in a
        call). A hybrid model's linear layers keep their state in the core's state slots."""
        rope = getattr(model.cfg, "rope", None)
        return getattr(rope, "rope_type", "default") != "dynamic"

    @property
    def masks(self) -> VocabMasks:
        """Token byte strings and grammar masks, built on first use (a pass over the vocabulary)."""
        if self._masks is None:
            self._masks = VocabMasks(self.tokenizer)
        return self._masks

    @classmethod
    def load(cls, model_dir: str | Path, backend: str | Backend = "cpu",
             max_context: int = DEFAULT_MAX_CONTEXT, kv_session_positions: int = 65536,
             kv_session_ttl_s: float = 600.0, batch: BatchConfig | None = None) -> "Engine":
        model_dir = Path(model_dir)
        t0 = time.perf_counter()
        cfg = read_config(model_dir)
        tokenizer = Tokenizer(model_dir)
        be = make_backend(backend_for(cfg, backend)) if isinstance(backend, str) else backend
        weights = Weights(model_dir)
        model = build_model(cfg, be, weights)
        engine = cls(model, tokenizer, _eos_ids(model_dir, cfg, tokenizer), model_dir.name, max_context,
                     kv_session_positions, kv_session_ttl_s, batch=batch)
        log.info("model_loaded", model=model_dir.name, arch=cfg.arch, backend=be.name,
                 step_runner=engine.runner.name, params=model.num_parameters,
                 load_ms=round((time.perf_counter() - t0) * 1e3, 1))
        return engine

    # ---- start-up -----------------------------------------------------------------
    def warm_up(self) -> float:
        """Pay, before the service reports healthy, what the first request would pay: the
        grammar's vocabulary masks, and on a runner that samples on the device (CUDA) the
        capture of the decode graphs — the sampling one by a short free generation, the
        host-logits one by a forced tool call — and a small prefill bucket. Returns seconds."""
        t0 = time.perf_counter()
        self.masks  # noqa: B018 - built on first use
        if self.samples_on_device:  # the numpy runner has nothing to capture; CUDA's core its bucket graphs
            self.generate(GenerateRequest(prompt="Hello", sampling=SamplingParams(max_tokens=3)))
            self.generate(GenerateRequest(messages=[ChatMessage("user", "ping")], tools=[_WARM_UP_TOOL],
                                          tool_choice="required", sampling=SamplingParams(max_tokens=32)))
        return time.perf_counter() - t0

    # ---- prompt -------------------------------------------------------------------
    def render(self, req: GenerateRequest) -> str:
        """The prompt text of a chat request, with its tools: the one function both routes use.
        Earlier assistant turns' tool calls are written in the form the template asks for."""
        messages = [{"role": m.role, "content": in_form(m.content, self.tool_form) if m.role == "assistant"
                     else m.content} for m in req.messages]
        tools = req.tools if req.tool_choice != "none" else []
        variables = {} if req.enable_thinking is None else {"enable_thinking": req.enable_thinking}
        if tools and not self.template_renders_tools:
            return self.tokenizer.render_chat(with_tools_prompt(messages, tools), **variables)
        return self.tokenizer.render_chat(messages, tools=tools or None, **variables)

    def prompt_ids(self, req: GenerateRequest) -> list[int]:
        return self._prompt(req)[1]

    def _prompt(self, req: GenerateRequest) -> tuple[str, list[int]]:
        """(the prompt text, its ids)."""
        if req.messages:
            text = self.render(req)
            ids = self.tokenizer.encode(text)
        else:
            text = req.prompt
            ids = self.tokenizer.encode(req.prompt, add_special_tokens=True)
        field = "messages" if req.messages else "prompt"
        if not ids:
            raise InvalidRequest(field, "the prompt encodes to zero tokens")
        if len(ids) >= self.max_context:
            raise InvalidRequest(field, f"the prompt has {len(ids)} tokens; the context holds "
                                        f"{self.max_context} (prompt plus at least one new token)")
        return text, ids

    # ---- the steps ----------------------------------------------------------------
    def extend(self, ids: list[int], cache: KVCache | Sequence, all_logits: bool = False) -> np.ndarray:
        """Run ids through the model at positions cache.length...; logits [len(ids) or 1, V].
        A batched sequence's tokens go through the core, in a step with the others'."""
        if isinstance(cache, Sequence):
            return self.core.feed(cache, ids, all_logits)
        return self.runner.logits(ids, cache, all_logits)

    @property
    def samples_on_device(self) -> bool:
        """Whether a free pick is drawn on the device (sample()): the CUDA graphs' runner, or
        the batching core over a backend stepper that samples (CUDA)."""
        return self.core.samples_on_device if self.core is not None else self.runner.samples_on_device

    def sample(self, ids: list[int], cache, sampling) -> tuple[int, float, float, float]:
        """Run ids and draw the next token on the device: (token, logprob, entropy, margin)."""
        if isinstance(cache, Sequence):
            return self.core.sample(cache, ids, sampling)
        return self.runner.sample(ids, cache, sampling)

    def prefill(self, ids: list[int], cache: KVCache) -> np.ndarray:
        """Run the prompt (from cache.length on) through the model; logits of the last token [V]."""
        return self.extend(ids[cache.length:], cache)[-1]

    def decode_one_token(self, token: int, cache: KVCache) -> np.ndarray:
        return self.extend([token], cache)[-1]

    # ---- KV caches ------------------------------------------------------------------
    def _cache_for(self, ids: list[int], capacity: int, session_id: str) -> KVCache:
        """A cache holding the longest reusable prefix of ids (from the task's session), with room for `capacity`."""
        capacity = min(-(-capacity // 256) * 256, self.max_context)  # round up: fewer regrowths
        session = self.sessions.take(session_id) if session_id else None
        if session is None and self.prefix_cache:  # a task's first step, or a stateless request
            session = self.sessions.take_longest_prefix(ids, PREFIX_NAMESPACE, PREFIX_MIN_TOKENS)
        if session is None:
            return self.runner.new_cache(capacity)
        keep = min(common_prefix(session.ids, ids), len(ids) - 1)  # >= 1 token to prefill for logits
        cache = session.cache
        if keep < cache.length and not cache.rewindable:
            # linear-attention state covers all the session's tokens: it cannot be cut back
            self.runner.free_cache(cache)
            return self.runner.new_cache(capacity)
        self.sessions.hits += keep
        if cache.capacity < capacity:
            cache = self.runner.grow_cache(cache, capacity, keep)
        cache.length = keep
        return cache

    def _anonymous_key(self) -> str:
        self._anonymous += 1
        return f"{PREFIX_NAMESPACE}{self._anonymous}"

    def end_session(self, session_id: str) -> bool:
        """Free a task's kept cache (task ended, failed, expired or was cancelled); with the
        prefix cache on, hand it to the prefix cache instead, as a stateless caller's would be."""
        if self.core is not None:  # unpinned blocks stay cached while prefix caching is on
            with self.core.cond:
                return self.core.manager.unpin(session_id)
        if self.prefix_cache:
            return self.sessions.rename(session_id, self._anonymous_key())
        return self.sessions.drop(session_id)

    # ---- one request --------------------------------------------------------------
    def generate(self, req: GenerateRequest, on_token: Callable[[TokenEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> GenerateResult:
        req.validate()
        text, ids = self._prompt(req)
        # a thinking model's output: the thought apart from the answer, in the stream as well
        split = ReasoningSplit(opens_thought(text)) if self.thinks and req.messages else None
        raw_on_token = on_token
        if split is not None and on_token is not None:
            on_token = _split_events(on_token, split)
        sp = req.sampling
        budget = min(sp.max_tokens, self.max_context - len(ids))
        constrained = (bool(req.tools) and req.tool_choice != "none") or req.response_schema is not None
        if self.core is not None:
            return self._generate_batched(req, ids, budget, constrained, on_token, should_stop, split, raw_on_token)
        cache = self._cache_for(ids, len(ids) + budget, req.session_id)
        gen = Generation(self, ids, cache, Sampler(sp), budget, sp.stop, on_token,
                         self.masks if constrained else None)
        gen.should_stop = should_stop
        finish = "length"
        keep_session = False
        try:
            if should_stop and should_stop():
                gen.finish()
                return self._result(gen, "cancelled", split, raw_on_token)
            gen.prefill()
            finish = self._decode(gen, req, should_stop, split)
            keep_session = (bool(req.session_id) or self.prefix_cache) and finish != "cancelled"
        finally:
            if keep_session:
                self.sessions.put(req.session_id or self._anonymous_key(), Session(cache, gen.fed_ids()))
            else:
                self.runner.free_cache(cache)
        gen.finish()
        return self._result(gen, finish, split, raw_on_token)

    def _generate_batched(self, req: GenerateRequest, ids: list[int], budget: int, constrained: bool,
                          on_token, should_stop, split: ReasoningSplit | None, raw_on_token) -> GenerateResult:
        """One sequence of the batching core: the same decode loop, its model calls batched
        with the other sequences'; a task's blocks stay pinned under its session id."""
        sp = req.sampling
        seq = self.core.open(req.session_id, expected_len=len(ids) + budget)
        gen = Generation(self, ids, seq, Sampler(sp), budget, sp.stop, on_token, self.masks if constrained else None)
        gen.should_stop = should_stop
        finish = "cancelled"
        try:
            if not (should_stop and should_stop()):
                gen.prefill()
                finish = self._decode(gen, req, should_stop, split)
        finally:
            self.core.close(seq, pin=bool(req.session_id) and finish != "cancelled")
        gen.finish()
        return self._result(gen, finish, split, raw_on_token)

    def _decode(self, gen: Generation, req: GenerateRequest, should_stop, split: ReasoningSplit | None) -> str:
        """The decode loop: free sampling, or a forced tool call where tool_choice asks for one.
        A thinking model's call counts only in the answer; a forced call after a prompt that
        opened a thought closes it (empty) first, so the call is the answer."""
        in_thought = split is not None and split.in_thought
        if in_thought and (req.response_schema is not None or req.tool_choice not in ("none", "auto")):
            if not gen.force(THINK_CLOSE + "\n\n"):
                return "length"
        if req.response_schema is not None:
            return self._constrained_answer(gen, req.response_schema)
        forced = req.tool_choice if req.tool_choice not in ("none", "auto") else None
        if forced and gen.masks is not None:
            return self._constrained_call(gen, req.tools, None if forced == "required" else forced, opened=False,
                                          parallel=req.parallel_tool_calls)
        while True:
            token = gen.pick()
            if (token in self.eos_ids and not req.sampling.ignore_eos) or gen.stop_hit:
                return "stop"
            if gen.masks is not None and OPEN in gen.text() and (
                    split is None or OPEN in ReasoningSplit.split(gen.text(), split.in_thought)[1]):
                return self._constrained_call(gen, req.tools, None, opened=True, parallel=req.parallel_tool_calls)
            if gen.remaining() <= 0:
                return "length"
            if should_stop and should_stop():
                return "cancelled"

    def _constrained_answer(self, gen: Generation, schema: dict) -> str:
        try:
            constrained.json_value(gen, schema, "response_format.json_schema")
        except constrained.BudgetExhausted:
            return "length"
        except constrained.Stopped:
            return "cancelled"
        return "stop"

    def _constrained_call(self, gen: Generation, tools, only, opened, parallel: bool = False) -> str:
        """One call (a named tool_choice, or parallel calls off), or as many as the model opens
        (Hermes form: the model ends its turn or opens another `<tool_call>`)."""
        grammar = constrained_xml if self.tool_form == XML else constrained
        try:
            grammar.tool_call(gen, tools, only=only, opened=opened)
            while parallel and only is None and grammar is constrained and constrained.another_call(gen, self.eos_ids):
                constrained.tool_call(gen, tools, opened=True)
        except constrained.BudgetExhausted:
            return "length"
        except constrained.Stopped:
            return "cancelled"
        return "tool_calls"

    @staticmethod
    def _result(gen: Generation, finish: str, split: ReasoningSplit | None = None,
                on_token: Callable[[TokenEvent], None] | None = None) -> GenerateResult:
        text, reasoning = gen.text(), ""
        if split is not None:
            r, a = split.flush()  # held back for a tag that never came: the stream's last piece
            if (r or a) and on_token is not None and gen.out_ids:
                on_token(TokenEvent(len(gen.out_ids) - 1, gen.out_ids[-1], a, None, r))
            # the same split as the stream's (it does not depend on how the text was cut)
            reasoning, text = ReasoningSplit.split(text, split.in_thought)
        return GenerateResult(text=text, token_ids=gen.out_ids, finish_reason=finish,
                              prompt_tokens=len(gen.prompt_ids), completion_tokens=len(gen.out_ids),
                              timings=gen.timings, token_stats=gen.stats,
                              uncertainty=UncertaintySummary.of(gen.stats), reasoning=reasoning)


def _split_events(on_token: Callable[[TokenEvent], None], split: ReasoningSplit) -> Callable[[TokenEvent], None]:
    """on_token with each event's text split into its thought and answer parts."""
    def emit(event: TokenEvent) -> None:
        reasoning, answer = split.feed(event.text)
        on_token(replace(event, text=answer, reasoning=reasoning))
    return emit

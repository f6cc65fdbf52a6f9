"""One running generation: the state a request's decode loop advances token by token.

It owns the KV cache position, the current next-token logits, the sampled and forced
tokens, the text stream (incremental detokenization + stop strings) and the statistics.
`pick` (sample, optionally among allowed tokens) and `force` (append fixed text) are the
two ways to add tokens; constrained tool calls are written against exactly these.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from services.runtime.backends.base import KVCache
from services.runtime.engine.detokenize import IncrementalDecoder, StopMatcher
from services.runtime.engine.sampler import Sampler, log_softmax, token_stats
from services.runtime.engine.types import TokenEvent, TokenStats, Timings
from services.runtime.engine.vocab_masks import VocabMasks


class Generation:
    def __init__(self, engine, prompt_ids: list[int], cache: KVCache, sampler: Sampler, budget: int,
                 stop: tuple[str, ...], on_token: Callable[[TokenEvent], None] | None,
                 masks: VocabMasks | None):
        self.engine = engine
        self.prompt_ids = prompt_ids
        self.cache = cache
        self.sampler = sampler
        self.budget = budget
        self.on_token = on_token
        self.masks = masks
        self.decoder = IncrementalDecoder(engine.tokenizer)
        self.stops = StopMatcher(stop)
        self.out_ids: list[int] = []
        self.stats: list[TokenStats] = []
        self.timings = Timings()
        self.logits: np.ndarray | None = None
        self.stop_hit = False
        self._pending: int | None = None  # sampled but not yet fed through the model
        self._t0 = time.perf_counter()

    # ---- model ----------------------------------------------------------------------
    def prefill(self) -> None:
        self.logits = self.engine.prefill(self.prompt_ids, self.cache)
        self.timings.prefill_ms = (time.perf_counter() - self._t0) * 1e3

    def _feed_pending(self) -> None:
        if self._pending is not None:
            token, self._pending = self._pending, None
            self.logits = self.engine.decode_one_token(token, self.cache)

    def fed_ids(self) -> list[int]:
        """The ids whose keys/values are in the cache (everything but a pending token)."""
        n = self.cache.length
        return (self.prompt_ids + self.out_ids)[:n]

    def remaining(self) -> int:
        return self.budget - len(self.out_ids)

    # ---- adding tokens ------------------------------------------------------------
    def pick(self, allowed: np.ndarray | None = None) -> int:
        """Sample the next token (among `allowed` if given), emit it, and queue it for the model."""
        self._feed_pending()
        logits = self.logits if allowed is None else np.where(allowed, self.logits, -np.inf).astype(np.float32)
        # stats come from the full distribution, not the grammar-masked one
        token = self.sampler.choose(logits)
        st = token_stats(log_softmax(self.logits), token) if self.sampler.params.return_uncertainty else None
        self._emit(token, st)
        self._pending = token
        return token

    def force(self, text: str) -> bool:
        """Append fixed text: its tokens go through the model in one chunk. False (and
        nothing appended) when the text does not fit in the remaining budget."""
        self._feed_pending()
        ids = self.engine.tokenizer.encode(text)
        if len(ids) > self.remaining():
            return False
        want_stats = self.sampler.params.return_uncertainty
        rows = self.engine.extend(ids, self.cache, all_logits=want_stats)  # [len(ids), V] or [1, V]
        prev = self.logits
        for i, token in enumerate(ids):
            st = token_stats(log_softmax(prev if i == 0 else rows[i - 1]), token) if want_stats else None
            self._emit(token, st)
        self.logits = rows[-1]
        return True

    def _emit(self, token: int, st: TokenStats | None) -> None:
        self.out_ids.append(token)
        if st is not None:
            self.stats.append(st)
        if len(self.out_ids) == 1:
            self.timings.ttft_ms = (time.perf_counter() - self._t0) * 1e3
        if token in self.engine.eos_ids:
            return
        delta, hit = self.stops.feed(self.decoder.push(token))
        self.stop_hit = self.stop_hit or hit
        if self.on_token:
            self.on_token(TokenEvent(len(self.out_ids) - 1, token, delta, st))

    def text(self) -> str:
        return self.stops.text

    def finish(self) -> None:
        """Flush text held back for a possible stop string; record the decode time."""
        tail = self.stops.flush()
        if tail and self.on_token and self.out_ids:
            self.on_token(TokenEvent(len(self.out_ids) - 1, self.out_ids[-1], tail, None))
        self.timings.decode_ms = (time.perf_counter() - self._t0) * 1e3 - self.timings.prefill_ms

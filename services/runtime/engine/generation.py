"""One running generation: the state a request's decode loop advances token by token.

It owns the KV cache position, the current next-token logits, the sampled and forced
tokens, the text stream (incremental detokenization + stop strings) and the statistics.
`pick` (sample, optionally among allowed tokens) and `force` (append fixed text) are the
two ways to add tokens; constrained tool calls are written against exactly these.

Tokens reach the model lazily: the prompt and each sampled token wait in `_pending` until
the next pick or force feeds them, so that step knows what it needs back. A pick among
allowed tokens, or forced text, needs the logits row on the host; a free pick on a runner
that samples on the device (CUDA) gets only the token and its statistics back, and the
prompt + first token (or a token + the next one) is one device pass.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import replace
from typing import Callable

import numpy as np

from inloop.services.contract.backend import KVCache
from inloop.services.contract.generation import Timings, TokenEvent, TokenStats
from inloop.services.contract.step_runner import DeviceSampling
from inloop.services.runtime.engine.detokenize import IncrementalDecoder, StopMatcher
from inloop.services.runtime.engine.sampler import Sampler, log_softmax, token_stats
from inloop.services.runtime.engine.vocab_masks import VocabMasks


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
        self.stop_hit = False
        self.should_stop: Callable[[], bool] | None = None  # the request's cancel/deadline check
        self._logits: np.ndarray | None = None   # host logits after the last host-logits feed
        self._pending: list[int] = []            # queued for the model, not yet fed (prompt, then a token)
        self._prompt_fed = False
        p = sampler.params
        # the device sampler's RNG is counter-based (seed, token index): a seeded request
        # repeats; an unseeded one gets a fresh seed (not from sampler.rng, which stays the
        # host sampler's alone)
        seed = p.seed if p.seed is not None else secrets.randbits(62)
        self._device = DeviceSampling.of(p, seed)
        self._t0 = time.perf_counter()

    # ---- model ----------------------------------------------------------------------
    def prefill(self) -> None:
        """Queue the prompt (what the cache does not hold yet); it runs with the first pick."""
        self._pending = list(self.prompt_ids[self.cache.length:])

    @property
    def logits(self) -> np.ndarray:
        """The next-token logits on the host: a pending token is fed first, so after a pick
        this is the distribution of the token that follows it (what the grammar asks about
        when it decides whether a number goes on)."""
        self._feed_pending()
        if self._logits is None:
            raise RuntimeError("no host logits here: the last step sampled on the device "
                               "(feed the pending token with a masked pick or a force first)")
        return self._logits

    def _fed(self) -> None:
        if not self._prompt_fed:
            self._prompt_fed = True
            self.timings.prefill_ms = (time.perf_counter() - self._t0) * 1e3

    def _feed_pending(self) -> None:
        if self._pending:
            ids, self._pending = self._pending, []
            self._logits = self.engine.extend(ids, self.cache)[-1]
            self._fed()

    def _sample_pending_on_device(self) -> tuple[int, TokenStats]:
        ids, self._pending = self._pending, []
        # unconstrained with budget left: the next pick is most likely free too, so the runner
        # may start it now (a grammar run alternates free and masked picks: no lookahead)
        sampling = replace(self._device, step=len(self.out_ids), lookahead=self.masks is None and self.remaining() > 1)
        token, logprob, entropy, margin = self.engine.sample(ids, self.cache, sampling)
        self._logits = None  # this position's logits stayed on the device
        self._fed()
        return token, TokenStats(logprob=logprob, entropy=max(entropy, 0.0), margin=margin)

    def fed_ids(self) -> list[int]:
        """The ids whose keys/values are in the cache (everything but a pending token)."""
        n = self.cache.length
        return (self.prompt_ids + self.out_ids)[:n]

    def stopped(self) -> bool:
        return bool(self.should_stop and self.should_stop())

    def remaining(self) -> int:
        return self.budget - len(self.out_ids)

    # ---- adding tokens ------------------------------------------------------------
    def pick(self, allowed: np.ndarray | None = None) -> int:
        """Sample the next token (among `allowed` if given), emit it, and queue it for the model."""
        want_stats = self.sampler.params.return_uncertainty
        # alternatives need the host's logits row: a request asking for them samples on the host
        on_device = self.engine.samples_on_device and not self.sampler.params.top_logprobs
        if allowed is None and self._pending and on_device:
            token, st = self._sample_pending_on_device()  # stats from the same device pass
            st = st if want_stats else None
        else:
            self._feed_pending()
            logits = self.logits if allowed is None else np.where(allowed, self.logits, -np.inf).astype(np.float32)
            # stats come from the full distribution, not the grammar-masked one
            token = self.sampler.choose(logits)
            st = self._stats(token) if want_stats else None
        self._emit(token, st)
        self._pending = [token]
        return token

    def _stats(self, token: int) -> TokenStats:
        logprobs = log_softmax(self.logits)
        st = token_stats(logprobs, token)
        k = min(self.sampler.params.top_logprobs, logprobs.size)
        if not k:
            return st
        best = np.argpartition(logprobs, -k)[-k:]
        best = best[np.argsort(-logprobs[best])]
        decode = self.engine.tokenizer.decode
        top = tuple((decode([int(i)], skip_special_tokens=False), float(logprobs[i])) for i in best)
        return TokenStats(st.logprob, st.entropy, st.margin, top)

    def force(self, text: str) -> bool:
        """Append fixed text: its tokens go through the model in one chunk. False (and
        nothing appended) when the text does not fit in the remaining budget."""
        self._feed_pending()
        ids = self.engine.tokenizer.encode(text)
        if len(ids) > self.remaining():
            return False
        want_stats = self.sampler.params.return_uncertainty
        prev = self.logits if want_stats else None
        rows = self.engine.extend(ids, self.cache, all_logits=want_stats)  # [len(ids), V] or [1, V]
        for i, token in enumerate(ids):
            st = token_stats(log_softmax(prev if i == 0 else rows[i - 1]), token) if want_stats else None
            self._emit(token, st)
        self._logits = rows[-1]
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

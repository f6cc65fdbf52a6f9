"""The engine's StepRunner on the CUDA backend: prefill and decode through CUDA graphs.

What the engine asks for maps onto prefill.GraphRunner like this:

    sample(ids, cache)             one id  -> the decode graph with its sampler kernels: the
                                              whole step, token + logprob/entropy/margin back
                                              (with sampling.lookahead, the next step is
                                              already running when this one is read)
                                   several -> the prompt's prefill graph (bucketed), sampling
                                              inside the same graph
    logits(ids, cache)             one id  -> the decode graph without the sampler, logits row
                                              copied back (constrained picks mask it on the host)
                                   several -> the prefill graph's last-row logits
    logits(ids, cache, all_logits) several -> the prefill graphs' ALL_ROWS variant, in chunks of
                                              up to 64 tokens: every row's logits (forced text
                                              whose per-token uncertainty was asked for)

The caches are the backend's own (bf16 [layers, kv_heads, capacity, head_dim]); a graph
reads their pointers and capacity from its DecodeState, so any cache up to `max_capacity`
(which only sizes the attention split count) runs through the same captured graphs, and
a KV session kept by the engine is fed back without conversion.
"""
from __future__ import annotations

import time

import numpy as np

from inloop.services.contract.backend import KVCache
from inloop.services.contract.step_runner import DeviceSampling, StepRunner


class CudaStepRunner(StepRunner):
    name = "cuda-graphs"
    samples_on_device = True

    def __init__(self, backend, model, max_capacity: int):
        super().__init__(model)
        t0 = time.perf_counter()
        self.max_capacity = max_capacity
        self.graphs = backend.graph_runner(model, max_capacity)  # captures the decode step lazily
        self.build_seconds = time.perf_counter() - t0

    def _check(self, ids, cache: KVCache) -> list[int]:
        # the scheduler's worker thread may build a prefill graph (allocations) on its first
        # request: bind the context to whichever thread calls (cached per thread)
        self.backend.device.make_current()
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("a step needs at least one token")
        if cache.length + len(ids) > cache.capacity:
            raise ValueError(f"positions {cache.length}..{cache.length + len(ids) - 1} exceed the KV cache "
                             f"capacity {cache.capacity}")
        return ids

    def logits(self, ids, cache: KVCache, all_logits: bool = False) -> np.ndarray:
        ids = self._check(ids, cache)
        start = cache.length
        if all_logits and len(ids) > 1:
            rows = self.graphs.prefill_all_logits(ids, start, cache)
        elif len(ids) == 1:
            rows = self.graphs.decode_logits(ids[0], start, cache)[None, :]
        else:
            rows = self.graphs.prefill_logits(ids, start, cache)[None, :]
        cache.length = start + len(ids)
        return rows

    def sample(self, ids, cache: KVCache, sampling: DeviceSampling) -> tuple[int, float, float, float]:
        ids = self._check(ids, cache)
        start = cache.length
        if len(ids) == 1:
            out = self.graphs.decode_sample(ids[0], start, cache, sampling)
        else:
            out = self.graphs.prefill_sample(ids, start, cache, sampling)
        cache.length = start + len(ids)
        return out

    def describe(self) -> dict:
        dg = self.graphs.decode
        return {"step_runner": self.name, "max_capacity": self.max_capacity, "pdl": dg.pdl_used,
                "kernels_per_decode_step": dg.kernels_per_step(True),
                "prefill_buckets_built": sorted(self.graphs.prefills)}

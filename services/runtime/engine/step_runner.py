"""How the engine runs the model: the one interface between the decode loop and a backend.

The engine never calls `Transformer.forward` itself. It asks the backend for a StepRunner
(`runner_for`) and feeds tokens through it, one sequence (one KV cache) at a time:

    logits(ids, cache)   run ids at positions cache.length..; host logits of the last (or
                         every) fed token. Used for the prompt when the next pick needs host
                         logits (grammar masks), for forced text, and by tests/benchmarks.
    sample(ids, cache)   run ids and sample the next token where the logits are (the device),
                         returning the token and its uncertainty from the same pass. Only
                         runners with `samples_on_device` implement it; the engine then sends
                         every unconstrained pick here, so no logits row crosses to the host.

Both advance `cache.length`. Caches come from `new_cache` and are in the runner's own
layout, so a KV session kept between requests is fed straight back into the same runner.

`ForwardStepRunner` is the default (the numpy backend, and any backend without a fast
path): the op-by-op forward pass, host logits, host sampling. A backend with a faster way
(CudaBackend: prefill and decode as CUDA graphs, sampling on the GPU) provides
`backend.step_runner(model, max_context)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inloop.services.runtime.backends.base import KVCache


@dataclass(frozen=True)
class DeviceSampling:
    """What a device sampler needs: the request's settings, its seed and the token's index
    (a counter-based RNG: the same seed and index give the same draw)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    step: int = 0
    # a hint: the caller will most likely feed the sampled token next and sample again with
    # step + 1 (an unconstrained run with budget left), so a runner may start that step now
    lookahead: bool = False


class StepRunner:
    """The model on one backend, as the decode loop uses it (see the module docstring)."""

    name = "abstract"
    samples_on_device = False

    def __init__(self, model):
        self.model = model
        self.backend = model.backend

    # ---- KV caches ----------------------------------------------------------------------
    def new_cache(self, capacity: int) -> KVCache:
        """An empty cache for up to `capacity` positions, in this runner's layout."""
        return self.model.new_cache(capacity)

    def free_cache(self, cache: KVCache) -> None:
        self.backend.free_kv(cache)

    def grow_cache(self, cache: KVCache, capacity: int, keep: int) -> KVCache:
        """A cache of `capacity` positions holding cache's first `keep` ones (cache is freed)."""
        grown = self.new_cache(capacity)
        self.backend.copy_kv(cache, grown, keep)
        self.free_cache(cache)
        return grown

    # ---- running tokens -----------------------------------------------------------------
    def logits(self, ids: list[int], cache: KVCache, all_logits: bool = False) -> np.ndarray:
        """Feed ids at positions cache.length..; float32 logits [len(ids) or 1, V] on the host."""
        raise NotImplementedError

    def sample(self, ids: list[int], cache: KVCache, sampling: DeviceSampling) -> tuple[int, float, float, float]:
        """Feed ids and sample the next token on the device: (token, logprob, entropy, margin),
        the statistics from the temperature-1 distribution (engine/sampler.py's definitions)."""
        raise NotImplementedError(f"{self.name}: this runner samples on the host (samples_on_device is False)")

    def describe(self) -> dict:
        return {"step_runner": self.name}


class ForwardStepRunner(StepRunner):
    """Transformer.forward per call, logits copied to the host: the reference path."""

    name = "forward"

    def logits(self, ids: list[int], cache: KVCache, all_logits: bool = False) -> np.ndarray:
        b = self.backend
        start = cache.length
        positions = np.arange(start, start + len(ids), dtype=np.int32)
        out = self.model.forward(b.ids(np.asarray(ids, np.int32)), b.ids(positions), cache, all_logits)
        cache.length = start + len(ids)
        return b.to_host(out)


def runner_for(model, max_context: int) -> StepRunner:
    """The backend's own runner where it has one (`backend.step_runner`), else the forward pass."""
    make = getattr(model.backend, "step_runner", None)
    return make(model, max_context) if make is not None else ForwardStepRunner(model)

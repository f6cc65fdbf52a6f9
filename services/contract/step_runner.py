"""How the engine runs the model: the one interface between the decode loop and a backend.

The engine never calls `Transformer.forward` itself. It asks the backend for a StepRunner
(`Backend.step_runner`, else the engine's ForwardStepRunner) and feeds tokens through it, one
sequence (one KV cache) at a time:

    logits(ids, cache)   run ids at positions cache.length..; host logits of the last (or
                         every) fed token. Used for the prompt when the next pick needs host
                         logits (grammar masks), for forced text, and by tests/benchmarks.
    sample(ids, cache)   run ids and sample the next token where the logits are (the device),
                         returning the token and its uncertainty from the same pass. Only
                         runners with `samples_on_device` implement it; the engine then sends
                         every unconstrained pick here, so no logits row crosses to the host.

Both advance `cache.length`. Caches come from `new_cache` and are in the runner's own
layout, so a KV session kept between requests is fed straight back into the same runner.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inloop.services.contract.backend import KVCache
from inloop.services.contract.generation import SamplingParams


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

    @classmethod
    def of(cls, params: SamplingParams, seed: int) -> "DeviceSampling":
        """A request's settings with the seed its device draws use (step 0)."""
        return cls(params.temperature, params.top_k, params.top_p, seed)


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
        cache.carry_state(grown)
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

"""The engine's default StepRunner (contract/step_runner.py has the interface).

`ForwardStepRunner` serves the numpy backend, and any backend without a faster way: the
op-by-op forward pass, host logits, host sampling. A backend with one (CudaBackend: prefill
and decode as CUDA graphs, sampling on the GPU) returns its own from `Backend.step_runner`.
"""
from __future__ import annotations

import numpy as np

from inloop.services.contract.backend import KVCache
from inloop.services.contract.step_runner import StepRunner


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
    """The backend's own runner where it has one (`Backend.step_runner`), else the forward pass."""
    return model.backend.step_runner(model, max_context) or ForwardStepRunner(model)

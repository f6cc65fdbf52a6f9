"""What the decode graph and the prefill graphs share: capture (with programmatic dependent
launch where the driver takes it, else plainly), one run (replayed or recorded eagerly), and
reading back the logits row or the sampled result from the DecodeState.

A subclass sets `be`, `state` (its DecodeState on the device), `logits`, `_pinned` (the host
mirror of the state at offset 0), `host`, `_host_logits`, and defines `record(sample)`.
"""
from __future__ import annotations

import logging

import numpy as np

from .driver import CudaError, copy_dtoh
from .module import Graph

log = logging.getLogger("inloop.cuda")
RESULT_BYTES = 48  # token .. flags of DecodeState: what the host reads back per step


class StepGraph:
    graphs: dict[bool | str, Graph]  # variant -> graph; a variant is what record() takes
    pdl_used: bool = False

    def record(self, sample: bool | str) -> None:
        raise NotImplementedError

    def graph(self, sample: bool | str) -> Graph:
        """The captured graph of one variant (with or without the sampler kernels, ...)."""
        if sample not in self.graphs:
            self.graphs[sample] = self._capture(sample)
        return self.graphs[sample]

    def _capture(self, sample: bool | str) -> Graph:
        stream, alloc = self.be.stream, self.be.allocator
        if self.be.pdl:
            self.be.ops.pdl = True
            try:
                g = Graph.capture(stream, alloc, lambda: self.record(sample))
                self.pdl_used = True
                return g
            except CudaError as exc:  # a driver that cannot capture PDL edges: plain graph
                log.warning("%s: capture with programmatic dependent launch failed (%s); capturing without it",
                            type(self).__name__, exc)
            finally:
                self.be.ops.pdl = False
        return Graph.capture(stream, alloc, lambda: self.record(sample))

    def _run(self, sample: bool | str, use_graph: bool = True) -> None:
        if use_graph:
            self.graph(sample).launch(self.be.stream)
        else:
            self.record(sample)

    def _read_logits(self) -> np.ndarray:
        copy_dtoh(self._host_logits.ctypes.data, self.logits.ptr, self.logits.nbytes, self.be.stream)
        self.be.synchronize()
        return self._host_logits.copy()

    def _read_result(self) -> tuple[int, float, float, float]:
        """(token, logprob, entropy, margin) the sampler wrote into the DecodeState."""
        copy_dtoh(self._pinned.ptr, self.state.ptr, RESULT_BYTES, self.be.stream)
        self.be.synchronize()
        s = self.host[0]
        return int(s["token"]), float(s["logprob"]), float(s["entropy"]), float(s["margin"])

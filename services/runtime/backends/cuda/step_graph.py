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


def capture(be, record, pdl: bool) -> Graph:
    """`record()` captured into a graph on the backend's stream, its launches with PDL edges
    when `pdl`."""
    be.ops.pdl = pdl
    try:
        return Graph.capture(be.stream, be.allocator, record)
    finally:
        be.ops.pdl = False


def capture_as_served(be, record, what: str) -> tuple[Graph, bool]:
    """(graph, PDL used): with PDL edges where the backend uses them, plainly where the driver
    refuses them in capture."""
    if be.pdl:
        try:
            return capture(be, record, True), True
        except CudaError as exc:  # a driver that cannot capture PDL edges: plain graph
            log.warning("%s: capture with programmatic dependent launch failed (%s); capturing without it",
                        what, exc)
    return capture(be, record, False), False


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
        g, pdl = capture_as_served(self.be, lambda: self.record(sample), type(self).__name__)
        self.pdl_used = self.pdl_used or pdl
        return g

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

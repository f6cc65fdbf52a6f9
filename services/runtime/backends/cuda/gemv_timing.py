"""Timing GEMV configs inside a graph, as a decode step launches them: what the GEMV tuner
(gemv_tuning.py) runs on a device at first load, and what bench/cuda/probes.py's sweep reports.

Times are medians of event-timed graph replays, in microseconds per launch, each replay
starting from a flushed L2 (a decode step reads its weights from DRAM).
"""
from __future__ import annotations

import statistics

import numpy as np

from inloop.services.runtime.backends.cuda.driver import Event, memset_d8
from inloop.services.runtime.backends.cuda.module import Graph
from inloop.services.runtime.backends.cuda.step_graph import capture_as_served

GEMV_CONFIGS = ((1, 128), (1, 256), (2, 128), (2, 256), (4, 128), (4, 256), (8, 256))  # (split-K, threads)
REPLAYS = 7
SAME_RESULT_TOL = 1e-4  # fp32 sums in another order: relative to the largest output
FLUSH_BYTES = 192 << 20  # written between timed replays: several times any L2 (50 MB H100, 60 MB H200)


class L2Flush:
    """A scratch buffer written between timed replays, so a replay reads its weights from DRAM
    as a decode step does (the whole model streams through L2 between two reads of a layer)."""

    def __init__(self, be, nbytes: int | None = None):
        self.be, self.nbytes = be, nbytes or FLUSH_BYTES
        self.buf = be._empty((self.nbytes // 4,), "f32")

    def __call__(self) -> None:
        memset_d8(self.buf.ptr, 0, self.nbytes, self.be.stream)


def replay_us(be, graph: Graph, per_replay: int, replays: int = REPLAYS, flush: L2Flush | None = None) -> float:
    graph.launch(be.stream)  # warm: first replay uploads and touches everything
    be.synchronize()
    times = []
    for _ in range(replays):
        if flush is not None:
            flush()  # before e0: not timed
        e0, e1 = Event(), Event()
        e0.record(be.stream)
        graph.launch(be.stream)
        e1.record(be.stream)
        e1.synchronize()
        times.append(e1.elapsed_ms(e0) * 1e3 / per_replay)
    return statistics.median(times)


def config_name(ks: int, threads: int) -> str:
    return f"ks{ks}x{threads}"


def time_gemv_configs(be, weights: list, norm_w, mode: str, configs=GEMV_CONFIGS, replays: int = REPLAYS,
                      seed: int = 0, flush: L2Flush | None = None) -> tuple[tuple[int, int], dict]:
    """One projection shape (`weights`: same-shaped [N, K] matrices at distinct addresses, such
    as every layer's; rmsnorm weight or None; mode store | residual | swiglu) under the
    heuristic's config and each of `configs`: (heuristic config, {config: {"us": per launch,
    "max_rel_err": against the heuristic's y on weights[0]}}). A config's graph launches once
    per matrix, as a decode step does, and each timed replay starts from a flushed L2."""
    W0 = weights[0]
    N, K = W0.shape
    assert all(W.shape == W0.shape and W.dtype == W0.dtype for W in weights)
    rng = np.random.default_rng(seed)
    x = be.upload_activation(rng.standard_normal(K, dtype=np.float32))
    y = be._empty((N // 2 if mode == "swiglu" else N,))
    heuristic = be.ops.gemv_config(N, K, mode)
    flush = flush or L2Flush(be)

    def launch(cfg, W):
        be.ops.gemv(W, x, y, norm_w=norm_w, eps=1e-6, mode=mode, config=cfg)

    def once(cfg):
        memset_d8(y.ptr, 0, y.nbytes, be.stream)  # residual mode adds into y
        launch(cfg, W0)
        return be.to_host(y)

    ref = once(heuristic)
    scale = float(np.abs(ref).max()) or 1.0
    out = {}
    for cfg in dict.fromkeys((heuristic, *configs)):
        ks, threads = cfg
        if threads < 32 * ks:
            continue
        err = float(np.abs(once(cfg) - ref).max()) / scale
        g, _ = capture_as_served(be, lambda cfg=cfg: [launch(cfg, W) for W in weights], "gemv timing")
        out[cfg] = {"us": replay_us(be, g, len(weights), replays, flush), "max_rel_err": err}
    return heuristic, out

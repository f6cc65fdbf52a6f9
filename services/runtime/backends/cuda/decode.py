"""One decode step as one CUDA graph, captured once and replayed for every token.

Per layer the step is five kernels, fused so that intermediates never round-trip:

    gemv_norm_store    qkv = Wqkv · rmsnorm(r) (+ b)          (the norm is the GEMV's prologue)
    attention_decode   q/k norm + RoPE (a cos/sin table row), k/v -> cache, split attention, merge
    gemv_residual      r += Wo · attn
    gemv_norm_swiglu   act = silu(Wg · rmsnorm(r)) * (Wu · rmsnorm(r))
    gemv_residual      r += Wdown · act

then `gemv_norm_store` for the final norm + LM head, and (sampling graph) two sampler kernels.
r, the residual stream, stays fp32 in one buffer. Token, position, KV cache pointers,
capacity and sampling parameters live in a DecodeState in device memory, so the one graph
serves every step of every sequence; the sampler writes the next token and advances the
position there, so replays chain without the host. On sm_90 the kernels are launched with
programmatic dependent launch: each one prefetches its weights while the previous drains.
"""
from __future__ import annotations

import numpy as np

from inloop.services.contract.backend import KVCache
from inloop.services.contract.step_runner import DeviceSampling

from .driver import Event, PinnedBuffer, copy_dtoh, copy_htod
from .module import Graph
from .rope_rows import HostRope
from .state import DECODE_STATE, FLAG_ADVANCE, new_state, set_sampling
from .step_graph import RESULT_BYTES, StepGraph


def host_rope(cfg) -> HostRope | None:
    """How the graphs' cos/sin table is built: None for plain RoPE (on the device, from theta),
    else the model's scaled RoPE computed on the host (rope_rows.py)."""
    return HostRope(cfg.rope, cfg.head_dim) if cfg.rope.scaled else None


class DecodeGraph(StepGraph):
    def __init__(self, backend, model, max_capacity: int, sample: bool = True):
        self.be, self.model, self.cfg = backend, model, model.cfg
        c = self.cfg
        self.ops = backend.ops
        self.n_splits = self.ops.decode_splits(c.num_kv_heads, c.group_size, max_capacity, c.head_dim)
        # RoPE's cos/sin for every position this graph can see, read by the attention kernel
        # (and by the prefill graphs): the model's own frequencies, scaled or not
        self.host_rope = host_rope(c)
        self.rope_table = self.ops.rope_table(c.head_dim, c.rope_theta, max_capacity, self.host_rope)
        empty = backend._empty
        self.residual = empty((1, c.hidden_size))
        self.qkv = empty((1, c.qkv_size))
        self.attn = empty((1, c.q_size))
        self.act = empty((1, c.intermediate_size))
        self.logits = empty((1, c.vocab_size))
        self.state = empty((DECODE_STATE.itemsize // 4,), "i32")
        self._pinned = PinnedBuffer(DECODE_STATE.itemsize + 4 * c.vocab_size)
        self.host = self._pinned.view(DECODE_STATE, 1)
        self.host[:] = new_state()
        self._host_logits = self._pinned.view(np.float32, c.vocab_size, DECODE_STATE.itemsize)
        self._ring: PinnedBuffer | None = None
        self._slot_events: list[Event] = []
        self.pushes = 0  # state pushes so far: a step launched ahead is stale once this moves
        self.graphs: dict[bool, Graph] = {}
        self.pdl_used = False
        if backend.gemv_tuner is not None:  # before anything is captured (prefill graphs come after us)
            backend.gemv_tuner.tune(self.projections())
        self._warmup(sample)

    def projections(self) -> list[tuple]:
        """(weight, norm weight or None, mode) of every GEMV a step launches (what is tuned)."""
        m = self.model
        out = [(m.lm_head, m.final_norm, "store")]
        for lw in m.layers:
            out += [(lw.qkv, lw.input_norm, "store"), (lw.o, None, "residual"),
                    (lw.gate_up, lw.post_norm, "swiglu"), (lw.down, None, "residual")]
        return out

    # ---- recording --------------------------------------------------------------------
    def record(self, sample: bool) -> None:
        """Enqueue one step on the backend's stream (eagerly, or into a capture)."""
        c, m, ops = self.cfg, self.model, self.ops
        H, KVH, hd, eps = c.num_heads, c.num_kv_heads, c.head_dim, c.rms_norm_eps
        ops.embedding(m.embed, self.state, self.residual)  # ids = &state.token
        for i, lw in enumerate(m.layers):
            ops.gemv(lw.qkv, self.residual, self.qkv, bias=lw.qkv_bias, norm_w=lw.input_norm, eps=eps)
            # a layer without RoPE (smollm3) passes no table: the kernel's flags then skip the rotation
            ops.attention_decode(self.qkv, self.attn, H, KVH, hd, i, self.n_splits, state=self.state,
                                 q_norm=lw.q_norm, k_norm=lw.k_norm, eps=eps,
                                 rope_table=self.rope_table if c.use_rope[i] else None)
            ops.gemv(lw.o, self.attn, self.residual, mode="residual")
            ops.gemv(lw.gate_up, self.residual, self.act, norm_w=lw.post_norm, eps=eps, mode="swiglu")
            ops.gemv(lw.down, self.act, self.residual, mode="residual")
        ops.gemv(m.lm_head, self.residual, self.logits, norm_w=m.final_norm, eps=eps)
        if sample:
            ops.sample(self.logits, self.state)

    def _warmup(self, sample: bool) -> None:
        """Run both variants once eagerly on a one-position scratch cache: grows every workspace,
        raises shared-memory limits and loads every kernel before anything is captured."""
        c = self.cfg
        scratch = self.be.alloc_kv(c.num_layers, c.num_kv_heads, 1, c.head_dim)
        self.bind(scratch)
        self._push(token=0, pos=0, flags=0)
        for variant in ((False, True) if sample else (False,)):
            self.record(variant)
        self.be.synchronize()
        self.be.free_kv(scratch)
        self.host["k_cache"] = self.host["v_cache"] = 0
        self.host["capacity"] = 0

    # ---- host side of the state --------------------------------------------------------
    def bind(self, cache: KVCache) -> None:
        """Point the graph at a sequence's KV cache (takes effect with the next push)."""
        if cache.capacity > self.rope_table[1]:
            raise ValueError(f"KV cache capacity {cache.capacity} is beyond this decode graph's "
                             f"{self.rope_table[1]} positions")
        self.host["k_cache"] = cache.k.ptr
        self.host["v_cache"] = cache.v.ptr
        self.host["capacity"] = cache.capacity

    def set_sampling(self, sampling: DeviceSampling) -> None:
        set_sampling(self.host, sampling)

    def _push(self, token: int, pos: int, flags: int) -> None:
        self.be.device.make_current()
        if not 0 <= pos < int(self.host["capacity"][0]):
            raise ValueError(f"position {pos} is outside the bound KV cache (capacity {int(self.host['capacity'][0])})")
        self.host["token"], self.host["pos"], self.host["flags"] = token, pos, flags
        self.pushes += 1
        copy_htod(self.state.ptr, self._pinned.ptr, DECODE_STATE.itemsize, self.be.stream)

    def prime(self, token: int, pos: int) -> None:
        """Set the token to feed at `pos`; graph launches then chain from there."""
        self._push(token, pos, FLAG_ADVANCE)

    # ---- steps ----------------------------------------------------------------------------
    def step_logits(self, token: int, pos: int, use_graph: bool = True) -> np.ndarray:
        """Feed `token` at `pos`; return the next-token logits [V] (host sampling, masks)."""
        self._push(token, pos, 0)
        self._run(False, use_graph)
        return self._read_logits()

    def step(self, token: int | None = None, pos: int | None = None,
             use_graph: bool = True) -> tuple[int, float, float, float]:
        """Feed `token` at `pos` (or, with None, the token this graph sampled last, at the next
        position) and sample on the GPU: (next token, logprob, entropy, margin)."""
        self.be.device.make_current()
        if token is not None:
            self._push(token, pos, FLAG_ADVANCE)
        self._run(True, use_graph)
        return self._read_result()

    def _ensure_ring(self, n: int) -> None:
        if self._ring is None or self._ring.nbytes < n * RESULT_BYTES:
            # a step launched ahead may still be copying into the old ring: let it land first
            self.be.synchronize()
            self._ring = PinnedBuffer(max(n, 256) * RESULT_BYTES)

    def _replay_to_slot(self, slot: int) -> None:
        """Replay the sampling graph from the device state as it stands (a primed token, or
        the one the last replay sampled) and copy its result to ring slot `slot`."""
        self.graph(True).launch(self.be.stream)
        copy_dtoh(self._ring.ptr + slot * RESULT_BYTES, self.state.ptr, RESULT_BYTES, self.be.stream)

    def launch_into(self, slot: int) -> Event:
        """One replay into ring slot `slot`; returns an event recorded after its copy, so the
        host can wait for this step alone."""
        self._ensure_ring(slot + 1)
        while len(self._slot_events) <= slot:
            self._slot_events.append(Event(timing=False))
        self._replay_to_slot(slot)
        self._slot_events[slot].record(self.be.stream)
        return self._slot_events[slot]

    def slot_result(self, slot: int) -> tuple[int, float, float, float]:
        """(token, logprob, entropy, margin) in ring slot `slot` (once its copy has run)."""
        raw = self._ring.array[slot * RESULT_BYTES:(slot + 1) * RESULT_BYTES].tobytes()
        s = np.frombuffer(raw + bytes(DECODE_STATE.itemsize - RESULT_BYTES), DECODE_STATE)[0]
        return int(s["token"]), float(s["logprob"]), float(s["entropy"]), float(s["margin"])

    def generate(self, token: int, pos: int, n: int) -> list[tuple[int, float, float, float]]:
        """n chained steps with one synchronization at the end (each step's result is copied
        to its own pinned slot as it finishes). For throughput; EOS is checked by the caller."""
        self._ensure_ring(n)
        self._push(token, pos, FLAG_ADVANCE)
        for i in range(n):
            self._replay_to_slot(i)
        self.be.synchronize()
        out = [self.slot_result(i) for i in range(n)]
        self.host["token"], self.host["pos"] = out[-1][0], pos + n
        return out

    def kernels_per_step(self, sample: bool = True) -> int:
        return 1 + 5 * self.cfg.num_layers + 1 + (2 if sample else 0)

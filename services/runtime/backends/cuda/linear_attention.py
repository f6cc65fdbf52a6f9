"""CudaLinearAttention: NumpyLinearAttention's ops (backends/cpu/linear_attention.py) on the GPU,
for Qwen3.5's Gated DeltaNet layers and its gated, partially rotary attention layers
(model/qwen3_5.py). Same methods, same arguments, device tensors in and out; the kernels are
kernels/linear_attention.cu, launched by linear_attention_ops.py.

The states are f32 device buffers: one sequence's conv [L, C, K-1] and recurrent [L, Hv, dk,
dv], or a pool's [S, L, ...] (a slot per running sequence). The model reaches one layer of
either through `sequence_state` / `pool_state`, which give the kernels a `StateView` (the
layer's slot-0 address and the slot stride): the state is updated where it lies, never
gathered or scattered (16 heads of 128 x 128 are 1 MB a layer).

Prefill runs the delta rule token by token (gdn_recurrence over the chunk's rows, the state in
registers), not the chunked WY form NumpyLinearAttention.chunked_gated_delta_rule follows
(HF's prefill path): the results agree within float32 rounding, and decode and prefill then
share one kernel whose rounding does not depend on how a prompt is cut into chunks. PERF.md
says what the chunked form would buy.
"""
from __future__ import annotations

import numpy as np

from .driver import memset_d8
from .linear_attention_ops import LinearAttentionOps, StateView
from .tensor import DeviceTensor


class CudaLinearAttention:
    """The ops a hybrid model needs beyond the Backend interface, on a CudaBackend."""

    def __init__(self, backend):
        self.backend = backend
        self.launch = LinearAttentionOps(backend.ops)

    def _empty(self, shape) -> DeviceTensor:
        return self.backend._empty(tuple(shape), "f32")

    # ---- parameters and state ----------------------------------------------------------------
    def param(self, array: np.ndarray) -> DeviceTensor:
        """A linear layer's small parameter (conv taps, -exp(A_log), dt_bias, the gated norm's
        weight) as the kernels read it: f32, exactly the host's values."""
        return self.backend.upload_activation(np.asarray(array, np.float32))

    def alloc_state(self, num_layers: int, conv_dim: int, kernel: int, v_heads: int, k_dim: int, v_dim: int,
                    num_seqs: int | None = None) -> tuple[DeviceTensor, DeviceTensor]:
        """Zeroed conv and recurrent states: one sequence's [L, ...], or a pool [num_seqs, L, ...]."""
        self.backend.device.make_current()
        lead = (num_layers,) if num_seqs is None else (num_seqs, num_layers)
        conv = self._empty((*lead, conv_dim, kernel - 1))
        recurrent = self._empty((*lead, v_heads, k_dim, v_dim))
        for t in (conv, recurrent):
            memset_d8(t.ptr, 0, t.nbytes, self.backend.stream)
        return conv, recurrent

    def zero_state(self, conv: DeviceTensor, recurrent: DeviceTensor, slot: int) -> None:
        """Reset one slot of a pool [S, L, ...] (a sequence starting at token 0)."""
        self.backend.device.make_current()
        for t in (conv, recurrent):
            assert 0 <= slot < t.shape[0], (slot, t.shape)
            per_slot = t.nbytes // t.shape[0]
            memset_d8(t.ptr + slot * per_slot, 0, per_slot, self.backend.stream)

    def sequence_state(self, conv: DeviceTensor, recurrent: DeviceTensor, layer: int) -> tuple[StateView, StateView]:
        """Layer `layer` of one sequence's states, as a pool of one slot (slot 0)."""
        return StateView.of(conv, layer, pooled=False), StateView.of(recurrent, layer, pooled=False)

    def pool_state(self, conv: DeviceTensor, recurrent: DeviceTensor, layer: int) -> tuple[StateView, StateView]:
        """Layer `layer` of every slot of a pool [S, L, ...]."""
        return StateView.of(conv, layer, pooled=True), StateView.of(recurrent, layer, pooled=True)

    # ---- Gated DeltaNet ----------------------------------------------------------------------
    def decay_and_beta(self, a: DeviceTensor, b: DeviceTensor, neg_a: DeviceTensor,
                       dt_bias: DeviceTensor) -> tuple[DeviceTensor, DeviceTensor]:
        g, beta = self._empty(a.shape), self._empty(a.shape)
        self.launch.decay_beta(a, b, neg_a, dt_bias, g, beta)
        return g, beta

    def gated_delta_rows(self, mixed: DeviceTensor, g: DeviceTensor, beta: DeviceTensor, conv_weight: DeviceTensor,
                         conv_pool: StateView, recurrent_pool: StateView, spans: list[tuple[int, int, int]],
                         k_heads: int, k_dim: int, v_dim: int) -> DeviceTensor:
        """The conv and the delta rule of a step's rows, several sequences in one launch each:
        spans (first row, rows, state slot), one row for a decode step, more for a prefill
        chunk. mixed [T, conv_dim]; g, beta [T, v_heads]. Returns [T, v_heads, v_dim]."""
        t, conv_dim = mixed.shape
        v_heads = g.shape[1]
        table = self._spans(spans, t, conv_pool.slots, recurrent_pool.slots)
        conv_out = self._empty((t, conv_dim))
        self.launch.conv(mixed, conv_weight, conv_pool, table, len(spans), max(n for _, n, _ in spans), conv_out)
        out = self._empty((t, v_heads, v_dim))
        self.launch.recurrence(conv_out, g, beta, recurrent_pool, table, len(spans), out, k_heads, k_dim, v_dim)
        return out

    def _spans(self, spans: list[tuple[int, int, int]], rows: int, *slots: int) -> DeviceTensor:
        """The spans as the kernels read them (int32 [n, 3]), checked: each within the rows and
        the pool, no slot twice (two blocks would update one state)."""
        arr = np.asarray(spans, np.int64).reshape(-1, 3)
        assert len(arr), "no sequences"
        first, n, slot = arr[:, 0], arr[:, 1], arr[:, 2]
        assert (n >= 1).all() and (first >= 0).all() and (first + n <= rows).all(), (spans, rows)
        assert (slot >= 0).all() and (slot < min(slots)).all(), (spans, slots)
        assert len(set(slot.tolist())) == len(slot), f"a state slot twice in one step: {spans}"
        return self.backend.ids(arr.reshape(-1))

    def gated_rmsnorm(self, x: DeviceTensor, gate: DeviceTensor, weight: DeviceTensor, eps: float) -> DeviceTensor:
        """rmsnorm(x) * weight * silu(gate) over the last axis; x, gate [..., D]."""
        out = self._empty(x.shape)
        self.launch.gated_rmsnorm(x, gate, weight, out, eps)
        return out

    # ---- gated full attention -----------------------------------------------------------------
    def partial_rope(self, qkv: DeviceTensor, positions: DeviceTensor, num_heads: int, num_kv_heads: int,
                     head_dim: int, rotary_dim: int, theta: float) -> None:
        self.launch.partial_rope(qkv, positions, num_heads, num_kv_heads, head_dim, rotary_dim, theta)

    def output_gate(self, attn: DeviceTensor, gate: DeviceTensor) -> DeviceTensor:
        out = self._empty(attn.shape)
        self.launch.output_gate(attn, gate, out)
        return out

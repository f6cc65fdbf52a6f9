"""One launcher per kernel of kernels/linear_attention.cu (Qwen3.5's Gated DeltaNet layers and
its gated, partially rotary attention): shape asserts and the grid/block choice, as ops.py's
launchers, on the same `Ops` (its stream, kernels and PDL setting). Kept beside ops.py rather
than in it: these serve one model family.

Launchers write into tensors the caller allocated, so they can be captured in a graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .ops import Ops
from .tensor import DeviceTensor

CONV_TAPS, CONV_ROWS = 4, 8     # kernels/linear_attention.cu: taps held, rows per thread
GDN_COLS, GDN_MAX_WARPS = 32, 8  # value columns per recurrence block; dk <= 32 * GDN_MAX_WARPS


@dataclass(frozen=True)
class StateView:
    """One linear-attention layer's state in each slot of a buffer: slot s's [*shape] f32 state
    starts at ptr + 4 * s * slot_stride. `tensor` is the whole buffer (one sequence's
    [layers, ...] or a pool's [slots, layers, ...]), kept alive and bounds-checked by it."""

    tensor: DeviceTensor
    ptr: int
    slot_stride: int           # elements
    slots: int
    shape: tuple[int, ...]     # of one slot's state for this layer

    @classmethod
    def of(cls, buffer: DeviceTensor, layer: int, pooled: bool) -> StateView:
        """Layer `layer` of a [layers, ...] buffer (one slot) or a [slots, layers, ...] pool."""
        assert buffer.dtype == "f32"
        lead = 2 if pooled else 1
        slots, layers = (buffer.shape[0], buffer.shape[1]) if pooled else (1, buffer.shape[0])
        shape = buffer.shape[lead:]
        per_layer = math.prod(shape)
        assert 0 <= layer < layers, (layer, buffer.shape)
        return cls(buffer, buffer.ptr + 4 * layer * per_layer, layers * per_layer, slots, tuple(shape))


class LinearAttentionOps:
    def __init__(self, ops: Ops):
        self.ops = ops

    def conv(self, x: DeviceTensor, weight: DeviceTensor, state: StateView, spans: DeviceTensor, n_spans: int,
             max_rows: int, out: DeviceTensor) -> None:
        """out = silu(causal conv1d(x)) of each span's rows from its slot's conv state, which
        advances to the span's last K-1 inputs. x, out f32 [T, C]; weight f32 [C, K]; spans
        int32 [n_spans, 3] (first row, rows, slot), rows >= 1, at most max_rows."""
        T, C = x.shape
        K = weight.shape[1]
        assert x.dtype == out.dtype == weight.dtype == "f32" and out.shape == (T, C) and weight.shape == (C, K)
        assert 1 <= K <= CONV_TAPS, f"conv kernel {K}: the kernel holds up to {CONV_TAPS} taps"
        assert state.shape == (C, K - 1) and spans.dtype == "i32" and spans.numel >= 3 * n_spans
        assert 1 <= max_rows <= T and n_spans >= 1
        self.ops._launch("gdn_conv", (math.ceil(C / 128), n_spans, math.ceil(max_rows / CONV_ROWS)), (128,),
                         (x.ptr, weight.ptr, state.ptr, spans.ptr, out.ptr, C, K, state.slot_stride))

    def decay_beta(self, a: DeviceTensor, b: DeviceTensor, neg_a: DeviceTensor, dt_bias: DeviceTensor,
                   g: DeviceTensor, beta: DeviceTensor) -> None:
        """g = neg_a * softplus(a + dt_bias), beta = sigmoid(b); a, b, g, beta f32 [T, H]."""
        T, H = a.shape
        assert b.shape == g.shape == beta.shape == (T, H) and neg_a.numel == dt_bias.numel == H
        assert {t.dtype for t in (a, b, neg_a, dt_bias, g, beta)} == {"f32"}
        grid = max(1, min(math.ceil(T * H / 256), 4 * self.ops.sm_count))
        self.ops._launch("gdn_decay_beta", (grid,), (256,), (a.ptr, b.ptr, neg_a.ptr, dt_bias.ptr, g.ptr, beta.ptr,
                                                            T * H, H))

    def recurrence(self, qkv: DeviceTensor, g: DeviceTensor, beta: DeviceTensor, state: StateView,
                   spans: DeviceTensor, n_spans: int, out: DeviceTensor, k_heads: int, dk: int, dv: int) -> None:
        """The gated delta rule over each span's rows, from and into its slot's recurrent state
        [Hv, dk, dv]. qkv f32 [T, 2 k_heads dk + Hv dv] (the conv output); g, beta [T, Hv];
        out [T, Hv, dv]."""
        T = qkv.shape[0]
        Hv = g.shape[1]
        assert qkv.shape == (T, 2 * k_heads * dk + Hv * dv) and g.shape == beta.shape == (T, Hv)
        assert out.shape == (T, Hv, dv) and Hv % k_heads == 0
        assert {t.dtype for t in (qkv, g, beta, out)} == {"f32"}
        assert 1 <= dk <= 32 * GDN_MAX_WARPS, f"key head dim {dk}: the kernel holds up to {32 * GDN_MAX_WARPS}"
        assert state.shape == (Hv, dk, dv) and spans.dtype == "i32" and spans.numel >= 3 * n_spans
        warps = math.ceil(dk / 32)
        self.ops._launch("gdn_recurrence", (math.ceil(dv / GDN_COLS), Hv, n_spans), (32 * warps,),
                         (qkv.ptr, g.ptr, beta.ptr, state.ptr, spans.ptr, out.ptr, k_heads, Hv, dk, dv,
                          float(dk ** -0.5), state.slot_stride))

    def gated_rmsnorm(self, x: DeviceTensor, z: DeviceTensor, weight: DeviceTensor, out: DeviceTensor,
                      eps: float) -> None:
        """out = weight * rmsnorm(x) * silu(z) over the last axis (D = weight.numel)."""
        D = weight.numel
        rows = x.numel // D
        assert x.numel == z.numel == out.numel == rows * D and x.shape[-1] == D
        assert {t.dtype for t in (x, z, weight, out)} == {"f32"}
        self.ops._launch("gdn_gated_rmsnorm", (max(1, math.ceil(rows / 4)),), (128,),
                         (x.ptr, z.ptr, weight.ptr, out.ptr, rows, D, eps))

    def partial_rope(self, qkv: DeviceTensor, positions: DeviceTensor, H: int, KVH: int, hd: int, rd: int,
                     theta: float) -> None:
        """In place: RoPE on the first rd dims of each q and k head of qkv [T, (H + 2 KVH) hd]."""
        T = qkv.shape[0]
        assert qkv.shape == (T, (H + 2 * KVH) * hd) and qkv.dtype == "f32"
        assert rd % 2 == 0 and 0 < rd <= hd and positions.dtype == "i32" and positions.numel >= T
        self.ops._launch("partial_rope", (T, math.ceil((H + KVH) / 4)), (128,),
                         (qkv.ptr, positions.ptr, H, KVH, hd, rd, theta))

    def output_gate(self, attn: DeviceTensor, gate: DeviceTensor, out: DeviceTensor) -> None:
        n = attn.numel
        assert gate.numel == out.numel == n and {t.dtype for t in (attn, gate, out)} == {"f32"}
        grid = max(1, min(math.ceil(n / 256), 4 * self.ops.sm_count))
        self.ops._launch("output_gate", (grid,), (256,), (attn.ptr, gate.ptr, out.ptr, n))

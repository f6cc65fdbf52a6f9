"""The batching core's step for Qwen3.5 (Gated DeltaNet + gated full attention) on CUDA: the
launches of Qwen35Model.forward_paged over buffers the stepper owns, so that steps of decode rows
only replay as a CUDA graph per batch-size bucket (paged_step.py's BucketGraph), as a dense
model's do.

The launches are forward_paged's, one for one (the same kernels with the same arguments: every
projection the batch-invariant GEMM, the linear layers' conv and delta rule over each
sequence's span of rows with its state slot, the full layers' k/v to the paged pool), so a
row's logits are the bits forward_paged gives it, eager or replayed (tested). What a step
changes adds each sequence's span (first row, rows, state slot) to paged_step's inputs; a
bucket graph's padding rows have spans of no rows, which the conv and delta-rule kernels skip,
so no state slot but the step's own sequences' is touched. A sequence whose first chunk this
is gets its state slot zeroed before the launches (host-ordered memsets on the stream).
"""
from __future__ import annotations

from inloop.services.contract.backend import SeqSlots

from .linear_attention_ops import StateView
from .paged_step import PagedStepper, StepBuffers


class HybridBuffers(StepBuffers):
    """A step's activations for a Qwen3.5 layer stack (both layer kinds), `rows` rows."""

    def __init__(self, be, cfg, rows: int, logits: int, n_inputs: int):
        super().__init__(be, cfg, rows, logits, n_inputs)
        empty = be._empty
        d, hv = cfg.hidden_size, cfg.linear_v_heads
        vd = hv * cfg.linear_v_dim
        self.x, self.h = empty((rows, d)), empty((rows, d))
        self.res = [empty((rows, d)), empty((rows, d))]
        self.mixed, self.conv = empty((rows, cfg.conv_dim)), empty((rows, cfg.conv_dim))
        self.a, self.b, self.g, self.beta = (empty((rows, hv)) for _ in range(4))
        self.o, self.z, self.o_normed = empty((rows, hv, cfg.linear_v_dim)), empty((rows, vd)), empty((rows, vd))
        self.qkv, self.gate = empty((rows, cfg.q_size + 2 * cfg.kv_size)), empty((rows, cfg.q_size))
        self.attn, self.gated = empty((rows, cfg.q_size)), empty((rows, cfg.q_size))
        self.gu, self.act = empty((rows, 2 * cfg.intermediate_size)), empty((rows, cfg.intermediate_size))
        self.sel = empty((max(logits, 1), d))


class HybridStepper(PagedStepper):
    spans = True

    def _rope_table(self):
        return None   # partial RoPE is computed inline from theta, as the op path does

    def buffers(self, rows: int, logits: int, n_inputs: int) -> HybridBuffers:
        return HybridBuffers(self.be, self.cfg, rows, logits, n_inputs)

    def prepare(self, seqs: list[SeqSlots]) -> None:
        for s in seqs:
            if s.context == s.rows:   # its first chunk: no state carried from another sequence
                self.model.ops.zero_state(self.kv.conv, self.kv.recurrent, s.state)

    def record(self, b: HybridBuffers, at: dict, T: int, R: int, n_tiles: int) -> None:
        """Qwen35Model.forward_paged's launches over `b` (module docstring)."""
        c, m, ops, kv, la = self.cfg, self.model, self.be.ops, self.kv, self.model.ops.launch
        H, KVH, hd, eps = c.num_heads, c.num_kv_heads, c.head_dim, c.rms_norm_eps
        ids, positions, slots = b.view(at["ids"], T), b.view(at["positions"], T), b.view(at["slots"], T)
        tables, tiles = b.view(at["tables"], at["n_tables"]), b.view(at["tiles"], 3 * n_tiles, (n_tiles, 3))
        rows, n_spans = b.view(at["rows"], R), at["n_spans"]
        spans = b.view(at["spans"], 3 * n_spans, (n_spans, 3))
        x, h = b.x.rows(0, T), b.h.rows(0, T)
        res = [t.rows(0, T) for t in b.res]

        def gemm(inp, w, out):
            ops.gemm(inp, w, out, None, batch_invariant=True)

        def rows_of(t):   # the first T rows of a buffer, 2-D or [rows, heads, dim]
            if len(t.shape) == 2:
                return t.rows(0, T)
            return t.reshape(t.shape[0], t.numel // t.shape[0]).rows(0, T).reshape(T, *t.shape[1:])

        def add_norm(residual, w):   # h = rmsnorm(x + residual) * w; the sum goes to the other buffer
            nxt = res[1] if residual is res[0] else res[0]
            ops.add_rmsnorm(x, residual, w, h, nxt, eps)
            return nxt

        residual = res[0]
        ops.embedding(m.embed, ids, residual)
        for i, lw in enumerate(m.layers):
            if i == 0:
                ops.rmsnorm(residual, lw.input_norm, h, eps)
            else:
                residual = add_norm(residual, lw.input_norm)
            if hasattr(lw, "in_qkv"):   # Gated DeltaNet
                mixed, conv, a, bb, g, beta = (rows_of(t) for t in (b.mixed, b.conv, b.a, b.b, b.g, b.beta))
                o, z, o_normed = rows_of(b.o), rows_of(b.z), rows_of(b.o_normed)
                conv_view = StateView.of(kv.conv, lw.state, pooled=True)
                rec_view = StateView.of(kv.recurrent, lw.state, pooled=True)
                gemm(h, lw.in_qkv, mixed)
                gemm(h, lw.in_a, a)
                gemm(h, lw.in_b, bb)
                la.decay_beta(a, bb, lw.neg_a, lw.dt_bias, g, beta)
                la.conv(mixed, lw.conv, conv_view, spans, n_spans, at["max_rows"], conv)
                la.recurrence(conv, g, beta, rec_view, spans, n_spans, o, c.linear_k_heads, c.linear_k_dim,
                              c.linear_v_dim)
                gemm(h, lw.in_z, z)
                la.gated_rmsnorm(o, z, lw.norm, o_normed, eps)
                gemm(o_normed, lw.out, x)
            else:                       # gated full attention
                qkv, gate, attn, gated = (rows_of(t) for t in (b.qkv, b.gate, b.attn, b.gated))
                gemm(h, lw.qkv, qkv)
                ops.rope_qknorm(qkv, None, H, KVH, hd, 0.0, q_norm=lw.q_norm, k_norm=lw.k_norm, eps=eps, rope=False)
                la.partial_rope(qkv, positions, H, KVH, hd, c.rotary_dim, c.rope_theta)
                ops.kv_store(qkv, slots, kv.k, kv.v, H, KVH, hd, self.n_slots, lw.state)
                ops.attention_paged(qkv, positions, tiles, n_tiles, tables, kv.k, kv.v, attn, H, KVH, hd,
                                    self.n_slots, lw.state, kv.block_size, self.bq)
                gemm(h, lw.gate, gate)
                la.output_gate(attn, gate, gated)
                gemm(gated, lw.o, x)
            residual = add_norm(residual, lw.post_norm)
            gu, act = rows_of(b.gu), rows_of(b.act)
            gemm(h, lw.gate_up, gu)
            ops.swiglu(gu, act)
            gemm(act, lw.down, x)
        add_norm(residual, m.final_norm)
        if R:
            sel, logits = b.sel.rows(0, R), b.logits.rows(0, R)
            ops.gather_rows(h, rows, sel)
            gemm(sel, m.lm_head, logits)

"""The batching core's decode steps as CUDA graphs, one per batch-size bucket.

A step of the core whose rows are all decode rows (one new token per sequence, every row's
logits wanted) and that fits a bucket (1, 2, 4, ..., 64 rows) replays that bucket's graph
instead of launching forward_paged op by op. The graph launches exactly what the op path
launches for those rows (Transformer.forward_paged over CudaBackend: the batch-invariant GEMM
for every projection, kv_store + attention_paged per layer, the same norms and RoPE), into
buffers it owns, so a row's logits are the same bits through the graph, through the op path,
alone or in any bucket.

Everything a step changes lives in one int32 input buffer on the device, written by one copy
from a pinned host mirror before the launch:

    ids [B] | positions [B] | slots [B] | tables [B, max_blocks] | tiles [B, 3]

(tiles are constant: row r is a tile of one row whose table starts at r * max_blocks). Rows
past the step's sequences are padding: token 0 at position 0 in a scratch block of the pool
that no sequence owns (CudaBackend.alloc_paged_kv allocates it past the core's blocks), so
their writes land nowhere that is read, and their logits are never copied back.
"""
from __future__ import annotations

import math

import numpy as np
from inloop.services.contract.backend import PagedKV, SeqSlots

from .driver import PinnedBuffer, copy_dtoh, copy_htod
from .paged import paged_plan
from .step_graph import StepGraph

BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def bucket_for(rows: int) -> int | None:
    return next((b for b in BUCKETS if b >= rows), None)


class BatchDecodeGraphs:
    """The buckets' graphs for one model over one paged pool (captured on first use)."""

    def __init__(self, backend, model, kv: PagedKV, max_context: int):
        self.be, self.model, self.kv = backend, model, kv
        self.max_blocks = math.ceil(max_context / kv.block_size)
        self.scratch_block = kv.num_blocks          # allocated past the core's blocks
        assert kv.k.shape[2] >= (kv.num_blocks + 1) * kv.block_size, "the pool has no scratch block"
        self.graphs: dict[int, BucketGraph] = {}
        self.replays = 0
        self._logits_pinned: PinnedBuffer | None = None

    def host_logits(self, rows: int) -> np.ndarray:
        """A pinned [rows, V] array the step's logits are copied into (one for every bucket)."""
        V = self.model.cfg.vocab_size
        if self._logits_pinned is None:
            self._logits_pinned = PinnedBuffer(4 * BUCKETS[-1] * V)
        return self._logits_pinned.view(np.float32, rows * V).reshape(rows, V)

    def fits(self, seqs: list[SeqSlots]) -> bool:
        return (0 < len(seqs) <= BUCKETS[-1] and all(s.rows == 1 for s in seqs)
                and all(s.context <= self.max_blocks * self.kv.block_size for s in seqs))

    def run(self, ids: np.ndarray, seqs: list[SeqSlots]) -> np.ndarray:
        """Logits [len(seqs), V] of one decode row per sequence (ids: their tokens)."""
        b = bucket_for(len(seqs))
        g = self.graphs.get(b)
        if g is None:
            g = self.graphs[b] = BucketGraph(self, b)
        self.replays += 1
        return g.step(ids, seqs)


class BucketGraph(StepGraph):
    def __init__(self, owner: BatchDecodeGraphs, rows: int):
        be, model = owner.be, owner.model
        self.be, self.owner, self.model, self.cfg, self.rows = be, owner, model, model.cfg, rows
        c, B, MB = model.cfg, rows, owner.max_blocks
        self.layout = {"ids": 0, "positions": B, "slots": 2 * B, "tables": 3 * B, "tiles": 3 * B + B * MB}
        n_inputs = 3 * B + B * MB + 3 * B
        self._pinned = PinnedBuffer(4 * n_inputs)
        self.host_inputs = self._pinned.view(np.int32, n_inputs)
        self.inputs = be._empty((n_inputs,), "i32")
        bs = owner.kv.block_size
        scratch = owner.scratch_block
        self.host_inputs[:] = 0
        self._put("slots", np.full(B, scratch * bs, np.int32))
        self._put("tables", np.full(B * MB, scratch, np.int32))
        self._put("tiles", np.stack([np.arange(B), np.ones(B, np.int64), np.arange(B) * MB], 1).reshape(-1))
        empty = be._empty
        self.x = empty((B, c.hidden_size))        # each projection's output into the residual stream
        self.res = [empty((B, c.hidden_size)), empty((B, c.hidden_size))]
        self.h = empty((B, c.hidden_size))
        self.qkv = empty((B, c.qkv_size))
        self.attn = empty((B, c.q_size))
        self.gate_up = empty((B, 2 * c.intermediate_size))
        self.act = empty((B, c.intermediate_size))
        self.logits = empty((B, c.vocab_size))
        self.rope = self._rope_table()
        self.graphs = {}
        # eager once: grows the GEMM workspaces, raises smem limits, loads every kernel
        self._upload()
        self.record(False)
        be.synchronize()

    def _rope_table(self):
        """Plain RoPE is computed inline from theta, as the op path computes it; a scaled one
        reads the op path's own table (the same host-computed rows), filled for the whole
        context once here."""
        c = self.cfg
        freqs = self.model.rotary.frequencies(lambda: np.zeros(1, np.int32))
        if freqs is None:
            return None
        rows = self.owner.max_blocks * self.owner.kv.block_size
        return self.be._op_rope_table(c.head_dim, c.rope_theta, rows, np.ascontiguousarray(freqs[0], np.float32),
                                      float(freqs[1]))

    def _view(self, name: str, n: int, shape=None):
        from .tensor import DeviceTensor

        at = self.layout[name]
        return DeviceTensor(self.inputs.ptr + 4 * at, shape or (n,), "i32", self.inputs.buffer)

    def _put(self, name: str, values) -> None:
        at = self.layout[name]
        v = np.asarray(values, np.int32).reshape(-1)
        self.host_inputs[at:at + v.size] = v

    def _upload(self) -> None:
        copy_htod(self.inputs.ptr, self._pinned.ptr, self.host_inputs.nbytes, self.be.stream)

    # ---- recording ----------------------------------------------------------------------
    def record(self, sample) -> None:
        """Transformer.forward_paged's launches for B decode rows, into this graph's buffers."""
        c, m, ops, kv = self.cfg, self.model, self.be.ops, self.owner.kv
        B, H, KVH, hd, eps = self.rows, c.num_heads, c.num_kv_heads, c.head_dim, c.rms_norm_eps
        ids, positions, slots = self._view("ids", B), self._view("positions", B), self._view("slots", B)
        tables, tiles = self._view("tables", B * self.owner.max_blocks), self._view("tiles", 3 * B, (B, 3))
        n_slots = kv.k.shape[2]

        def linear(x, w, y, bias=None):
            ops.gemm(x, w, y, bias, batch_invariant=True)

        def other(r):  # the residual stream alternates between two buffers (add_rmsnorm's in and out)
            return self.res[1] if r is self.res[0] else self.res[0]

        residual = self.res[0]
        ops.embedding(m.embed, ids, residual)
        for i, lw in enumerate(m.layers):
            if i == 0:
                ops.rmsnorm(residual, lw.input_norm, self.h, eps)
            else:
                ops.add_rmsnorm(self.x, residual, lw.input_norm, self.h, other(residual), eps)
                residual = other(residual)
            linear(self.h, lw.qkv, self.qkv, lw.qkv_bias)
            if c.qk_norm:
                ops.rope_qknorm(self.qkv, None, H, KVH, hd, 0.0, q_norm=lw.q_norm, k_norm=lw.k_norm, eps=eps,
                                rope=False)
            if c.use_rope[i]:
                ops.rope_qknorm(self.qkv, positions, H, KVH, hd, c.rope_theta, rope_table=self.rope)
            ops.kv_store(self.qkv, slots, kv.k, kv.v, H, KVH, hd, n_slots, i)
            ops.attention_paged(self.qkv, positions, tiles, B, tables, kv.k, kv.v, self.attn, H, KVH, hd, n_slots,
                                i, kv.block_size, max(1, 16 // (H // KVH)))
            linear(self.attn, lw.o, self.x)
            ops.add_rmsnorm(self.x, residual, lw.post_norm, self.h, other(residual), eps)
            residual = other(residual)
            linear(self.h, lw.gate_up, self.gate_up)
            ops.swiglu(self.gate_up, self.act)
            linear(self.act, lw.down, self.x)
        ops.add_rmsnorm(self.x, residual, m.final_norm, self.h, other(residual), eps)
        linear(self.h, m.lm_head, self.logits)

    # ---- a step -------------------------------------------------------------------------
    def step(self, ids: np.ndarray, seqs: list[SeqSlots]) -> np.ndarray:
        n, B, MB, bs = len(seqs), self.rows, self.owner.max_blocks, self.owner.kv.block_size
        plan = paged_plan(seqs, bs, 1)
        tables = np.full((B, MB), self.owner.scratch_block, np.int32)
        at = 0
        p = plan.packed
        tab = p[plan.tables_at:plan.tiles_at]
        for r, s in enumerate(seqs):
            nb = -(-s.context // bs)
            tables[r, :nb] = tab[at:at + nb]
            at += nb
        pad = B - n
        self._put("ids", np.concatenate([np.asarray(ids, np.int32), np.zeros(pad, np.int32)]))
        self._put("positions", np.concatenate([p[plan.positions_at:plan.positions_at + n], np.zeros(pad, np.int32)]))
        self._put("slots", np.concatenate([p[:n], np.full(pad, self.owner.scratch_block * bs, np.int32)]))
        self._put("tables", tables)
        self.be.device.make_current()
        self._upload()
        self.graph(False).launch(self.be.stream)
        out = self.owner.host_logits(n)
        copy_dtoh(out.ctypes.data, self.logits.ptr, out.nbytes, self.be.stream)
        self.be.synchronize()
        return out.copy()

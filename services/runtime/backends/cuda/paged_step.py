"""The batching core's step on CUDA: every step through one recording of the launches, steps
of decode rows only (at most 64) replayed as a CUDA graph per batch-size bucket.

Per layer, as the prefill graphs run a prompt (prefill.py), six kernels:

    gemm_norm_bf16    qkv = W · rmsnorm(r)  (the norm from the previous residual GEMM's row sums;
                      the first layer: an rmsnorm launch, then gemm_bf16)
    rope_qknorm       q/k norm + RoPE (cos/sin from the rope table), k/v to each row's pool slot
    attention_paged   each row over its own sequence's blocks (attention.cu)
    gemm_bf16         r += Wo · attn, leaving each row's sum of squares per 64 columns
    gemm_norm_bf16    gate|up = W · rmsnorm(r)
    gemm_swiglu_bf16  r += Wdown · silu(gate) * up, leaving the row sums again

then the rows whose logits are wanted are gathered (r and its row sums) and the LM head runs
as gemm_norm_bf16 over them. A row that asks to be sampled (a free pick: the request's
temperature, top-k, top-p, seed and token index in its DecodeState) is sampled there by the
sampler kernels, a row each (sample.cu), and only its token and statistics come back; the
other wanted rows' logits come back to the host. Every GEMM is batch invariant (ops.gemm: the K split follows the
weight alone) and every other kernel works row by row, so a row's logits are the same bits
alone, in any bucket, beside any prefill chunk, eager or replayed (tested).

What a step changes is one int32 buffer written by one copy before the launches:

    ids [T] | positions [T] | slots [T] | tables | tiles [n, 3] | logit rows [R]

An eager step lays it out as paged.py does; a bucket graph of B rows has fixed places
(tables [B, max_blocks], tile r = (r, 1, r * max_blocks), logit rows 0..B-1), and its rows past
the step's sequences are padding: token 0 at position 0 in a scratch block no sequence owns
(CudaBackend.alloc_paged_kv allocates it past the core's blocks), logits never read back.
"""
from __future__ import annotations

import math

import numpy as np

from inloop.services.contract.backend import PagedKV, SeqSlots

from .decode import host_rope
from .driver import PinnedBuffer, copy_dtoh, copy_htod
from .ops import GEMM_TILE
from .paged import paged_plan
from .state import DECODE_STATE, new_state, set_sampling
from .step_graph import StepGraph
from .tensor import DeviceTensor

BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def bucket_for(rows: int) -> int | None:
    return next((b for b in BUCKETS if b >= rows), None)


class StepBuffers:
    """What every step needs beside its model's activations: the inputs buffer, the wanted
    rows' logits and a DecodeState per wanted row (the sampler's)."""

    def __init__(self, be, cfg, rows: int, logits: int, n_inputs: int):
        empty, self.rows, self.n_logits = be._empty, rows, logits
        self.inputs = empty((max(n_inputs, 1),), "i32")
        self.logits = empty((max(logits, 1), cfg.vocab_size))
        self.states = empty((max(logits, 1) * DECODE_STATE.itemsize // 4,), "i32")

    def view(self, at: int, n: int, shape=None) -> DeviceTensor:
        return DeviceTensor(self.inputs.ptr + 4 * at, shape or (n,), "i32", self.inputs.buffer)


class DenseBuffers(StepBuffers):
    """A dense model's activations for `rows` rows (the residual's row sums per 64 columns too)."""

    def __init__(self, be, cfg, rows: int, logits: int, n_inputs: int):
        super().__init__(be, cfg, rows, logits, n_inputs)
        empty = be._empty
        self.tiles_d = math.ceil(cfg.hidden_size / GEMM_TILE)
        self.r, self.h = empty((rows, cfg.hidden_size)), empty((rows, cfg.hidden_size))
        self.row_ss = empty((rows, self.tiles_d))
        self.qkv, self.attn = empty((rows, cfg.qkv_size)), empty((rows, cfg.q_size))
        self.gu = empty((rows, 2 * cfg.intermediate_size))
        self.sel_r, self.sel_ss = empty((max(logits, 1), cfg.hidden_size)), empty((max(logits, 1), self.tiles_d))


class PagedStepper:
    """Runs the core's steps for one dense model over one paged pool (module docstring)."""

    def __init__(self, backend, model, kv: PagedKV, max_context: int):
        self.be, self.model, self.cfg, self.kv = backend, model, model.cfg, kv
        c = self.cfg
        self.max_blocks = math.ceil(max_context / kv.block_size)
        self.scratch_block = kv.num_blocks          # allocated past the core's blocks
        assert kv.k.shape[2] >= (kv.num_blocks + 1) * kv.block_size, "the pool has no scratch block"
        self.n_slots = kv.k.shape[2]
        self.bq = max(1, 16 // (c.num_heads // c.num_kv_heads))
        self.rope_table = self._rope_table()
        self.graphs: dict[int, BucketGraph] = {}
        self.replays = self.eager_steps = 0
        self._logits_pinned: PinnedBuffer | None = None
        self._states_pinned: PinnedBuffer | None = None

    spans = False   # a hybrid model's stepper adds each sequence's (first row, rows, state slot)

    def _rope_table(self):
        """RoPE's cos/sin for every position a step can see (plain or scaled; dynamic RoPE never
        reaches the paged pool): the same table for eager steps and graphs."""
        c = self.cfg
        return self.be.ops.rope_table(c.head_dim, c.rope_theta, self.max_blocks * self.kv.block_size, host_rope(c))

    def buffers(self, rows: int, logits: int, n_inputs: int) -> StepBuffers:
        return DenseBuffers(self.be, self.cfg, rows, logits, n_inputs)

    def prepare(self, seqs: list[SeqSlots]) -> None:
        """Host-side work before a step's launches (a hybrid model zeroes new sequences' states)."""

    # ---- the launches --------------------------------------------------------------------
    def record(self, b: DenseBuffers, at: dict, T: int, R: int, n_tiles: int) -> None:
        """One step's launches over buffers `b`, its inputs at offsets `at` (module docstring)."""
        c, m, ops, kv = self.cfg, self.model, self.be.ops, self.kv
        H, KVH, hd, eps = c.num_heads, c.num_kv_heads, c.head_dim, c.rms_norm_eps
        ids, positions, slots = b.view(at["ids"], T), b.view(at["positions"], T), b.view(at["slots"], T)
        tables, tiles = b.view(at["tables"], at["n_tables"]), b.view(at["tiles"], 3 * n_tiles, (n_tiles, 3))
        rows = b.view(at["rows"], R)
        r, h, qkv, attn, gu = (t.rows(0, T) for t in (b.r, b.h, b.qkv, b.attn, b.gu))
        row_ss = b.row_ss.rows(0, T)

        def gemm(x, w, y, bias=None, **kw):
            ops.gemm(x, w, y, bias, batch_invariant=True, **kw)

        ops.embedding(m.embed, ids, r)
        for i, lw in enumerate(m.layers):
            if i == 0:
                ops.rmsnorm(r, lw.input_norm, h, eps)
                gemm(h, lw.qkv, qkv, lw.qkv_bias)
            else:
                gemm(r, lw.qkv, qkv, lw.qkv_bias, norm=(lw.input_norm, row_ss, eps))
            ops.rope_qknorm(qkv, positions, H, KVH, hd, c.rope_theta, q_norm=lw.q_norm, k_norm=lw.k_norm, eps=eps,
                            rope=c.use_rope[i], store_layer=i, kc=kv.k, vc=kv.v, cap=self.n_slots,
                            rope_table=self.rope_table, slots=slots)
            ops.attention_paged(qkv, positions, tiles, n_tiles, tables, kv.k, kv.v, attn, H, KVH, hd, self.n_slots,
                                i, kv.block_size, self.bq)
            gemm(attn, lw.o, r, mode="residual", row_ss=row_ss)
            gemm(r, lw.gate_up, gu, norm=(lw.post_norm, row_ss, eps))
            gemm(gu, lw.down, r, mode="residual", swiglu_input=True, row_ss=row_ss)
        if R:
            sel_r, sel_ss, logits = b.sel_r.rows(0, R), b.sel_ss.rows(0, R), b.logits.rows(0, R)
            ops.gather_rows(r, rows, sel_r)
            ops.gather_rows(row_ss, rows, sel_ss)
            gemm(sel_r, m.lm_head, logits, norm=(m.final_norm, sel_ss, eps))

    # ---- a step --------------------------------------------------------------------------
    def fits_graph(self, seqs: list[SeqSlots], logit_rows: np.ndarray) -> bool:
        return (0 < len(seqs) <= BUCKETS[-1] and all(s.rows == 1 for s in seqs) and len(logit_rows) == len(seqs)
                and all(s.context <= self.max_blocks * self.kv.block_size for s in seqs))

    samples = True   # the core may ask for rows sampled here (run's `samplings`)

    def run(self, ids: np.ndarray, seqs: list[SeqSlots], logit_rows: np.ndarray, samplings=None):
        """The step's wanted rows (logit_rows: rows of the step, in order): their logits [R, V]
        on the host; or, with `samplings` (a DeviceSampling or None per wanted row), a list of
        each row's result: the sampled (token, logprob, entropy, margin) or its logits [V]."""
        self.be.device.make_current()
        logit_rows = np.asarray(logit_rows, np.int32)
        self.prepare(seqs)
        if self.fits_graph(seqs, logit_rows):
            b = bucket_for(len(seqs))
            g = self.graphs.get(b)
            if g is None:
                g = self.graphs[b] = BucketGraph(self, b)
            self.replays += 1
            return g.step(ids, seqs, samplings)
        self.eager_steps += 1
        return self._eager(ids, seqs, logit_rows, samplings)

    def _eager(self, ids: np.ndarray, seqs: list[SeqSlots], logit_rows: np.ndarray, samplings=None):
        T, R = len(ids), len(logit_rows)
        plan = paged_plan(seqs, self.kv.block_size, self.bq)
        firsts = np.cumsum([0] + [s.rows for s in seqs[:-1]])
        spans = np.asarray([(f, s.rows, s.state) for f, s in zip(firsts, seqs)]
                           if self.spans else np.zeros((0, 3)), np.int32).reshape(-1)
        packed = np.concatenate([np.asarray(ids, np.int32), plan.packed, logit_rows, spans]).astype(np.int32)
        at = {"ids": 0, "slots": T, "positions": T + plan.positions_at, "tables": T + plan.tables_at,
              "n_tables": max(plan.n_tables, 1), "tiles": T + plan.tiles_at, "rows": T + plan.packed.size,
              "spans": T + plan.packed.size + R, "n_spans": len(seqs), "max_rows": max(s.rows for s in seqs)}
        b = self.buffers(T, R, packed.size)
        copy_htod(b.inputs.ptr, packed.ctypes.data, packed.nbytes, self.be.stream)  # pageable: copied at once
        self.record(b, at, T, R, plan.n_tiles)
        if samplings is not None and any(x is not None for x in samplings):
            host = sampling_states(samplings)
            copy_htod(b.states.ptr, host.ctypes.data, host.nbytes, self.be.stream)  # pageable: copied at once
            self.be.ops.sample(b.logits.rows(0, R), b.states)
        return self.read(b, R, samplings)

    def read(self, b: StepBuffers, n: int, samplings=None):
        """The first n wanted rows' results (see run), through pinned buffers (every step's)."""
        V = self.cfg.vocab_size
        if self._logits_pinned is None or self._logits_pinned.nbytes < 4 * n * V:
            self.be.synchronize()  # nothing may still be copying into the old ones
            self._logits_pinned = PinnedBuffer(4 * max(n, BUCKETS[-1]) * V)
            self._states_pinned = PinnedBuffer(DECODE_STATE.itemsize * max(n, BUCKETS[-1]))
        sampled = [x is not None for x in samplings] if samplings is not None else [False] * n
        logits = self._logits_pinned.view(np.float32, n * V).reshape(n, V)
        if n and not all(sampled):
            copy_dtoh(logits.ctypes.data, b.logits.ptr, logits.nbytes, self.be.stream)
        states = self._states_pinned.view(DECODE_STATE, n)
        if any(sampled):
            copy_dtoh(states.ctypes.data, b.states.ptr, states.nbytes, self.be.stream)
        self.be.synchronize()
        if samplings is None:
            return logits.copy()
        return [(int(states[i]["token"]), float(states[i]["logprob"]), float(states[i]["entropy"]),
                 float(states[i]["margin"])) if sampled[i] else logits[i].copy() for i in range(n)]


def sampling_states(samplings) -> np.ndarray:
    """A DecodeState per wanted row with its sampling settings (greedy where None: sampled but
    not read)."""
    states = np.zeros(len(samplings), DECODE_STATE)
    for i, sp in enumerate(samplings):
        states[i] = new_state()[0]
        if sp is not None:
            set_sampling(states[i:i + 1], sp)
    return states


class BucketGraph(StepGraph):
    """The step of B decode rows as one CUDA graph over fixed buffers (module docstring)."""

    def __init__(self, owner: PagedStepper, rows: int):
        self.be, self.owner, self.rows = owner.be, owner, rows
        B, MB = rows, owner.max_blocks
        self.at = {"ids": 0, "positions": B, "slots": 2 * B, "tables": 3 * B, "n_tables": B * MB,
                   "tiles": 3 * B + B * MB, "rows": 6 * B + B * MB, "spans": 7 * B + B * MB, "n_spans": B,
                   "max_rows": 1}
        n_inputs = (10 if owner.spans else 7) * B + B * MB
        self.bufs = owner.buffers(B, B, n_inputs)
        self._pinned = PinnedBuffer(4 * n_inputs)
        self.host_inputs = self._pinned.view(np.int32, n_inputs)
        self.host_inputs[:] = 0
        self._put("tiles", np.stack([np.arange(B), np.ones(B, np.int64), np.arange(B) * MB], 1))
        self._put("rows", np.arange(B))
        if owner.spans:   # row r is its sequence's one row; a padding row's span has none
            self._put("spans", np.stack([np.arange(B), np.zeros(B, np.int64), np.zeros(B, np.int64)], 1))
        self._pad(0)
        self._pinned_states = PinnedBuffer(DECODE_STATE.itemsize * B)
        self.host_states = self._pinned_states.view(DECODE_STATE, B)
        self.host_states[:] = new_state()[0]
        self.graphs = {}
        # eager once, both variants: grows the GEMM and sampler workspaces, raises smem
        # limits, loads every kernel
        self._upload()
        copy_htod(self.bufs.states.ptr, self._pinned_states.ptr, self.host_states.nbytes, self.be.stream)
        self.record(False)
        self.record(True)
        self.be.synchronize()

    def _put(self, name: str, values) -> None:
        v = np.asarray(values, np.int32).reshape(-1)
        self.host_inputs[self.at[name]:self.at[name] + v.size] = v

    def _pad(self, n: int) -> None:
        """Rows n.. of the bucket: token 0 at position 0, stored in and attending over the scratch block."""
        B, MB, bs, scratch = self.rows, self.owner.max_blocks, self.owner.kv.block_size, self.owner.scratch_block
        for name, value in (("ids", 0), ("positions", 0), ("slots", scratch * bs)):
            self.host_inputs[self.at[name] + n:self.at[name] + B] = value
        self.host_inputs[self.at["tables"] + n * MB:self.at["tables"] + B * MB] = scratch

    def _upload(self) -> None:
        copy_htod(self.bufs.inputs.ptr, self._pinned.ptr, self.host_inputs.nbytes, self.be.stream)

    def record(self, sample) -> None:
        """The step's launches; with `sample`, the sampler over every row after the LM head."""
        self.owner.record(self.bufs, self.at, self.rows, self.rows, self.rows)
        if sample:
            self.be.ops.sample(self.bufs.logits, self.bufs.states)

    def step(self, ids: np.ndarray, seqs: list[SeqSlots], samplings=None):
        n, B, MB, bs = len(seqs), self.rows, self.owner.max_blocks, self.owner.kv.block_size
        tables = self.host_inputs[self.at["tables"]:self.at["tables"] + n * MB].reshape(n, MB)
        for r, s in enumerate(seqs):
            nb = -(-s.context // bs)
            tables[r, :nb] = np.asarray(s.slots[::bs][:nb], np.int64) // bs
        self._put("ids", ids)
        self._put("positions", [s.context - 1 for s in seqs])
        self._put("slots", [s.slots[s.context - 1] for s in seqs])
        if self.owner.spans:   # padding spans keep no rows (their slot is left alone)
            spans = self.host_inputs[self.at["spans"]:self.at["spans"] + 3 * B].reshape(B, 3)
            spans[:, 1] = 0
            spans[:n, 1] = 1
            spans[:n, 2] = [s.state for s in seqs]
            spans[n:, 2] = seqs[0].state
        self._pad(n)
        self._upload()
        sample = samplings is not None and any(x is not None for x in samplings)
        if sample:
            self.host_states[:n] = sampling_states(samplings)
            copy_htod(self.bufs.states.ptr, self._pinned_states.ptr, self.host_states.nbytes, self.be.stream)
        self.graph(sample).launch(self.be.stream)
        return self.owner.read(self.bufs, n, samplings)

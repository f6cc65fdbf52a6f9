"""Prefill as CUDA graphs, one per bucket of prompt lengths, and the runner the engine uses.

Eager prefill pays ~15 us of Python per op (about 300 ops for a 30-layer model); a graph pays
one launch. A prompt is padded to its bucket: padded rows run token 0 at the positions past
the prompt, so they only touch KV rows at or beyond the sequence's length, which the cache
contract treats as stale (the next steps overwrite them; kernels skip rows past capacity).
The logits come from the last valid row (select_row reads the count from the DecodeState);
a third variant (ALL_ROWS, buckets up to ALL_ROWS_MAX) keeps every row's logits, for forced
text whose per-token uncertainty was asked for.
Prompts longer than the largest bucket run in chunks, each attending to the earlier ones
through the cache. Per layer: GEMM qkv taking rmsnorm of its input, RoPE (+ q/k norm) with
the k/v store, attention, GEMM o (+= residual), GEMM gate|up taking rmsnorm of its input, GEMM
down taking SwiGLU of its input (+= residual): six kernels. The residual GEMMs leave each row's
sum of squares per 64 columns in `row_ss`, from which the next GEMM normalizes its input as it
stages it; the first layer's input norm (after the embedding) is an rmsnorm launch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inloop.services.contract.backend import KVCache
from inloop.services.contract.step_runner import DeviceSampling

from .decode import DecodeGraph
from .driver import Event, PinnedBuffer, copy_dtoh, copy_htod, memset_d8
from .module import Graph
from .ops import GEMM_TILE
from .rope_rows import HostRope
from .state import DECODE_STATE, new_state, set_sampling
from .step_graph import StepGraph
from .tensor import DeviceTensor

BUCKETS = (16, 32, 64, 128, 256, 512)
STATE_BYTES = DECODE_STATE.itemsize
ALL_ROWS = "all_rows"  # the graph variant that keeps every row's logits
ALL_ROWS_MAX = 64      # its largest chunk: [64, vocab] fp32 logits (12.6 MB for SmolLM2)


class PrefillGraph(StepGraph):
    def __init__(self, backend, model, bucket: int, rope_table, call_rope: HostRope | None = None):
        self.be, self.model, self.cfg, self.bucket = backend, model, model.cfg, bucket
        self.rope_table = rope_table  # (table, rows) of Ops.rope_table, covering every position it sees
        # dynamic RoPE: the table is the runner's own, and each call writes its rows first (rope_rows.py)
        self.call_rope = call_rope
        c, empty = self.cfg, backend._empty
        # one device buffer [DecodeState | ids | positions], filled by one copy per prefill
        self.io = empty((STATE_BYTES // 4 + 2 * bucket,), "i32")
        self.state = DeviceTensor(self.io.ptr, (STATE_BYTES // 4,), "i32", self.io.buffer)
        self.ids = DeviceTensor(self.io.ptr + STATE_BYTES, (bucket,), "i32", self.io.buffer)
        self.positions = DeviceTensor(self.io.ptr + STATE_BYTES + 4 * bucket, (bucket,), "i32", self.io.buffer)
        self.r, self.h = empty((bucket, c.hidden_size)), empty((bucket, c.hidden_size))
        self.row_ss = empty((bucket * math.ceil(c.hidden_size / GEMM_TILE),))  # see the module docstring
        self.qkv, self.attn = empty((bucket, c.qkv_size)), empty((bucket, c.q_size))
        self.gu = empty((bucket, 2 * c.intermediate_size))
        self.last, self.logits = empty((1, c.hidden_size)), empty((1, c.vocab_size))
        self._pinned = PinnedBuffer(STATE_BYTES + 8 * bucket + 4 * c.vocab_size)
        self.host = self._pinned.view(DECODE_STATE, 1)
        self.host[:] = new_state()
        self._host_ids = self._pinned.view(np.int32, 2 * bucket, STATE_BYTES)
        self._host_logits = self._pinned.view(np.float32, c.vocab_size, STATE_BYTES + 8 * bucket)
        self.graphs: dict[bool | str, Graph] = {}
        self.pdl_used = False
        self.all_logits: DeviceTensor | None = None  # [bucket, vocab], made with the ALL_ROWS variant
        self._host_all: PinnedBuffer | None = None
        self._warm_up(False, True)

    def _warm_up(self, *variants) -> None:
        """Run variants eagerly on a scratch cache: grows workspaces, loads kernels, before any capture."""
        c = self.cfg
        scratch = self.be.alloc_kv(c.num_layers, c.num_kv_heads, self.bucket, c.head_dim)
        self._stage([0], 0, scratch)
        for v in variants:
            self.record(v)
        self.be.synchronize()
        self.be.free_kv(scratch)

    def record(self, sample: bool | str) -> None:
        """One prefill: sample=False ends with the last row's logits, True also samples from
        them, ALL_ROWS ends with every row's logits (final norm + LM head as one GEMM)."""
        c, m, ops = self.cfg, self.model, self.be.ops
        H, KVH, hd, eps, st = c.num_heads, c.num_kv_heads, c.head_dim, c.rms_norm_eps, self.state
        ops.embedding(m.embed, self.ids, self.r)
        for i, lw in enumerate(m.layers):
            if i == 0:
                ops.rmsnorm(self.r, lw.input_norm, self.h, eps)
                ops.gemm(self.h, lw.qkv, self.qkv, lw.qkv_bias)
            else:  # normalized from the previous down projection's row sums
                ops.gemm(self.r, lw.qkv, self.qkv, lw.qkv_bias, norm=(lw.input_norm, self.row_ss, eps))
            ops.rope_qknorm(self.qkv, self.positions, H, KVH, hd, c.rope_theta, q_norm=lw.q_norm, k_norm=lw.k_norm,
                            eps=eps, rope=c.use_rope[i], store_layer=i, state=st,  # + k/v rows to the cache
                            rope_table=self.rope_table)
            ops.attention_prefill(self.qkv, self.positions, None, None, self.attn, H, KVH, hd, 0, i, state=st)
            ops.gemm(self.attn, lw.o, self.r, mode="residual", row_ss=self.row_ss)
            ops.gemm(self.r, lw.gate_up, self.gu, norm=(lw.post_norm, self.row_ss, eps))
            ops.gemm(self.gu, lw.down, self.r, mode="residual", swiglu_input=True,  # silu(gate) * up as it loads
                     row_ss=self.row_ss)
        if sample == ALL_ROWS:  # the final norm from the last down projection's row sums, as above
            ops.gemm(self.r, m.lm_head, self.all_logits, norm=(m.final_norm, self.row_ss, eps))
            return
        ops.select_row(self.r, self.last, st)
        ops.gemv(m.lm_head, self.last, self.logits, norm_w=m.final_norm, eps=eps)
        if sample:
            ops.sample(self.logits, st)

    def _stage(self, ids, start: int, cache: KVCache) -> None:
        n = len(ids)
        if not 1 <= n <= self.bucket:
            raise ValueError(f"{n} tokens do not fit the {self.bucket}-token prefill graph")
        if start + n > cache.capacity:
            raise ValueError(f"positions {start}..{start + n - 1} exceed the KV cache capacity {cache.capacity}")
        if start + n > self.rope_table[1]:
            raise ValueError(f"positions {start}..{start + n - 1} exceed this prefill graph's "
                             f"{self.rope_table[1]} positions")
        self.be.device.make_current()
        if self.call_rope is not None:  # this call's frequencies (its length) for its rows
            self.be.ops.write_rope_rows(self.rope_table[0], start, self.call_rope.call_rows(start, n))
        h = self.host
        h["k_cache"], h["v_cache"], h["capacity"] = cache.k.ptr, cache.v.ptr, cache.capacity
        h["rows"], h["pos"], h["flags"] = n, start + n, 0
        self._host_ids[:n] = ids
        self._host_ids[n:self.bucket] = 0
        self._host_ids[self.bucket:] = np.arange(start, start + self.bucket, dtype=np.int32)
        copy_htod(self.io.ptr, self._pinned.ptr, STATE_BYTES + 8 * self.bucket, self.be.stream)

    def logits_for(self, ids, start: int, cache: KVCache, use_graph: bool = True) -> np.ndarray:
        """Run ids at positions start.. into cache; the last token's logits [V]."""
        self._stage(ids, start, cache)
        self._run(False, use_graph)
        return self._read_logits()

    def all_logits_for(self, ids, start: int, cache: KVCache) -> np.ndarray:
        """Run ids at positions start.. into cache; every row's logits [len(ids), V]."""
        n, V = len(ids), self.cfg.vocab_size
        if self.bucket > ALL_ROWS_MAX:
            raise ValueError(f"the {self.bucket}-token prefill graph does not keep every row (max {ALL_ROWS_MAX})")
        if self.all_logits is None:
            self.all_logits = self.be._empty((self.bucket, V))
            self._host_all = PinnedBuffer(4 * self.bucket * V)
            self._warm_up(ALL_ROWS)
        self._stage(ids, start, cache)
        self._run(ALL_ROWS)
        copy_dtoh(self._host_all.ptr, self.all_logits.ptr, 4 * n * V, self.be.stream)
        self.be.synchronize()
        return self._host_all.view(np.float32, n * V).reshape(n, V).copy()

    def sample_for(self, ids, start: int, cache: KVCache, sampling: DeviceSampling) -> tuple[int, float, float, float]:
        """Run ids and sample the next token on the GPU: (token, logprob, entropy, margin)."""
        set_sampling(self.host, sampling)
        self._stage(ids, start, cache)
        self._run(True)
        return self._read_result()


@dataclass
class Lookahead:
    """A decode step already running on the device: it feeds `token` (the last result, filled
    in once read) at `pos` and samples with RNG index `step`, into ring slot `slot`."""

    key: tuple        # the cache (pointers, capacity) and the sampling settings
    pushes: int       # the decode graph's state pushes when it was launched (a later push makes it stale)
    pos: int
    step: int
    slot: int
    event: Event
    token: int | None = None


class GraphRunner:
    """Prefill and decode through graphs for one model: what an engine calls per request.

    prefill_logits / decode_logits return host logits (host sampling, grammar masks);
    prefill_sample / decode_sample sample on the GPU and return (token, logprob, entropy,
    margin). The caller keeps `cache.length` as with the op interface."""

    def __init__(self, backend, model, max_capacity: int):
        self.be, self.model = backend, model
        self.decode = DecodeGraph(backend, model, max_capacity)
        self.prefills: dict[int, PrefillGraph] = {}
        # Dynamic RoPE rotates a prefill call's rows by the call's length, not as decode steps
        # do: the prefill graphs get a table of their own, whose rows each call writes first.
        hr = self.decode.host_rope
        self._call_rope = hr if hr is not None and hr.dynamic else None
        self._prefill_rope = self.decode.rope_table
        if self._call_rope is not None:
            rows = self.decode.rope_table[1]
            table = backend._empty((rows * model.cfg.head_dim,))
            memset_d8(table.ptr, 0, table.nbytes, backend.stream)  # finite rows for a padded row to read
            self._prefill_rope = (table, rows)
        self._ahead: Lookahead | None = None  # see decode_sample

    def prefill_graph(self, n: int) -> PrefillGraph:
        bucket = next((b for b in BUCKETS if b >= n), BUCKETS[-1])
        if bucket not in self.prefills:
            self.prefills[bucket] = PrefillGraph(self.be, self.model, bucket, self._prefill_rope, self._call_rope)
        return self.prefills[bucket]

    def _chunks(self, ids, start: int, step: int | None = None):
        ids = list(ids)
        step = step or BUCKETS[-1]  # read at call time (tests shrink BUCKETS)
        for i in range(0, len(ids), step):
            yield ids[i:i + step], start + i, i + step >= len(ids)

    def prefill_logits(self, ids, start: int, cache: KVCache) -> np.ndarray:
        self._ahead = None
        logits = None
        for chunk, pos, _ in self._chunks(ids, start):
            logits = self.prefill_graph(len(chunk)).logits_for(chunk, pos, cache)
        return logits

    def prefill_all_logits(self, ids, start: int, cache: KVCache) -> np.ndarray:
        """Every row's logits [len(ids), V], in chunks of up to ALL_ROWS_MAX tokens."""
        self._ahead = None
        rows = [self.prefill_graph(len(chunk)).all_logits_for(chunk, pos, cache)
                for chunk, pos, _ in self._chunks(ids, start, min(ALL_ROWS_MAX, BUCKETS[-1]))]
        return np.concatenate(rows)

    def prefill_sample(self, ids, start: int, cache: KVCache,
                       sampling: DeviceSampling = DeviceSampling()) -> tuple[int, float, float, float]:
        self._ahead = None
        for chunk, pos, last in self._chunks(ids, start):
            g = self.prefill_graph(len(chunk))
            if last:
                return g.sample_for(chunk, pos, cache, sampling)
            g.logits_for(chunk, pos, cache)
        raise ValueError("prefill needs at least one token")

    def decode_logits(self, token: int, pos: int, cache: KVCache) -> np.ndarray:
        self._ahead = None
        self.decode.bind(cache)
        return self.decode.step_logits(token, pos)

    def decode_sample(self, token: int, pos: int, cache: KVCache,
                      sampling: DeviceSampling = DeviceSampling()) -> tuple[int, float, float, float]:
        """Feed `token` at `pos`, sample the next one on the GPU.

        With `sampling.lookahead`, the step after this one is launched before this one's result is
        read: it feeds the token this step samples (the device state chains them) at pos + 1.
        If the next call asks for exactly that step (same cache and settings, the token this
        call returned, pos + 1, step + 1) it only waits for it, so the host's work between
        tokens overlaps the GPU's. Anything else drops it unread: all it did was write the
        returned token's K/V at pos + 1, which is what feeding that token writes anyway, and
        advance the device state, which the next push overwrites (one stream orders it all)."""
        dg = self.decode
        self.be.device.make_current()
        step = sampling.step
        key = (cache.k.ptr, cache.v.ptr, cache.capacity, float(sampling.temperature), int(sampling.top_k),
               float(sampling.top_p), int(sampling.seed))
        ahead, self._ahead = self._ahead, None
        wanted = (key, dg.pushes, token, pos, step)
        if ahead is not None and (ahead.key, ahead.pushes, ahead.token, ahead.pos, ahead.step) == wanted:
            slot, event = ahead.slot, ahead.event
        else:
            dg.bind(cache)
            dg.set_sampling(sampling)
            dg.prime(token, pos)
            slot = 0
            event = dg.launch_into(slot)
        if sampling.lookahead and pos + 1 < cache.capacity:
            nxt = 1 - slot
            self._ahead = Lookahead(key, dg.pushes, pos + 1, step + 1, nxt, dg.launch_into(nxt))
        event.synchronize()
        out = dg.slot_result(slot)
        if self._ahead is not None:
            self._ahead.token = out[0]
        return out

"""The numpy reference backend: float32 everywhere, written for clarity first.

Every other backend is checked against this one op by op. Shapes follow base.py:
activations [T, N], linear weights [N, K], the KV cache [layers, kv_heads, capacity, head_dim].
"""
from __future__ import annotations

import numpy as np

from inloop.services.contract.backend import Backend, KVCache, PagedKV, SeqSlots

SMALL_BATCH_ROWS = 64  # rows up to which linear() multiplies as W @ x^T


def rope_cos_sin(positions: np.ndarray, head_dim: int, theta: float, inv_freq: np.ndarray | None = None,
                 attention_scaling: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [T, head_dim/2], computed in float32 the way HF does (so parity is tight).

    theta**e is taken in float64 and rounded once to float32: numpy's float32 power is off by
    an ulp for about a quarter of the frequencies, and at position 1000 one ulp of inv_freq
    moves sin/cos by ~1e-4 (the CUDA kernels round the same way). A scaled RoPE passes its
    own `inv_freq` (model/rope.py) and, for yarn, the factor HF multiplies cos/sin by."""
    if inv_freq is None:
        exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
        power = (np.float64(np.float32(theta)) ** exponents.astype(np.float64)).astype(np.float32)
        inv_freq = (np.float32(1.0) / power).astype(np.float32)
    angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]
    if attention_scaling == 1.0:
        return np.cos(angles), np.sin(angles)
    return np.cos(angles) * np.float32(attention_scaling), np.sin(angles) * np.float32(attention_scaling)


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> None:
    """In place on x [T, heads, head_dim]: rotate-half RoPE."""
    half = x.shape[-1] // 2
    x1 = x[..., :half].copy()
    x2 = x[..., half:]
    c, s = cos[:, None, :], sin[:, None, :]
    x[..., :half] = x1 * c - x2 * s
    x[..., half:] = x2 * c + x1 * s


MAX_VIEW_RUNS = 4  # up to this many stretches of consecutive slots are read as views, more are gathered


def _attend(q: np.ndarray, keys: np.ndarray, values: np.ndarray, positions: np.ndarray, head_dim: int) -> np.ndarray:
    """q [T, KV, G, hd] at `positions` [T]; keys/values [KV, L, hd] of positions 0..L-1.
    Causal GQA softmax attention -> [T, KV * G * hd]."""
    t, num_kv, group, _ = q.shape
    length = keys.shape[1]
    qh = q.transpose(1, 2, 0, 3)                 # [KV, G, T, hd]
    scores = qh @ keys[:, None].swapaxes(-1, -2)  # [KV, G, T, L]
    scores *= np.float32(1.0 / np.sqrt(head_dim))
    if t > 1 or positions[0] != length - 1:
        masked = np.arange(length)[None, :] > positions[:, None]  # [T, L]: key after the query
        scores[..., masked] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    out = probs @ values[:, None]                # [KV, G, T, hd]
    return np.ascontiguousarray(out.transpose(2, 0, 1, 3)).reshape(t, num_kv * group * head_dim)


def _attend_parts(q: np.ndarray, parts: list[tuple[np.ndarray, np.ndarray]], positions: np.ndarray,
                  head_dim: int) -> np.ndarray:
    """_attend over keys/values given as consecutive pieces [KV, n_i, hd] (views of a pool):
    the scores of the pieces side by side, one softmax, the values' products summed."""
    t, num_kv, group, _ = q.shape
    qh = q.transpose(1, 2, 0, 3)                                          # [KV, G, T, hd]
    scores = np.concatenate([qh @ keys[:, None].swapaxes(-1, -2) for keys, _ in parts], axis=-1)
    scores *= np.float32(1.0 / np.sqrt(head_dim))
    length = scores.shape[-1]
    if t > 1 or positions[0] != length - 1:
        scores[..., np.arange(length)[None, :] > positions[:, None]] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(axis=-1, keepdims=True)
    out, at = None, 0
    for _, values in parts:
        n = values.shape[1]
        piece = probs[..., at:at + n] @ values[:, None]                   # [KV, G, T, hd]
        out = piece if out is None else out + piece
        at += n
    return np.ascontiguousarray(out.transpose(2, 0, 1, 3)).reshape(t, num_kv * group * head_dim)


class NumpyBackend(Backend):
    name = "cpu"
    compute_dtype = "float32"
    paged_kv = True

    # ---- memory -------------------------------------------------------------------
    def upload(self, array: np.ndarray, name: str = "") -> np.ndarray:
        if np.issubdtype(array.dtype, np.floating):
            return np.ascontiguousarray(array, dtype=np.float32)
        return np.ascontiguousarray(array)

    def to_host(self, t: np.ndarray) -> np.ndarray:
        return np.array(t, copy=True)

    def ids(self, values) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=np.int32)

    def alloc_kv(self, num_layers: int, num_kv_heads: int, capacity: int, head_dim: int) -> KVCache:
        shape = (num_layers, num_kv_heads, capacity, head_dim)
        return KVCache(np.zeros(shape, np.float32), np.zeros(shape, np.float32), capacity)

    def alloc_paged_kv(self, num_layers, num_kv_heads, num_blocks, block_size, head_dim) -> PagedKV:
        # np.zeros maps untouched pages lazily: a 2 GiB pool costs what its written blocks hold
        shape = (num_layers, num_kv_heads, num_blocks * block_size, head_dim)
        return PagedKV(np.zeros(shape, np.float32), np.zeros(shape, np.float32), num_blocks, block_size)

    def copy_kv(self, src: KVCache, dst: KVCache, length: int) -> None:
        dst.k[:, :, :length] = src.k[:, :, :length]
        dst.v[:, :, :length] = src.v[:, :, :length]

    # ---- ops ----------------------------------------------------------------------
    def embedding(self, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return table[ids]

    def rmsnorm(self, x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
        variance = np.mean(x * x, axis=-1, keepdims=True)
        return (x / np.sqrt(variance + np.float32(eps))) * weight

    def add_rmsnorm(self, x, residual, weight, eps):
        s = x + residual
        return self.rmsnorm(s, weight, eps), s

    def linear(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        # A few rows (a batched decode step): OpenBLAS multiplies W [out, in] by x^T 2-3x faster
        # than x by W^T at 2-64 rows on these CPUs (measured: 0.21 vs 0.56 ms for 2 rows of a
        # 3072x576 weight); one row stays a GEMV, many rows (a prompt) the usual GEMM.
        if 1 < x.shape[0] <= SMALL_BATCH_ROWS:
            y = np.ascontiguousarray((weight @ x.T).T)
        else:
            y = x @ weight.T
        if bias is not None:
            y += bias
        return y

    def qk_norm(self, qkv, q_weight, k_weight, eps, num_heads, num_kv_heads, head_dim) -> None:
        t = qkv.shape[0]
        q_end, k_end = num_heads * head_dim, (num_heads + num_kv_heads) * head_dim
        q = qkv[:, :q_end].reshape(t, num_heads, head_dim)
        k = qkv[:, q_end:k_end].reshape(t, num_kv_heads, head_dim)
        qkv[:, :q_end] = self.rmsnorm(q, q_weight, eps).reshape(t, q_end)
        qkv[:, q_end:k_end] = self.rmsnorm(k, k_weight, eps).reshape(t, k_end - q_end)

    def rope(self, qkv, positions, num_heads, num_kv_heads, head_dim, theta, inv_freq=None,
             attention_scaling=1.0) -> None:
        t = qkv.shape[0]
        cos, sin = rope_cos_sin(positions, head_dim, theta, inv_freq, attention_scaling)
        qk = qkv[:, : (num_heads + num_kv_heads) * head_dim].reshape(t, num_heads + num_kv_heads, head_dim)
        _rotate(qk, cos, sin)  # a view of qkv, so this writes through

    def attention(self, qkv, cache: KVCache, layer, positions, num_heads, num_kv_heads, head_dim):
        t = qkv.shape[0]
        group = num_heads // num_kv_heads
        q_end, k_end = num_heads * head_dim, (num_heads + num_kv_heads) * head_dim
        q = qkv[:, :q_end].reshape(t, num_kv_heads, group, head_dim)
        k = qkv[:, q_end:k_end].reshape(t, num_kv_heads, head_dim)
        v = qkv[:, k_end:].reshape(t, num_kv_heads, head_dim)
        cache.k[layer][:, positions] = k.transpose(1, 0, 2)
        cache.v[layer][:, positions] = v.transpose(1, 0, 2)
        length = int(positions.max()) + 1
        return _attend(q, cache.k[layer][:, :length], cache.v[layer][:, :length], positions, head_dim)

    def paged_attention(self, qkv, kv: PagedKV, layer, seqs: list[SeqSlots], num_heads, num_kv_heads, head_dim):
        t = qkv.shape[0]
        group = num_heads // num_kv_heads
        q_end, k_end = num_heads * head_dim, (num_heads + num_kv_heads) * head_dim
        q = qkv[:, :q_end].reshape(t, num_kv_heads, group, head_dim)
        k = qkv[:, q_end:k_end].reshape(t, num_kv_heads, head_dim).transpose(1, 0, 2)  # [KV, T, hd]
        v = qkv[:, k_end:].reshape(t, num_kv_heads, head_dim).transpose(1, 0, 2)
        pool_k, pool_v = kv.k[layer], kv.v[layer]    # [KV, slots, hd]
        out = np.empty((t, q_end), np.float32)
        row = 0
        for s in seqs:
            end, first = row + s.rows, s.context - s.rows
            positions = np.arange(first, s.context)
            if len(s.runs) == 1:  # consecutive slots: store into and read a view of the pool
                lo = s.runs[0][0]
                pool_k[:, lo + first:lo + s.context] = k[:, row:end]
                pool_v[:, lo + first:lo + s.context] = v[:, row:end]
                out[row:end] = _attend(q[row:end], pool_k[:, lo:lo + s.context], pool_v[:, lo:lo + s.context],
                                       positions, head_dim)
            else:
                new = s.slots[first:]
                pool_k[:, new] = k[:, row:end]
                pool_v[:, new] = v[:, row:end]
                if len(s.runs) <= MAX_VIEW_RUNS:   # a few stretches (a prefix hit): views, no copy
                    parts = [(pool_k[:, a:a + n], pool_v[:, a:a + n]) for a, n in s.runs]
                    out[row:end] = _attend_parts(q[row:end], parts, positions, head_dim)
                else:                              # scattered blocks: gather them
                    out[row:end] = _attend(q[row:end], pool_k[:, s.slots], pool_v[:, s.slots], positions, head_dim)
            row = end
        return out

    def swiglu(self, gate_up: np.ndarray) -> np.ndarray:
        f = gate_up.shape[-1] // 2
        gate, up = gate_up[:, :f], gate_up[:, f:]
        with np.errstate(over="ignore"):  # exp(-gate) overflows to inf for very negative gate: silu -> 0
            return gate / (np.float32(1.0) + np.exp(-gate)) * up

    def last_row(self, x: np.ndarray) -> np.ndarray:
        return x[-1:]

    def take_rows(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return x[rows]

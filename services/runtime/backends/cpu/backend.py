"""The numpy reference backend: float32 everywhere, written for clarity first.

Every other backend is checked against this one op by op. Shapes follow base.py:
activations [T, N], linear weights [N, K], the KV cache [layers, kv_heads, capacity, head_dim].
"""
from __future__ import annotations

import numpy as np

from inloop.services.contract.backend import Backend, KVCache


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


class NumpyBackend(Backend):
    name = "cpu"
    compute_dtype = "float32"

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
        keys = cache.k[layer][:, :length]            # [KV, L, hd]
        values = cache.v[layer][:, :length]          # [KV, L, hd]
        qh = q.transpose(1, 2, 0, 3)                 # [KV, G, T, hd]
        scores = qh @ keys[:, None].swapaxes(-1, -2)  # [KV, G, T, L]
        scores *= np.float32(1.0 / np.sqrt(head_dim))
        masked = np.arange(length)[None, :] > positions[:, None]  # [T, L]: key after the query
        scores[..., masked] = -np.inf
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        out = probs @ values[:, None]                # [KV, G, T, hd]
        return np.ascontiguousarray(out.transpose(2, 0, 1, 3)).reshape(t, q_end)

    def swiglu(self, gate_up: np.ndarray) -> np.ndarray:
        f = gate_up.shape[-1] // 2
        gate, up = gate_up[:, :f], gate_up[:, f:]
        with np.errstate(over="ignore"):  # exp(-gate) overflows to inf for very negative gate: silu -> 0
            return gate / (np.float32(1.0) + np.exp(-gate)) * up

    def last_row(self, x: np.ndarray) -> np.ndarray:
        return x[-1:]

"""numpy ops of hybrid (linear + full attention) models: Qwen3.5's Gated DeltaNet layers and
its gated, partially rotary full-attention layers. float32 throughout, written for clarity.

Each op mirrors a function of HF's modeling_qwen3_5.py (named in its docstring). Shapes:
activations [T, N] of one sequence; the per-sequence state of a linear-attention layer is
fixed-size, whatever the length:

    conv state       [conv_dim, kernel - 1]   the last kernel-1 inputs of the causal conv1d
    recurrent state  [v_heads, k_dim, v_dim]  the delta rule's fast-weight matrix per head

Both are updated in place, so a prompt fed in chunks leaves the same state as fed at once.
"""
from __future__ import annotations

import numpy as np


def silu(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) -> inf for very negative x: silu -> 0
        return x / (np.float32(1.0) + np.exp(-x))


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-x))


def softplus(x: np.ndarray) -> np.ndarray:
    """torch's F.softplus (beta 1, threshold 20): x itself above the threshold."""
    with np.errstate(over="ignore"):
        return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20)))).astype(np.float32)


def l2norm(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """HF's l2norm (FLA's convention): x * rsqrt(sum(x^2) + eps) over the last axis."""
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + np.float32(eps))


class NumpyLinearAttention:
    """The ops a hybrid model needs beyond the Backend interface, on numpy arrays."""

    # ---- state --------------------------------------------------------------------------
    def alloc_state(self, num_layers: int, conv_dim: int, kernel: int, v_heads: int,
                    k_dim: int, v_dim: int, num_seqs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Zeroed conv and recurrent states for `num_layers` linear-attention layers: one
        sequence's [L, ...], or with num_seqs a pool of slots [num_seqs, L, ...] (np.zeros:
        the OS commits a slot's pages when it is first written)."""
        lead = (num_layers,) if num_seqs is None else (num_seqs, num_layers)
        return (np.zeros((*lead, conv_dim, kernel - 1), np.float32),
                np.zeros((*lead, v_heads, k_dim, v_dim), np.float32))

    def zero_state(self, conv: np.ndarray, recurrent: np.ndarray, slot: int) -> None:
        """Reset one slot of a state pool (a sequence starting at token 0)."""
        conv[slot] = 0
        recurrent[slot] = 0

    def sequence_state(self, conv: np.ndarray, recurrent: np.ndarray, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Layer `layer` of one sequence's states [L, ...], as a pool of one slot (views)."""
        return conv[layer][None], recurrent[layer][None]

    def pool_state(self, conv: np.ndarray, recurrent: np.ndarray, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Layer `layer` of every slot of a pool [S, L, ...] (views)."""
        return conv[:, layer], recurrent[:, layer]

    def param(self, array: np.ndarray) -> np.ndarray:
        """A linear layer's small parameter (conv taps, -exp(A_log), dt_bias, norm) as the ops read it."""
        return np.ascontiguousarray(array, np.float32)

    # ---- Gated DeltaNet -----------------------------------------------------------------
    def causal_conv1d(self, x: np.ndarray, state: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """silu(depthwise causal conv1d(x)) [T, C], as HF's causal_conv1d_fn/_update.

        x [T, C]; weight [C, K] (HF's conv1d.weight [C, 1, K] squeezed); state [C, K-1] holds
        the inputs before x (zeros at the start) and is advanced to the last K-1 inputs."""
        t, kernel = x.shape[0], weight.shape[1]
        full = np.concatenate([state.T, x], axis=0)               # [K-1+T, C]
        out = full[0:t] * weight[:, 0]
        for j in range(1, kernel):                                 # weight[:, K-1] meets the current input
            out = out + full[j:j + t] * weight[:, j]
        state[:] = full[t:].T
        return silu(out)

    def decay_and_beta(self, a: np.ndarray, b: np.ndarray, neg_a: np.ndarray,
                       dt_bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The per-token, per-head log decay g = -exp(A_log) * softplus(a + dt_bias) and the
        write strength beta = sigmoid(b); a, b [T, v_heads]; neg_a = -exp(A_log)."""
        return neg_a * softplus(a + dt_bias), sigmoid(b)

    def gated_delta_rule(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray,
                         beta: np.ndarray, state: np.ndarray) -> np.ndarray:
        """HF's torch_recurrent_gated_delta_rule with use_qk_l2norm_in_kernel, token by token:

            S = S * exp(g_t);  S += k_t (beta_t (v_t - k_t S));  o_t = (q_t / sqrt(dk)) S

        q, k [T, k_heads, dk]; v [T, v_heads, dv]; g, beta [T, v_heads]; state [v_heads, dk, dv]
        (updated in place). Each q/k head serves v_heads/k_heads consecutive value heads.
        Returns [T, v_heads, dv]."""
        t, v_heads = k.shape[0], v.shape[1]
        q, k = _heads_normed(q, k, v_heads)
        decay = np.exp(g)                                          # [T, Hv]
        out = np.empty_like(v)
        s = state
        for i in range(t):
            s *= decay[i][:, None, None]
            kv_mem = np.einsum("hk,hkv->hv", k[i], s)              # what S already predicts for k_t
            delta = (v[i] - kv_mem) * beta[i][:, None]
            s += k[i][:, :, None] * delta[:, None, :]
            out[i] = np.einsum("hk,hkv->hv", q[i], s)
        return out

    def gated_delta_rows(self, mixed: np.ndarray, g: np.ndarray, beta: np.ndarray, conv_weight: np.ndarray,
                         conv_pool: np.ndarray, recurrent_pool: np.ndarray, spans: list[tuple[int, int, int]],
                         k_heads: int, k_dim: int, v_dim: int) -> np.ndarray:
        """The conv and the delta rule of a step's rows, several sequences one after another.

        mixed [T, conv_dim] (the in_proj_qkv output); g, beta [T, v_heads]; spans: (first row,
        rows, state slot) of each sequence; conv_pool [S, conv_dim, K-1] and recurrent_pool
        [S, v_heads, dk, dv] hold every slot's state (views of the pool: updated in place).
        The sequences with one row (decode) run as one batch of the recurrence, on views of
        each stretch of consecutive slots (a recurrent state is large: 16 heads of 128 x 128 are
        1 MB a layer, so it is updated where it lies, not gathered and scattered); each longer
        one runs the chunked form on its rows, from its slot's state. Returns [T, v_heads, dv]."""
        t, v_heads, kd = mixed.shape[0], g.shape[1], k_heads * k_dim

        def split(x):
            n = x.shape[0]
            return (x[:, :kd].reshape(n, k_heads, k_dim), x[:, kd:2 * kd].reshape(n, k_heads, k_dim),
                    x[:, 2 * kd:].reshape(n, v_heads, v_dim))

        out = np.empty((t, v_heads, v_dim), np.float32)
        singles = [(row, slot) for row, n, slot in spans if n == 1]
        if singles:
            singles.sort(key=lambda rs: rs[1])                              # by slot
            rows, slots = (np.array(x, np.int64) for x in zip(*singles))
            conv = conv_pool[slots]                                         # small: gathered
            q, k, v = split(self.conv_step(mixed[rows], conv, conv_weight))
            conv_pool[slots] = conv
            cuts = np.flatnonzero(np.diff(slots) != 1) + 1
            for a, b in zip([0, *cuts], [*cuts, len(slots)]):               # runs of consecutive slots
                first = int(slots[a])
                out[rows[a:b]] = self.gated_delta_step(q[a:b], k[a:b], v[a:b], g[rows[a:b]], beta[rows[a:b]],
                                                       recurrent_pool[first:first + b - a])
        for row, n, slot in spans:
            if n > 1:
                end = row + n
                q, k, v = split(self.causal_conv1d(mixed[row:end], conv_pool[slot], conv_weight))
                out[row:end] = self.chunked_gated_delta_rule(q, k, v, g[row:end], beta[row:end], recurrent_pool[slot])
        return out

    def conv_step(self, x: np.ndarray, state: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """causal_conv1d for one token of each of n sequences: x [n, C], state [n, C, K-1]
        (advanced in place), the same sums in the same order. Returns silu(conv) [n, C]."""
        full = np.concatenate([state, x[:, :, None]], axis=2)            # [n, C, K]
        out = full[..., 0] * weight[:, 0]
        for j in range(1, weight.shape[1]):
            out = out + full[..., j] * weight[:, j]
        state[:] = full[..., 1:]
        return silu(out)

    def gated_delta_step(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray,
                         beta: np.ndarray, state: np.ndarray) -> np.ndarray:
        """gated_delta_rule's step for one token of each of n sequences: q, k [n, k_heads, dk],
        v [n, v_heads, dv], g, beta [n, v_heads], state [n, v_heads, dk, dv] (updated in place).
        The same rule, with the state read once before it is written (three passes over it,
        not five): with d = exp(g), S' = d S + k (x) delta where delta = beta (v - d k.S), and
        q.S' = d q.S + (q.k) delta."""
        q, k = _heads_normed(q, k, v.shape[1])
        d = np.exp(g)[:, :, None]                                          # [n, Hv, 1]
        read = np.matmul(np.stack([q, k], axis=2), state)                # [n, Hv, 2, dv]: q.S, k.S
        q_s, k_s = read[:, :, 0], read[:, :, 1]
        delta = (v - d * k_s) * beta[:, :, None]
        out = d * q_s + np.sum(q * k, axis=-1, keepdims=True) * delta
        state *= d[..., None]
        state += k[:, :, :, None] * delta[:, :, None, :]
        return out

    def chunked_gated_delta_rule(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray,
                                 beta: np.ndarray, state: np.ndarray, chunk: int = 64) -> np.ndarray:
        """The same rule computed as HF's torch_chunk_gated_delta_rule does for a prompt (its
        prefill path), step for step so that the rounding follows it: per chunk of 64 tokens
        a unit-lower-triangular system (the UT transform) folds the chunk's delta updates into
        matmuls, then one sequential pass over the chunks carries the state. Same arguments
        and result as gated_delta_rule; state updated in place."""
        t, v_heads = k.shape[0], v.shape[1]
        q, k = _heads_normed(q, k, v_heads)
        pad = (chunk - t % chunk) % chunk
        n = (t + pad) // chunk

        def heads_first(x):  # [T, H, d] -> [H, chunks, chunk, d], zero-padded
            x = np.pad(np.ascontiguousarray(x.transpose(1, 0, 2)), ((0, 0), (0, pad), (0, 0)))
            return x.reshape(x.shape[0], n, chunk, x.shape[-1])

        q, k, v = heads_first(q), heads_first(k), heads_first(v)
        beta = np.pad(beta.T, ((0, 0), (0, pad))).reshape(v_heads, n, chunk)
        decay = np.pad(g.T, ((0, 0), (0, pad))).reshape(v_heads, n, chunk)
        v_beta, k_beta = v * beta[..., None], k * beta[..., None]
        cum = np.cumsum(decay, axis=-1)                                    # log decay since the chunk start
        upper = np.triu(np.ones((chunk, chunk), bool), 1)
        with np.errstate(over="ignore"):
            pairwise = np.exp(np.where(upper, -np.inf, cum[..., :, None] - cum[..., None, :]))
        ut = (k_beta @ k.swapaxes(-1, -2)) * pairwise                    # [H, N, C, C]
        intra = (q @ k.swapaxes(-1, -2)) * pairwise
        new_values = _solve_unit_lower(ut, v_beta)
        k_cumdecay = _solve_unit_lower(ut, k_beta * np.exp(cum)[..., None])
        q = q * np.exp(cum)[..., None]
        k = k * np.exp(cum[..., -1:] - cum)[..., None]
        chunk_decay = np.exp(cum[..., -1])[..., None, None]               # [H, N, 1, 1]
        out = np.empty_like(new_values)
        s = state.copy()
        for i in range(n):
            v_new = new_values[:, i] - k_cumdecay[:, i] @ s
            out[:, i] = q[:, i] @ s + intra[:, i] @ v_new
            s = s * chunk_decay[:, i] + k[:, i].swapaxes(-1, -2) @ v_new
        state[:] = s
        return np.ascontiguousarray(out.reshape(v_heads, n * chunk, -1)[:, :t].transpose(1, 0, 2))

    def gated_rmsnorm(self, x: np.ndarray, gate: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
        """HF's Qwen3_5RMSNormGated: rmsnorm(x) * weight * silu(gate) over the last axis."""
        variance = np.mean(x * x, axis=-1, keepdims=True)
        return weight * (x / np.sqrt(variance + np.float32(eps))) * silu(gate)

    # ---- gated full attention -------------------------------------------------------------
    def partial_rope(self, qkv: np.ndarray, positions: np.ndarray, num_heads: int, num_kv_heads: int,
                     head_dim: int, rotary_dim: int, theta: float) -> None:
        """In place: rotate-half RoPE on the first `rotary_dim` dims of each q and k head of
        qkv [T, (H + 2 KV) * hd]; the rest pass (HF's apply_rotary_pos_emb with partial cos/sin).
        inv_freq = 1 / theta^(2i/rotary_dim), theta**e in float64 rounded once to float32, as
        the dense backend's RoPE does to match torch's float32 power."""
        t = qkv.shape[0]
        exponents = np.arange(0, rotary_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(rotary_dim)
        power = (np.float64(np.float32(theta)) ** exponents.astype(np.float64)).astype(np.float32)
        inv_freq = (np.float32(1.0) / power).astype(np.float32)
        angles = positions.astype(np.float32)[:, None] * inv_freq[None, :]
        cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
        qk = qkv[:, : (num_heads + num_kv_heads) * head_dim].reshape(t, num_heads + num_kv_heads, head_dim)
        half = rotary_dim // 2
        x1 = qk[..., :half].copy()
        x2 = qk[..., half:rotary_dim].copy()
        qk[..., :half] = x1 * cos - x2 * sin
        qk[..., half:rotary_dim] = x2 * cos + x1 * sin

    def output_gate(self, attn: np.ndarray, gate: np.ndarray) -> np.ndarray:
        """attn * sigmoid(gate): the full-attention layers' per-channel output gate."""
        return attn * sigmoid(gate)


def _solve_unit_lower(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x with (I + strictly_lower(a)) x = b, by forward substitution over the last-but-one axis
    (torch.linalg.solve_triangular(..., upper=False, unitriangular=True))."""
    x = np.empty_like(b)
    for i in range(a.shape[-1]):
        x[..., i, :] = b[..., i, :] - np.einsum("...j,...jd->...d", a[..., i, :i], x[..., :i, :])
    return x


def _heads_normed(q: np.ndarray, k: np.ndarray, v_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """q, k [T, k_heads, dk] repeated to the value heads, L2-normed, q scaled by dk^-1/2 (as
    HF's torch delta-rule functions prepare them)."""
    k_heads, dk = k.shape[1], k.shape[2]
    if k_heads != v_heads:
        q = np.repeat(q, v_heads // k_heads, axis=1)
        k = np.repeat(k, v_heads // k_heads, axis=1)
    return l2norm(q) * np.float32(dk ** -0.5), l2norm(k)

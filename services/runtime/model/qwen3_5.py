"""Qwen3.5's forward pass (HF modeling_qwen3_5.py, text stack): Gated DeltaNet layers and
gated full-attention layers, written against the backend interface plus the linear-attention
ops (backends/cpu/linear_attention.py on numpy, backends/cuda/linear_attention.py on CUDA).

Per layer (norms are HF's zero-centred RMSNorm, x / rms(x) * (1 + w): the 1 is added at load):

    h = rmsnorm(x)
    linear_attention (Gated DeltaNet):            full_attention (gated):
      qkv = silu(causal_conv1d(h @ Wqkv^T))         q, gate = h @ Wq^T (per head: q | gate)
      z = h @ Wz^T; b, a = h @ Wb^T, h @ Wa^T       k, v = h @ Wk^T, h @ Wv^T
      g = -exp(A_log) softplus(a + dt_bias)         q, k = rmsnorm per head; partial RoPE
      o = delta_rule(l2n(q), l2n(k), v, g, sig(b))  o = attention(q, k, v) * sigmoid(gate)
      o = rmsnorm(o) * w * silu(z)  (per head)
    x = x + o @ Wo^T
    x = x + mlp(rmsnorm(x))                         # SwiGLU, as the dense models

Instead of a KV cache for every layer a sequence has keys/values for the full-attention
layers only, and the linear layers' fixed-size conv and recurrent state. That state
describes exactly the tokens fed so far, so it can grow but never be cut back to a shorter
prefix. Two forms:
  * `forward` with a HybridCache: one sequence (`rewindable` is False: the engine starts such
    a cache afresh), the reference the parity tests hold against HF;
  * `forward_paged` with a HybridPagedKV: the batching core's step over several sequences,
    keys/values in the block pool (as the dense models'), each sequence's state in its slot
    of a state pool (SeqSlots.state). A chunk that starts at position 0 starts from a zeroed
    state; any other continues the state its slot holds (the core runs a sequence's chunks
    in order, each exactly where the last one stopped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import structlog

from inloop.services.contract.backend import Backend, KVCache, PagedKV, SeqSlots, Tensor
from inloop.services.runtime.model.config import ModelLoadError
from inloop.services.runtime.model.qwen3_5_config import LINEAR, Qwen35Config
from inloop.services.runtime.model.weights import Weights

log = structlog.get_logger("model.qwen3_5")


@dataclass
class HybridCache(KVCache):
    """k, v [len(full_layers), kv_heads, capacity, head_dim]; conv [len(linear_layers),
    conv_dim, kernel-1]; recurrent [len(linear_layers), v_heads, k_dim, v_dim]."""

    conv: Tensor = None
    recurrent: Tensor = None
    rewindable: ClassVar[bool] = False

    def carry_state(self, dst: "KVCache") -> None:
        dst.conv, dst.recurrent = self.conv, self.recurrent


@dataclass
class HybridPagedKV(PagedKV):
    """k, v: the full-attention layers' block pool [len(full_layers), kv_heads, slots, head_dim];
    conv [state_slots, len(linear_layers), conv_dim, kernel-1], recurrent [state_slots,
    len(linear_layers), v_heads, k_dim, v_dim]: one linear-attention state per running
    (or pinned) sequence."""

    conv: Tensor = None
    recurrent: Tensor = None


@dataclass
class LinearLayer:
    input_norm: Tensor
    in_qkv: Tensor      # [conv_dim, D]
    in_z: Tensor        # [Hv * dv, D]
    in_b: Tensor        # [Hv, D]
    in_a: Tensor        # [Hv, D]
    conv: Tensor        # [conv_dim, K]
    neg_a: Tensor       # [Hv]: -exp(A_log)
    dt_bias: Tensor     # [Hv]
    norm: Tensor        # [dv] (the gated norm's plain weight)
    out: Tensor         # [D, Hv * dv]
    post_norm: Tensor
    gate_up: Tensor
    down: Tensor
    state: int          # index into the cache's conv/recurrent arrays


@dataclass
class FullLayer:
    input_norm: Tensor
    qkv: Tensor         # [q_size + 2 kv_size, D]: q | k | v
    gate: Tensor        # [q_size, D]: the output gate's rows of q_proj
    q_norm: Tensor      # [hd], 1 + w
    k_norm: Tensor
    o: Tensor           # [D, q_size]
    post_norm: Tensor
    gate_up: Tensor
    down: Tensor
    state: int          # index into the cache's k/v arrays


# A linear layer's small parameters: kept as the ops read them (float32, the host's values),
# not as the backend stores projection weights (bf16 on CUDA).
LINEAR_PARAMS = ("conv", "neg_a", "dt_bias", "norm")


def linear_attention_ops(backend: Backend):
    """The backend's linear-attention ops: numpy's, or the CUDA kernels'."""
    if backend.name == "cpu":
        from inloop.services.runtime.backends.cpu.linear_attention import NumpyLinearAttention
        return NumpyLinearAttention()
    if backend.name == "cuda":
        from inloop.services.runtime.backends.cuda.linear_attention import CudaLinearAttention
        return CudaLinearAttention(backend)
    raise ModelLoadError(f"Qwen3.5 (Gated DeltaNet layers) has no {backend.name} kernels: use --backend cpu or cuda")


def text_prefix(weights: Weights) -> str:
    """model.language_model. in the multimodal checkpoints, model. in text-only ones."""
    return "model.language_model." if "model.language_model.embed_tokens.weight" in weights else "model."


class Qwen35Model:
    # a hybrid cache cannot be cut back to a shared prefix: no automatic prefix caching
    prefix_cacheable = False

    def __init__(self, cfg: Qwen35Config, backend: Backend, weights: Weights):
        self.cfg = cfg
        self.backend = backend
        self.ops = linear_attention_ops(backend)
        self.prefix = text_prefix(weights)
        self._log_skipped(weights)
        up, p, d = backend.upload, self.prefix, cfg.hidden_size
        self.embed = up(weights.float32(p + "embed_tokens.weight", (cfg.vocab_size, d)), "embed")
        self.layers: list[LinearLayer | FullLayer] = []
        for i, kind in enumerate(cfg.layer_types):
            host = self._host_linear(weights, i) if kind == LINEAR else self._host_full(weights, i)
            layer_cls, states = (LinearLayer, cfg.linear_layers) if kind == LINEAR else (FullLayer, cfg.full_layers)
            self.layers.append(layer_cls(state=states.index(i), **{
                k: self.ops.param(v) if kind == LINEAR and k in LINEAR_PARAMS else up(v, f"layers.{i}.{k}")
                for k, v in host.items()}))
        self.final_norm = up(self._norm(weights, p + "norm.weight"), "norm")
        if cfg.tie_word_embeddings or "lm_head.weight" not in weights:
            self.lm_head = self.embed
        else:
            self.lm_head = up(weights.float32("lm_head.weight", (cfg.vocab_size, d)), "lm_head")
        self.num_parameters = sum(int(np.prod(weights.raw(n).shape)) for n in weights.names()
                                  if n.startswith(p) or n == "lm_head.weight")

    # ---- loading --------------------------------------------------------------------------
    def _log_skipped(self, weights: Weights) -> None:
        """The vision tower (and the multi-token-prediction head) are not run: say so."""
        skipped = [n for n in weights.names() if not n.startswith(self.prefix) and n != "lm_head.weight"]
        if skipped:
            groups = sorted({n.split(".")[1] if n.startswith("model.") else n.split(".")[0] for n in skipped})
            log.info("weights_skipped", tensors=len(skipped), parts=groups,
                     reason="text generation runs the language model only (vision tower, mtp head unused)")

    @staticmethod
    def _norm(w: Weights, name: str, n: int | None = None) -> np.ndarray:
        """A zero-centred RMSNorm weight as the plain one: 1 + w (float32, as HF adds it)."""
        return np.float32(1.0) + w.float32(name, None if n is None else (n,))

    def _mlp(self, w: Weights, p: str) -> dict:
        d, f = self.cfg.hidden_size, self.cfg.intermediate_size
        return {
            "input_norm": self._norm(w, p + "input_layernorm.weight", d),
            "post_norm": self._norm(w, p + "post_attention_layernorm.weight", d),
            "gate_up": np.concatenate([w.float32(p + "mlp.gate_proj.weight", (f, d)),
                                       w.float32(p + "mlp.up_proj.weight", (f, d))]),
            "down": w.float32(p + "mlp.down_proj.weight", (d, f)),
        }

    def _host_linear(self, w: Weights, i: int) -> dict:
        c = self.cfg
        p, d = f"{self.prefix}layers.{i}.", c.hidden_size
        a, hv, vd = p + "linear_attn.", c.linear_v_heads, c.linear_v_heads * c.linear_v_dim
        return {
            **self._mlp(w, p),
            "in_qkv": w.float32(a + "in_proj_qkv.weight", (c.conv_dim, d)),
            "in_z": w.float32(a + "in_proj_z.weight", (vd, d)),
            "in_b": w.float32(a + "in_proj_b.weight", (hv, d)),
            "in_a": w.float32(a + "in_proj_a.weight", (hv, d)),
            "conv": w.float32(a + "conv1d.weight", (c.conv_dim, 1, c.conv_kernel)).reshape(c.conv_dim, c.conv_kernel),
            "neg_a": -np.exp(w.float32(a + "A_log", (hv,))),
            "dt_bias": w.float32(a + "dt_bias", (hv,)),
            "norm": w.float32(a + "norm.weight", (c.linear_v_dim,)),
            "out": w.float32(a + "out_proj.weight", (d, vd)),
        }

    def _host_full(self, w: Weights, i: int) -> dict:
        c = self.cfg
        p, d, hd = f"{self.prefix}layers.{i}.", c.hidden_size, c.head_dim
        a = p + "self_attn."
        # q_proj rows are per head [query (hd) | gate (hd)]: split them into q and gate blocks
        q_gate = w.float32(a + "q_proj.weight", (2 * c.q_size, d)).reshape(c.num_heads, 2, hd, d)
        return {
            **self._mlp(w, p),
            "qkv": np.concatenate([q_gate[:, 0].reshape(c.q_size, d),
                                   w.float32(a + "k_proj.weight", (c.kv_size, d)),
                                   w.float32(a + "v_proj.weight", (c.kv_size, d))]),
            "gate": np.ascontiguousarray(q_gate[:, 1].reshape(c.q_size, d)),
            "q_norm": self._norm(w, a + "q_norm.weight", hd),
            "k_norm": self._norm(w, a + "k_norm.weight", hd),
            "o": w.float32(a + "o_proj.weight", (d, c.q_size)),
        }

    # ---- the per-sequence state -------------------------------------------------------------
    def new_cache(self, capacity: int) -> HybridCache:
        c = self.cfg
        kv = self.backend.alloc_kv(len(c.full_layers), c.num_kv_heads, capacity, c.head_dim)
        conv, recurrent = self.ops.alloc_state(len(c.linear_layers), c.conv_dim, c.conv_kernel,
                                               c.linear_v_heads, c.linear_k_dim, c.linear_v_dim)
        return HybridCache(kv.k, kv.v, capacity, 0, conv, recurrent)

    # ---- the batching core's pools ----------------------------------------------------------
    @property
    def kv_layers(self) -> int:
        """Layers with keys and values in the block pool (the full-attention ones)."""
        return len(self.cfg.full_layers)

    def state_bytes(self) -> int:
        """One sequence's linear-attention state (conv and recurrent, float32)."""
        c = self.cfg
        return 4 * len(c.linear_layers) * (c.conv_dim * (c.conv_kernel - 1)
                                           + c.linear_v_heads * c.linear_k_dim * c.linear_v_dim)

    def alloc_paged_kv(self, num_blocks: int, block_size: int, state_slots: int) -> HybridPagedKV:
        c = self.cfg
        kv = self.backend.alloc_paged_kv(self.kv_layers, c.num_kv_heads, num_blocks, block_size, c.head_dim)
        conv, recurrent = self.ops.alloc_state(len(c.linear_layers), c.conv_dim, c.conv_kernel, c.linear_v_heads,
                                               c.linear_k_dim, c.linear_v_dim, num_seqs=state_slots)
        return HybridPagedKV(kv.k, kv.v, num_blocks, block_size, conv, recurrent)

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, ids: Tensor, positions: Tensor, cache: HybridCache, all_logits: bool = False) -> Tensor:
        """ids, positions: int32 [T] (positions continue cache.length). Logits [T, V] or [1, V].
        The linear layers' state advances by these T tokens: feed each token once, in order."""
        spans = [(0, ids.shape[0], 0)]   # one sequence, its state the only slot
        h = self._hidden(ids, positions,
                         lambda lw: (*self.ops.sequence_state(cache.conv, cache.recurrent, lw.state), spans),
                         lambda qkv, lw: self.backend.attention(qkv, cache, lw.state, positions, self.cfg.num_heads,
                                                                self.cfg.num_kv_heads, self.cfg.head_dim))
        if not all_logits:
            h = self.backend.last_row(h)
        return self.backend.linear(h, self.lm_head)

    def forward_paged(self, ids: Tensor, positions: Tensor, kv: HybridPagedKV, seqs: list[SeqSlots],
                      logit_rows: Tensor) -> Tensor:
        """One batched step of the core (Transformer.forward_paged's signature): the rows of
        several sequences, one after another; the full-attention layers attend over each
        one's blocks, the linear layers advance each one's state slot. Logits [R, V]."""
        c, b = self.cfg, self.backend
        spans, row = [], 0
        for s in seqs:
            if s.state < 0:
                raise ValueError("a hybrid model's sequence needs a state slot (SeqSlots.state)")
            if s.context == s.rows:   # its first chunk: no state carried from another sequence
                self.ops.zero_state(kv.conv, kv.recurrent, s.state)
            spans.append((row, s.rows, s.state))
            row += s.rows
        h = self._hidden(ids, positions, lambda lw: (*self.ops.pool_state(kv.conv, kv.recurrent, lw.state), spans),
                         lambda qkv, lw: b.paged_attention(qkv, kv, lw.state, seqs, c.num_heads,
                                                           c.num_kv_heads, c.head_dim), b.batched_linear)
        return b.batched_linear(b.take_rows(h, logit_rows), self.lm_head)

    def _hidden(self, ids: Tensor, positions: Tensor, states, attention, linear=None) -> Tensor:
        """The final-normed hidden states [T, D]. states(layer): that linear layer's conv and
        recurrent state pools [S, ...] and the (first row, rows, slot) of each sequence of the
        rows; attention(qkv, layer) stores k, v and attends; `linear` the projections' op (the
        backend's, or its batched_linear in a core step: batch invariance)."""
        c, b = self.cfg, self.backend
        linear = linear or b.linear
        x = b.embedding(self.embed, ids)                                   # [T, D]
        residual = None
        for lw in self.layers:
            if residual is None:
                h, residual = b.rmsnorm(x, lw.input_norm, c.rms_norm_eps), x
            else:
                h, residual = b.add_rmsnorm(x, residual, lw.input_norm, c.rms_norm_eps)
            if isinstance(lw, LinearLayer):
                x = self._delta_net(h, lw, states(lw), linear)
            else:
                x = self._gated_attention(h, lw, positions, attention, linear)
            h, residual = b.add_rmsnorm(x, residual, lw.post_norm, c.rms_norm_eps)
            x = linear(b.swiglu(linear(h, lw.gate_up)), lw.down)
        h, _ = b.add_rmsnorm(x, residual, self.final_norm, c.rms_norm_eps)
        return h

    def _delta_net(self, h: Tensor, lw: LinearLayer, states: tuple[Tensor, Tensor, list], linear) -> Tensor:
        """The projections over all rows at once; the conv and the delta rule per sequence, on
        its rows with its state (updated in place): one token the recurrence, a prompt the
        chunked form, as HF's decode and prefill do (the decode rows of several sequences in
        one call)."""
        c, b, ops = self.cfg, self.backend, self.ops
        t = h.shape[0]
        conv_pool, recurrent_pool, spans = states
        mixed = linear(h, lw.in_qkv)                                                   # [T, conv_dim]
        g, beta = ops.decay_and_beta(linear(h, lw.in_a), linear(h, lw.in_b), lw.neg_a, lw.dt_bias)
        o = ops.gated_delta_rows(mixed, g, beta, lw.conv, conv_pool, recurrent_pool, spans,
                                 c.linear_k_heads, c.linear_k_dim, c.linear_v_dim)        # [T, Hv, dv]
        z = linear(h, lw.in_z).reshape(t, c.linear_v_heads, c.linear_v_dim)
        o = ops.gated_rmsnorm(o, z, lw.norm, c.rms_norm_eps).reshape(t, c.linear_v_heads * c.linear_v_dim)
        return linear(o, lw.out)

    def _gated_attention(self, h: Tensor, lw: FullLayer, positions: Tensor, attention, linear) -> Tensor:
        c, b = self.cfg, self.backend
        qkv = linear(h, lw.qkv)                                                       # [T, q + 2 kv]
        b.qk_norm(qkv, lw.q_norm, lw.k_norm, c.rms_norm_eps, c.num_heads, c.num_kv_heads, c.head_dim)
        self.ops.partial_rope(qkv, positions, c.num_heads, c.num_kv_heads, c.head_dim, c.rotary_dim, c.rope_theta)
        attn = attention(qkv, lw)
        return linear(self.ops.output_gate(attn, linear(h, lw.gate)), lw.o)

"""The decoder forward pass, written once against the backend interface.

llama / qwen2 / qwen3 / smollm3 differ only in the q/k/v bias (qwen2), the per-head q/k RMSNorm
(qwen3; both handled by optional weights) and layers without RoPE (smollm3). Per layer:

    h = rmsnorm(x)                 # input_layernorm (fused with the residual add)
    qkv = h @ Wqkv^T (+ b)         # [T, (H + 2 KV) * hd], fused at load time
    qk_norm(qkv); rope(qkv)        # in place
    o = attention(qkv, cache)      # stores k, v; [T, H * hd]
    x = x + o @ Wo^T
    h = rmsnorm(x)                 # post_attention_layernorm (fused add)
    x = x + swiglu(h @ Wgu^T) @ Wdown^T
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from inloop.services.contract.backend import Backend, KVCache, PagedKV, SeqSlots, Tensor
from inloop.services.runtime.model.config import ModelConfig
from inloop.services.runtime.model.rope import Rotary
from inloop.services.runtime.model.weights import Weights


@dataclass
class LayerWeights:
    input_norm: Tensor
    qkv: Tensor              # [qkv_size, D]
    qkv_bias: Tensor | None  # [qkv_size] (qwen2)
    q_norm: Tensor | None    # [hd] (qwen3)
    k_norm: Tensor | None
    o: Tensor                # [D, q_size]
    post_norm: Tensor
    gate_up: Tensor          # [2F, D]
    down: Tensor             # [D, F]


def _host_layer(cfg: ModelConfig, w: Weights, i: int) -> dict[str, np.ndarray | None]:
    """One layer's tensors as float32 host arrays, with q|k|v and gate|up fused."""
    p = f"model.layers.{i}."
    d, hd = cfg.hidden_size, cfg.head_dim
    q = w.float32(p + "self_attn.q_proj.weight", (cfg.q_size, d))
    k = w.float32(p + "self_attn.k_proj.weight", (cfg.kv_size, d))
    v = w.float32(p + "self_attn.v_proj.weight", (cfg.kv_size, d))
    bias = None
    if cfg.attention_bias:
        bias = np.concatenate([
            w.float32(p + "self_attn.q_proj.bias", (cfg.q_size,)),
            w.float32(p + "self_attn.k_proj.bias", (cfg.kv_size,)),
            w.float32(p + "self_attn.v_proj.bias", (cfg.kv_size,)),
        ])
    return {
        "input_norm": w.float32(p + "input_layernorm.weight", (d,)),
        "qkv": np.concatenate([q, k, v]),
        "qkv_bias": bias,
        "q_norm": w.float32(p + "self_attn.q_norm.weight", (hd,)) if cfg.qk_norm else None,
        "k_norm": w.float32(p + "self_attn.k_norm.weight", (hd,)) if cfg.qk_norm else None,
        "o": w.float32(p + "self_attn.o_proj.weight", (d, cfg.q_size)),
        "post_norm": w.float32(p + "post_attention_layernorm.weight", (d,)),
        "gate_up": np.concatenate([
            w.float32(p + "mlp.gate_proj.weight", (cfg.intermediate_size, d)),
            w.float32(p + "mlp.up_proj.weight", (cfg.intermediate_size, d)),
        ]),
        "down": w.float32(p + "mlp.down_proj.weight", (d, cfg.intermediate_size)),
    }


class Transformer:
    def __init__(self, cfg: ModelConfig, backend: Backend, weights: Weights):
        self.cfg = cfg
        self.backend = backend
        up = backend.upload
        self.embed = up(weights.float32("model.embed_tokens.weight", (cfg.vocab_size, cfg.hidden_size)), "embed")
        self.layers: list[LayerWeights] = []
        for i in range(cfg.num_layers):
            host = _host_layer(cfg, weights, i)
            self.layers.append(LayerWeights(**{
                k: (None if v is None else up(v, f"layers.{i}.{k}")) for k, v in host.items()
            }))
        self.final_norm = up(weights.float32("model.norm.weight", (cfg.hidden_size,)), "norm")
        if cfg.tie_word_embeddings or "lm_head.weight" not in weights:
            self.lm_head = self.embed
        else:
            self.lm_head = up(weights.float32("lm_head.weight", (cfg.vocab_size, cfg.hidden_size)), "lm_head")
        self.num_parameters = sum(int(np.prod(weights.raw(n).shape)) for n in weights.names())

    @cached_property
    def rotary(self) -> Rotary:
        """Scaled-RoPE frequencies per call (None for plain RoPE: the backend uses theta). Built
        on first use, since the CUDA loader makes this object without __init__."""
        return Rotary(self.cfg.rope, self.cfg.head_dim)

    def new_cache(self, capacity: int) -> KVCache:
        c = self.cfg
        return self.backend.alloc_kv(c.num_layers, c.num_kv_heads, capacity, c.head_dim)

    def forward(self, ids: Tensor, positions: Tensor, cache: KVCache, all_logits: bool = False) -> Tensor:
        """ids, positions: int32 [T]. Returns logits [T, V] (or [1, V] for the last token)."""
        c, b = self.cfg, self.backend
        h = self._hidden(ids, positions, lambda qkv, i: b.attention(
            qkv, cache, i, positions, c.num_heads, c.num_kv_heads, c.head_dim))
        if not all_logits:
            h = b.last_row(h)
        return b.linear(h, self.lm_head)                                   # [T or 1, V]

    def forward_paged(self, ids: Tensor, positions: Tensor, kv: PagedKV, seqs: list[SeqSlots],
                      logit_rows: Tensor) -> Tensor:
        """One batched step: the rows of several sequences (seqs, in order) through every
        layer, each attending over its own blocks of the pool. Logits [R, V] of logit_rows."""
        c, b = self.cfg, self.backend
        h = self._hidden(ids, positions, lambda qkv, i: b.paged_attention(
            qkv, kv, i, seqs, c.num_heads, c.num_kv_heads, c.head_dim), b.batched_linear)
        return b.batched_linear(b.take_rows(h, logit_rows), self.lm_head)  # [R, V]

    def _hidden(self, ids: Tensor, positions: Tensor, attention, linear=None) -> Tensor:
        """The final-normed hidden states [T, D]; attention(qkv, layer) stores k, v and attends;
        `linear` the projections' op (the backend's, or its batched_linear in a core step)."""
        c, b = self.cfg, self.backend
        linear = linear or b.linear
        x = b.embedding(self.embed, ids)                                   # [T, D]
        residual = None
        freqs = self.rotary.frequencies(lambda: b.to_host(positions))
        rope_kw = {} if freqs is None else {"inv_freq": freqs[0], "attention_scaling": freqs[1]}
        for i, lw in enumerate(self.layers):
            if residual is None:
                h, residual = b.rmsnorm(x, lw.input_norm, c.rms_norm_eps), x
            else:
                h, residual = b.add_rmsnorm(x, residual, lw.input_norm, c.rms_norm_eps)
            qkv = linear(h, lw.qkv, lw.qkv_bias)                       # [T, qkv_size]
            if c.qk_norm:
                b.qk_norm(qkv, lw.q_norm, lw.k_norm, c.rms_norm_eps, c.num_heads, c.num_kv_heads, c.head_dim)
            if c.use_rope[i]:  # smollm3 skips RoPE on some layers
                b.rope(qkv, positions, c.num_heads, c.num_kv_heads, c.head_dim, c.rope_theta, **rope_kw)
            attn = attention(qkv, i)                                       # [T, H * hd]
            x = linear(attn, lw.o)                                       # [T, D]
            h, residual = b.add_rmsnorm(x, residual, lw.post_norm, c.rms_norm_eps)
            x = linear(b.swiglu(linear(h, lw.gate_up)), lw.down)     # [T, D]
        h, _ = b.add_rmsnorm(x, residual, self.final_norm, c.rms_norm_eps)
        return h

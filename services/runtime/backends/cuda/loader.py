"""Load a model's safetensors straight to the GPU: raw stored bytes (bf16 / fp16 / fp32) go
through the pinned staging slots and are converted to the storage type (bf16, or fp16 for an
fp16 checkpoint) by a kernel where they differ from it, and the fused q|k|v
and gate|up tensors are assembled in place on the device. The host never widens a weight.

`load_transformer` returns the same `Transformer` object the model code builds (same
fields), so the forward pass and `DecodeGraph` use it unchanged; it only skips the float32
host path of `Transformer.__init__`, which costs seconds of start-up for larger models.
"""
from __future__ import annotations

import time

import numpy as np

from inloop.services.runtime.model.config import ModelConfig
from inloop.services.runtime.model.weights import Weights

from .tensor import DeviceTensor
from .upload import SOURCE_DTYPES


def _raw(weights: Weights, name: str, shape) -> tuple[np.ndarray, str]:
    t = weights.raw(name, shape)
    if t.dtype in SOURCE_DTYPES:
        return t.data, t.dtype
    return t.to_float32().reshape(-1), "F32"  # rare stored dtypes (F64): widen on the host


def _fused(backend, weights: Weights, parts: list[tuple[str, tuple[int, ...]]], storage: str) -> DeviceTensor:
    rows = sum(shape[0] for _, shape in parts)
    shape = (rows,) + tuple(parts[0][1][1:])
    dst = backend.weight_tensor(shape, storage)
    offset = 0
    for part, pshape in parts:
        data, dtype = _raw(weights, part, pshape)
        backend.uploader.upload(data, dtype, dst, offset)
        offset += int(np.prod(pshape))
    return dst


def _one(backend, weights: Weights, name: str, shape, storage: str) -> DeviceTensor:
    data, dtype = _raw(weights, name, shape)
    return backend.upload_raw(data, dtype, shape, name, storage)


def load_transformer(backend, cfg: ModelConfig, weights: Weights, storage: str = "bf16"):
    """`storage`: how every weight is kept on the GPU ("bf16" or "f16"); one type per model,
    since the fused kernels read a projection's norm and bias with its weight."""
    from inloop.services.runtime.model.transformer import LayerWeights, Transformer

    t0 = time.perf_counter()
    d, hd = cfg.hidden_size, cfg.head_dim
    model = Transformer.__new__(Transformer)
    model.cfg, model.backend = cfg, backend
    model.embed = _one(backend, weights, "model.embed_tokens.weight", (cfg.vocab_size, d), storage)
    model.layers = []
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        model.layers.append(LayerWeights(
            input_norm=_one(backend, weights, p + "input_layernorm.weight", (d,), storage),
            qkv=_fused(backend, weights, [(a + "q_proj.weight", (cfg.q_size, d)), (a + "k_proj.weight", (cfg.kv_size, d)),
                                          (a + "v_proj.weight", (cfg.kv_size, d))], storage),
            qkv_bias=_fused(backend, weights, [(a + "q_proj.bias", (cfg.q_size,)), (a + "k_proj.bias", (cfg.kv_size,)),
                                               (a + "v_proj.bias", (cfg.kv_size,))], storage)
            if cfg.attention_bias else None,
            q_norm=_one(backend, weights, a + "q_norm.weight", (hd,), storage) if cfg.qk_norm else None,
            k_norm=_one(backend, weights, a + "k_norm.weight", (hd,), storage) if cfg.qk_norm else None,
            o=_one(backend, weights, a + "o_proj.weight", (d, cfg.q_size), storage),
            post_norm=_one(backend, weights, p + "post_attention_layernorm.weight", (d,), storage),
            gate_up=_fused(backend, weights, [(p + "mlp.gate_proj.weight", (cfg.intermediate_size, d)),
                                              (p + "mlp.up_proj.weight", (cfg.intermediate_size, d))], storage),
            down=_one(backend, weights, p + "mlp.down_proj.weight", (d, cfg.intermediate_size), storage),
        ))
    model.final_norm = _one(backend, weights, "model.norm.weight", (d,), storage)
    if cfg.tie_word_embeddings or "lm_head.weight" not in weights:
        model.lm_head = model.embed
    else:
        model.lm_head = _one(backend, weights, "lm_head.weight", (cfg.vocab_size, d), storage)
    model.num_parameters = sum(int(np.prod(weights.raw(n).shape)) for n in weights.names())
    summary = backend.upload_summary()
    backend.uploader.release()
    model.load_seconds = time.perf_counter() - t0
    model.upload_stats = summary
    return model

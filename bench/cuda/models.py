"""Random models with the exact shapes of SmolLM2-135M and Qwen2.5-0.5B, written on the spot
in the HF layout (config.json + bf16 model.safetensors), for benchmarks on machines that have
no real weights. HF transformers loads them as it would the real ones (no tokenizer needed).
The engine needs a tokenizer, so each also gets the tiny models' small byte-level BPE one
(its ids are a prefix of the model's vocabulary; ids past it decode to nothing).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

SHAPES = {
    "smollm2-135m": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 576,
                     "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                     "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True,
                     "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 8192,
                     "attention_bias": False, "mlp_bias": False},
    "qwen2.5-0.5b": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 896,
                     "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                     "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True,
                     "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
                     "use_sliding_window": False, "sliding_window": None},
}


def _bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits by truncation (random weights: rounding mode is irrelevant)."""
    return (np.ascontiguousarray(a, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _tensors(cfg: dict, rng: np.random.Generator):
    """(name, shape, factory) for every tensor, in HF names; factories draw lazily."""
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    h, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // h

    def mat(rows, cols, scale=1.0):
        return lambda: rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(scale / np.sqrt(cols))

    def norm(n):
        return lambda: 1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)

    def bias(n):
        return lambda: 0.1 * rng.standard_normal(n, dtype=np.float32)

    yield "model.embed_tokens.weight", (v, d), lambda: rng.standard_normal((v, d), dtype=np.float32)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", (d,), norm(d)
        yield p + "post_attention_layernorm.weight", (d,), norm(d)
        yield p + "self_attn.q_proj.weight", (h * hd, d), mat(h * hd, d)
        yield p + "self_attn.k_proj.weight", (kv * hd, d), mat(kv * hd, d)
        yield p + "self_attn.v_proj.weight", (kv * hd, d), mat(kv * hd, d)
        if cfg["model_type"] == "qwen2":
            yield p + "self_attn.q_proj.bias", (h * hd,), bias(h * hd)
            yield p + "self_attn.k_proj.bias", (kv * hd,), bias(kv * hd)
            yield p + "self_attn.v_proj.bias", (kv * hd,), bias(kv * hd)
        yield p + "self_attn.o_proj.weight", (d, h * hd), mat(d, h * hd)
        yield p + "mlp.gate_proj.weight", (f, d), mat(f, d)
        yield p + "mlp.up_proj.weight", (f, d), mat(f, d)
        yield p + "mlp.down_proj.weight", (d, f), mat(d, f)
    yield "model.norm.weight", (d,), norm(d)


def make_random_model(out_dir: str | Path, name: str, seed: int = 0) -> Path:
    """Write config.json + model.safetensors (bf16) for SHAPES[name]; reuses a finished one."""
    out = Path(out_dir)
    done = out / ".complete"
    if done.is_file():
        return add_tokenizer(out)  # a model written before models had a tokenizer gets one
    out.mkdir(parents=True, exist_ok=True)
    cfg = {**SHAPES[name], "torch_dtype": "bfloat16", "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
           "initializer_range": 0.02, "attention_dropout": 0.0, "use_cache": True}
    rng = np.random.default_rng(seed)
    specs = list(_tensors(cfg, rng))
    header, offset = {}, 0
    for tname, shape, _ in specs:
        n = int(np.prod(shape)) * 2
        header[tname] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(out / "model.safetensors", "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for _, _, make in specs:  # one tensor in memory at a time
            fh.write(_bf16_bits(make()).tobytes())
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    add_tokenizer(out)
    done.write_text("ok\n")
    return out


def add_tokenizer(model_dir: str | Path) -> Path:
    """Give a model directory the tiny models' tokenizer and ChatML template (ids 0/1/2 are
    <|endoftext|>/<|im_start|>/<|im_end|>, as in SmolLM2), so that the engine can load it."""
    from inloop.services.runtime.model.tiny import CHATML_TEMPLATE, SPECIAL_TOKENS, train_tokenizer

    out = Path(model_dir)
    if (out / "tokenizer.json").is_file():
        return out
    train_tokenizer().save(str(out / "tokenizer.json"))
    added = {str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False, "normalized": False,
                      "single_word": False} for i, t in enumerate(SPECIAL_TOKENS)}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>", "added_tokens_decoder": added,
        "chat_template": CHATML_TEMPLATE}, indent=2))
    return out


def prompt_ids(vocab_size: int, n: int, seed: int = 0) -> np.ndarray:
    """A fixed pseudo-random prompt (both sides of a comparison feed the same ids)."""
    return np.random.default_rng(seed).integers(3, vocab_size, n).astype(np.int32)

"""Tiny random models in the HF layout, for tests: llama, qwen2, qwen3 and smollm3.

Each has a real byte-level BPE tokenizer (trained here in milliseconds on a short text)
with the ChatML special tokens at ids 0/1/2 as in SmolLM2, a chat template, and random
weights large enough that greedy decoding has clear winners.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS = """\
The runtime owns the GPU and serves a decoder model over gRPC. The controller calls the
tools service and the runtime with deadlines and retries. A receipt from Corner Market on
2026-03-14 lists bread 2.50, milk 1.20 and coffee 7.90, total 11.60. Search the corpus,
extract the merchant, the date and the total, then summarize the answer in one sentence.
What is 17 * 23? The answer is 391. The quick brown fox jumps over the lazy dog.
Tokens, logits, entropy, margin: uncertainty tells the agent when to verify an answer.
"""

_ARCH = {
    # arch: (hf class, tied embeddings, qkv bias, head_dim override)
    "llama": ("LlamaForCausalLM", False, False, None),
    "qwen2": ("Qwen2ForCausalLM", True, True, None),
    "qwen3": ("Qwen3ForCausalLM", False, False, 24),
    "smollm3": ("SmolLM3ForCausalLM", True, False, None),
}
_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def train_tokenizer(vocab_size: int = 400) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer)
    return tok


def _to_bytes(array: np.ndarray, dtype: str) -> bytes:
    a = np.ascontiguousarray(array, np.float32)
    if dtype == "F16":
        return a.astype(np.float16).tobytes()
    if dtype == "BF16":  # round to nearest even, then keep the top 16 bits
        bits = a.view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return bits.astype(np.uint16).tobytes()
    return a.tobytes()


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    """A minimal safetensors writer (numpy has no bf16, so the library cannot write it from numpy)."""
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        blob = _to_bytes(array, dtype)
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for blob in blobs:
            f.write(blob)


def tiny_config(arch: str, vocab_size: int) -> dict:
    cls, tied, bias, head_dim = _ARCH[arch]
    cfg = {
        "architectures": [cls], "model_type": arch, "vocab_size": vocab_size,
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "max_position_embeddings": 2048, "tie_word_embeddings": tied,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu",
        "torch_dtype": "float32", "attention_dropout": 0.0, "initializer_range": 0.02,
    }
    if head_dim:
        cfg["head_dim"] = head_dim
    if arch in ("llama", "smollm3"):
        cfg["attention_bias"] = bias
        cfg["mlp_bias"] = False
    if arch == "smollm3":  # four layers, so that the default interval leaves one without RoPE
        cfg.update(num_hidden_layers=4, no_rope_layer_interval=4, use_sliding_window=False)
    if arch in ("qwen2", "qwen3"):
        cfg["use_sliding_window"] = False
        cfg["sliding_window"] = None
    return cfg


def random_weights(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or d // heads

    def mat(rows, cols):  # scaled so activations stay O(1) and logits are peaked
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((v, d)).astype(np.float32),
         "model.norm.weight": norm(d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(d)
        w[p + "post_attention_layernorm.weight"] = norm(d)
        w[p + "self_attn.q_proj.weight"] = mat(heads * hd, d)
        w[p + "self_attn.k_proj.weight"] = mat(kv * hd, d)
        w[p + "self_attn.v_proj.weight"] = mat(kv * hd, d)
        w[p + "self_attn.o_proj.weight"] = mat(d, heads * hd)
        w[p + "mlp.gate_proj.weight"] = mat(f, d)
        w[p + "mlp.up_proj.weight"] = mat(f, d)
        w[p + "mlp.down_proj.weight"] = mat(d, f)
        if cfg["model_type"] == "qwen2":
            for name, n in (("q", heads * hd), ("k", kv * hd), ("v", kv * hd)):
                w[p + f"self_attn.{name}_proj.bias"] = (0.1 * rng.standard_normal(n)).astype(np.float32)
        if cfg["model_type"] == "qwen3":
            w[p + "self_attn.q_norm.weight"] = norm(hd)
            w[p + "self_attn.k_norm.weight"] = norm(hd)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = mat(v, d) * 4.0
    return w


def make_tiny(arch: str, out_dir: str | Path, seed: int = 0, dtype: str = "float32",
              shards: int = 1, config: dict | None = None) -> Path:
    """Write a tiny random `arch` model to out_dir; `shards` > 1 writes an indexed, sharded checkpoint;
    `config` overrides fields of config.json (e.g. rope_scaling)."""
    if arch not in _ARCH:
        raise ValueError(f"unknown arch {arch!r}: use one of {', '.join(_ARCH)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    cfg = tiny_config(arch, tok.get_vocab_size())
    cfg["torch_dtype"] = dtype
    cfg.update(config or {})
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 2}))
    added = {str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                      "normalized": False, "single_word": False} for i, t in enumerate(SPECIAL_TOKENS)}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>", "add_prefix_space": False,
        "model_max_length": 2048, "added_tokens_decoder": added, "chat_template": CHATML_TEMPLATE,
    }, indent=2))
    weights = random_weights(cfg, seed)
    names = list(weights)
    st_dtype = _DTYPES[dtype]
    if shards <= 1:
        write_safetensors(out / "model.safetensors", weights, st_dtype)
    else:
        weight_map = {}
        for s, chunk in enumerate(np.array_split(np.arange(len(names)), shards)):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            write_safetensors(out / fname, {names[j]: weights[names[j]] for j in chunk}, st_dtype)
            weight_map.update({names[j]: fname for j in chunk})
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out

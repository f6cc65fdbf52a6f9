"""GGUF files of tiny random models, written the way llama.cpp's converter writes them.

The `gguf` package's writer, with its quantizers for F16, BF16, Q8_0, Q4_0 and Q4_1; it has no
K-quant quantizer, so Q4_K / Q5_K / Q6_K tensors are random raw blocks whose scale fields hold
valid, small float16 values (add_tensor(raw_dtype=...)): the dequantized weights are then
random numbers of a sensible size, and both sides dequantize the same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from inloop.services.runtime.model.gguf_convert import GLOBAL_TENSORS, LAYER_TENSORS
from inloop.services.runtime.model.tiny import CHATML_TEMPLATE
from inloop.services.runtime.model.weights import Weights

K_QUANTS = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210}  # bytes per block of 256 weights
GGUF_KINDS = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K")
_HF_TO_GGUF = {v: k for k, v in LAYER_TENSORS.items()}
_HF_GLOBAL_TO_GGUF = {v: k for k, v in GLOBAL_TENSORS.items()}


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute (q/k rows, and their biases)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_name(hf_name: str) -> str:
    if hf_name in _HF_GLOBAL_TO_GGUF:
        return _HF_GLOBAL_TO_GGUF[hf_name]
    _, _, layer, leaf = hf_name.split(".", 3)
    return f"blk.{layer}.{_HF_TO_GGUF[leaf]}"


def _k_quant_blocks(rows: int, cols: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    assert cols % 256 == 0, f"{kind} needs rows of a multiple of 256 weights, got {cols}"
    n = rows * cols // 256
    blocks = rng.integers(0, 256, (n, K_QUANTS[kind]), dtype=np.uint8)

    def f16(values: np.ndarray) -> np.ndarray:
        return values.astype(np.float16).view(np.uint8).reshape(n, 2)

    scale = 0.5 + rng.random(n)
    if kind in ("Q4_K", "Q5_K"):  # d, dmin, 12 bytes of 6-bit scales and mins, quants
        d = scale * (4e-4 if kind == "Q4_K" else 2e-4)
        blocks[:, 0:2] = f16(d)
        blocks[:, 2:4] = f16(d * (7.5 if kind == "Q4_K" else 15.5))  # centres d*sc*q - dmin*m near 0
    else:  # Q6_K: ql, qh, 16 int8 scales, d
        blocks[:, 192:208] = rng.integers(-16, 17, (n, 16)).astype(np.int8).view(np.uint8)
        blocks[:, 208:210] = f16(scale * 3e-4)
    return blocks.reshape(rows, cols // 256 * K_QUANTS[kind])


def _encode(array: np.ndarray, kind: str, rng: np.random.Generator):
    """(data, raw_dtype) for GGUFWriter.add_tensor."""
    import gguf

    if array.ndim == 1 or kind == "F32":  # norms and biases stay F32, as llama.cpp keeps them
        return array.astype(np.float32), None
    if kind == "F16":
        return array.astype(np.float16), None
    qtype = gguf.GGMLQuantizationType[kind]
    if kind in K_QUANTS:
        return _k_quant_blocks(array.shape[0], array.shape[1], kind, rng), qtype
    return gguf.quants.quantize(array.astype(np.float32), qtype), qtype


def tokenizer_fields(model_dir: Path) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, llama.cpp token types, merges) of a tiny model's tokenizer.json."""
    data = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = dict(data["model"]["vocab"])
    specials = {t["content"] for t in data["added_tokens"] if t["special"]}
    for t in data["added_tokens"]:
        vocab[t["content"]] = t["id"]
    tokens = [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    types = [3 if tok in specials else 1 for tok in tokens]  # CONTROL / NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return tokens, types, merges


def write_gguf(path: Path, model_dir: Path, kind: str, pre: str = "gpt2", seed: int = 0,
               rope_freqs: np.ndarray | None = None, metadata: dict | None = None) -> Path:
    """The tiny HF model in `model_dir` as a llama.cpp-style GGUF with its matrices stored as `kind`."""
    import gguf

    cfg = json.loads((model_dir / "config.json").read_text())
    arch = cfg["model_type"]
    d, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or d // heads
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}-{kind}")
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(d)
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(cfg["rope_theta"])
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
        writer.add_vocab_size(cfg["vocab_size"])
    if arch == "qwen3":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    for key, value in (metadata or {}).items():
        (writer.add_string if isinstance(value, str) else writer.add_float32 if isinstance(value, float)
         else writer.add_uint32)(key.format(arch=arch), value)
    tokens, types, merges = tokenizer_fields(model_dir)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(cfg["bos_token_id"])
    writer.add_eos_token_id(cfg["eos_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    weights = Weights(model_dir)
    for name in weights.names():
        array = weights.float32(name)
        if arch == "llama" and ".q_proj." in name:
            array = llama_cpp_permute(array, heads)
        elif arch == "llama" and ".k_proj." in name:
            array = llama_cpp_permute(array, kv)
        data, raw_dtype = _encode(array, kind, rng)
        writer.add_tensor(_gguf_name(name), data, raw_dtype=raw_dtype)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", rope_freqs.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path

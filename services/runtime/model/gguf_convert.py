"""Convert a llama / qwen2 / qwen3 GGUF file into an HF-layout model directory.

    convert_gguf("Qwen3-0.6B-Q4_K_M.gguf", out_dir)
    out_dir/
      config.json             {Llama,Qwen2,Qwen3}ForCausalLM, every field read from the GGUF metadata
      model.safetensors       HF tensor names; F32/F16/BF16 tensors as stored, quantized ones
                              (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, ...) as their exact float32
                              dequantized values (the `gguf` package's dequantizers)
      tokenizer.json          byte-level BPE built with `tokenizers` (gguf_tokenizer.py)
      tokenizer_config.json   chat template (the GGUF's tokenizer.chat_template), special tokens
      generation_config.json  bos / eos / pad

Only numpy, gguf and tokenizers are used: the runtime host converts without torch or
transformers. HF transformers loading the GGUF itself is the reference the tests hold this to.
Tensors are dequantized and written one at a time, so memory holds one tensor, not the model.

Traps, all handled here:
  * llama.cpp permutes the rows of a llama's attn_q / attn_k (and their biases) so that RoPE
    rotates adjacent pairs (GPT-J style); HF rotates the two halves of each head (NeoX style).
    Qwen2/Qwen3 files are written unpermuted.
  * Llama 3.1+ files carry their RoPE scaling as `rope_freqs.weight` (one divisor per frequency)
    instead of metadata: we recognise Llama 3's formula in it and write `rope_scaling` llama3.
  * the tokenizer's pre-tokenizer (smollm, qwen2, llama-bpe, ...) decides how digits and
    punctuation split before BPE (gguf_tokenizer.py).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import struct
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from inloop.services.runtime.model.gguf_tokenizer import GGUFTokenizerError, build_tokenizer, tokenizer_config

HF_CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

# GGUF tensor name (after "blk.N.") -> HF name (after "model.layers.N.")
LAYER_TENSORS = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
ROPE_FREQS = "rope_freqs.weight"  # Llama 3 RoPE scaling as per-frequency divisors: goes into config.json
# GGUF storage types kept as they are; every other type is dequantized to float32.
KEPT_TYPES = {"F32": ("F32", np.float32), "F16": ("F16", np.float16), "BF16": ("BF16", np.uint16)}


class GGUFConversionError(ValueError):
    """A GGUF file this converter cannot turn into an HF directory; the message says why."""


# ---------------------------------------------------------------------------------- metadata


def read_metadata(reader) -> dict:
    """Every key-value field of the GGUF as plain Python values (str, int, float, bool, list)."""
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def _required(meta: dict, key: str):
    if key not in meta:
        raise GGUFConversionError(f"GGUF metadata lacks {key!r}; is this a llama, qwen2 or qwen3 file?")
    return meta[key]


def llama_cpp_llama3_factors(theta: float, head_dim: int, factor: float, low: float, high: float,
                             original: int) -> np.ndarray:
    """The rope_freqs.weight llama.cpp's converter writes for a Llama 3 rope_scaling
    (convert_hf_to_gguf.py, LlamaModel.generate_extra_tensors)."""
    freqs = 1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)))
    out = []
    for freq in freqs.astype(np.float64):
        wavelen = 2 * math.pi / freq
        if wavelen < original / high:
            out.append(1.0)
        elif wavelen > original / low:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def llama3_scaling_from_factors(factors: np.ndarray, theta: float, head_dim: int) -> dict | None:
    """The llama3 rope_scaling whose llama.cpp factors are `factors`; None if all are 1.

    llama.cpp keeps only the factors; Llama 3.x always used low 1 / high 4 and a pretraining
    length of 8192, so we look for the factor (the largest divisor) with those, then others."""
    factors = np.asarray(factors, dtype=np.float32).reshape(-1)
    if np.all(factors == 1.0):
        return None
    factor = float(factors.max())
    for original in (8192, 4096, 2048, 16384, 32768, 65536, 131072, 1024, 512, 256, 128, 64):
        expected = llama_cpp_llama3_factors(theta, head_dim, factor, 1.0, 4.0, original)
        if expected.shape == factors.shape and np.allclose(expected, factors, rtol=1e-5, atol=0):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                    "original_max_position_embeddings": original}
    raise GGUFConversionError(
        f"{ROPE_FREQS} holds per-frequency RoPE factors that are not Llama 3's scaling; "
        "convert the HF checkpoint instead")


def _rope_parameters(meta: dict, arch: str, theta: float, rope_freqs: np.ndarray | None, head_dim: int) -> dict:
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    params: dict = {"rope_type": "default"}
    if kind == "linear":
        params = {"rope_type": "linear", "factor": float(_required(meta, f"{arch}.rope.scaling.factor"))}
    elif kind == "yarn":
        params = {"rope_type": "yarn", "factor": float(_required(meta, f"{arch}.rope.scaling.factor")),
                  "original_max_position_embeddings": int(_required(meta, f"{arch}.rope.scaling.original_context_length"))}
        for key in ("beta_fast", "beta_slow"):
            if f"{arch}.rope.scaling.yarn_{key}" in meta:
                params[key] = float(meta[f"{arch}.rope.scaling.yarn_{key}"])
    elif kind not in ("none", None):
        raise GGUFConversionError(f"rope scaling {kind!r} is not supported (linear, yarn, and llama3's rope_freqs are)")
    if rope_freqs is not None:
        llama3 = llama3_scaling_from_factors(rope_freqs, theta, head_dim)
        if llama3 is not None:
            if params["rope_type"] != "default":
                raise GGUFConversionError(f"both {ROPE_FREQS} and rope scaling {kind!r}: not supported")
            params = llama3
    return {**params, "rope_theta": theta}


def hf_config(meta: dict, tensor_names: set[str], rope_freqs: np.ndarray | None = None) -> dict:
    """The HF config dict, every number from the file (none hard-coded for one model)."""
    arch = meta.get("general.architecture")
    if arch not in HF_CLASSES:
        raise GGUFConversionError(
            f"GGUF architecture is {arch!r}; inloop converts {', '.join(HF_CLASSES)} GGUF files")
    hidden = int(_required(meta, f"{arch}.embedding_length"))
    num_heads = int(_required(meta, f"{arch}.attention.head_count"))
    head_dim = int(meta.get(f"{arch}.attention.key_length") or meta.get(f"{arch}.rope.dimension_count")
                   or hidden // num_heads)
    layers = int(_required(meta, f"{arch}.block_count"))
    vocab = int(meta.get(f"{arch}.vocab_size") or len(_required(meta, "tokenizer.ggml.tokens")))
    theta = float(meta.get(f"{arch}.rope.freq_base", 10000.0))
    rope = _rope_parameters(meta, arch, theta, rope_freqs, head_dim)
    bos, eos = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
    pad = meta.get("tokenizer.ggml.padding_token_id")
    config = {
        "architectures": [HF_CLASSES[arch]],
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(_required(meta, f"{arch}.feed_forward_length")),
        "num_hidden_layers": layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(meta.get(f"{arch}.attention.head_count_kv", num_heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        # float32 in the file: keep its exact value (9.999999747378752e-06, not 1e-5) so that we
        # and transformers' GGUF loader compute the very same norm.
        "rms_norm_eps": float(_required(meta, f"{arch}.attention.layer_norm_rms_epsilon")),
        # transformers 4 reads rope_theta / rope_scaling, transformers 5 rope_parameters: write all
        "rope_theta": theta,
        "rope_parameters": rope,
        "max_position_embeddings": int(meta.get(f"{arch}.context_length", 2048)),
        # no output.weight in the file means the LM head reuses the embedding
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": None if bos is None else int(bos),
        "eos_token_id": None if eos is None else int(eos),
        "pad_token_id": None if pad is None else int(pad),
        "torch_dtype": "float32",
        "use_cache": True,
    }
    if rope["rope_type"] != "default":
        config["rope_scaling"] = dict(rope)
    if arch == "llama":
        config.update(attention_bias="blk.0.attn_q.bias" in tensor_names, mlp_bias=False)
    else:
        config.update(use_sliding_window=False, sliding_window=None, max_window_layers=layers)
        if arch == "qwen3":
            config["attention_bias"] = "blk.0.attn_q.bias" in tensor_names
    return config


# ----------------------------------------------------------------------------------- tensors


def hf_tensor_name(gguf_name: str) -> str | None:
    """HF parameter name for a GGUF tensor name; None for tensors HF does not keep."""
    if gguf_name == ROPE_FREQS:
        return None
    if gguf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[gguf_name]
    prefix, _, rest = gguf_name.partition(".")
    layer, _, leaf = rest.partition(".")
    if prefix == "blk" and layer.isdigit() and leaf in LAYER_TENSORS:
        return f"model.layers.{layer}.{LAYER_TENSORS[leaf]}"
    raise GGUFConversionError(f"unknown GGUF tensor {gguf_name!r} for a llama / qwen2 / qwen3 model")


def unpermute_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's `permute` of q/k projection rows (convert_hf_to_gguf.py, LlamaModel).

    llama.cpp wrote, per head, rows [h0 h1 .. h(d/2-1) | h(d/2) .. h(d-1)] interleaved as
    (h0, h(d/2), h1, h(d/2+1), ...): reshape(n_heads, 2, d/2).swapaxes(1, 2). We view the rows
    as (n_heads, d/2, 2) and swap back. `n_heads` is the KV head count for attn_k.
    """
    rows = weight.shape[0]                      # n_heads * head_dim
    half = rows // n_heads // 2
    permuted = weight.reshape(n_heads, half, 2, *weight.shape[1:])
    return np.ascontiguousarray(permuted.swapaxes(1, 2).reshape(weight.shape))


def tensor_plan(reader) -> list[tuple[object, str, str, tuple[int, ...]]]:
    """(gguf tensor, HF name, safetensors dtype, numpy shape) of every tensor HF keeps."""
    plan = []
    for tensor in reader.tensors:
        name = hf_tensor_name(tensor.name)
        if name is None:
            continue
        kept = KEPT_TYPES.get(tensor.tensor_type.name)
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists ne, fastest first
        plan.append((tensor, name, kept[0] if kept else "F32", shape))
    return plan


def _tensor_array(tensor, st_dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    from gguf.quants import dequantize

    if st_dtype == "F32" and tensor.tensor_type.name != "F32":
        try:
            array = dequantize(tensor.data, tensor.tensor_type)
        except NotImplementedError:
            raise GGUFConversionError(f"tensor {tensor.name}: the gguf package cannot dequantize "
                                      f"{tensor.tensor_type.name}") from None
        return np.asarray(array, dtype=np.float32).reshape(shape)
    # F32 / F16 as stored; BF16 arrives as bytes, kept as its 16-bit patterns
    return np.ascontiguousarray(tensor.data).view(KEPT_TYPES[st_dtype][1]).reshape(shape)


def convert_tensors(reader, config: dict, progress: bool = True):
    """Yield (HF name, array) in tensor_plan order: kept or dequantized, q/k rows unpermuted (llama)."""
    from tqdm import tqdm

    plan = tensor_plan(reader)
    for tensor, name, st_dtype, shape in tqdm(plan, desc="converting", unit="tensor", file=sys.stderr,
                                              disable=not progress):
        array = _tensor_array(tensor, st_dtype, shape)
        if config["model_type"] == "llama":
            leaf = tensor.name.split(".", 2)[-1]
            if leaf in ("attn_q.weight", "attn_q.bias"):
                array = unpermute_rope_rows(array, config["num_attention_heads"])
            elif leaf in ("attn_k.weight", "attn_k.bias"):
                array = unpermute_rope_rows(array, config["num_key_value_heads"])
        yield name, np.ascontiguousarray(array)


def write_safetensors(path: Path, plan, arrays, metadata: dict[str, str]) -> None:
    """safetensors with one dtype per tensor (numpy has no bf16, so we write the format ourselves:
    8-byte header length, JSON header, raw little-endian data), streaming `arrays` in plan order."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    for _tensor, name, st_dtype, shape in plan:
        size = int(np.prod(shape)) * np.dtype(KEPT_TYPES[st_dtype][1]).itemsize
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data section to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for (_tensor, name, _dtype, _shape), (got, array) in zip(plan, arrays, strict=True):
            assert got == name and array.nbytes == header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            f.write(array.reshape(-1).view(np.uint8).data)


# ------------------------------------------------------------------------------------ writing


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _relax_permissions(tmp: Path) -> None:
    """mkdtemp makes the dir 0700 (and safetensors its file 0600): give them the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    for path in tmp.iterdir():
        os.chmod(path, 0o666 & ~umask)


def publish_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished `tmp` into place; an existing `out_dir` is swapped out, then removed.

    `tmp` lives next to `out_dir`, so each rename stays on one filesystem and is atomic: a
    reader sees the old model or the new one, never half of either.
    """
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "model")
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _storage_dtype(plan) -> str:
    """config.json's torch_dtype: what most matrices are stored as."""
    counts = Counter(st_dtype for _t, _n, st_dtype, shape in plan if len(shape) == 2)
    kind = counts.most_common(1)[0][0] if counts else "F32"
    return {"F16": "float16", "BF16": "bfloat16"}.get(kind, "float32")


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, progress: bool = True) -> Path:
    """Convert `gguf_path` into the HF directory `out_dir` (replaced if present); returns it."""
    import gguf
    from gguf.quants import dequantize

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    reader = gguf.GGUFReader(str(gguf_path))
    meta = read_metadata(reader)
    by_name = {t.name: t for t in reader.tensors}
    rope_freqs = None
    if ROPE_FREQS in by_name:
        rope_freqs = np.asarray(dequantize(by_name[ROPE_FREQS].data, by_name[ROPE_FREQS].tensor_type))
    config = hf_config(meta, set(by_name), rope_freqs)
    try:
        tokenizer = build_tokenizer(meta)  # fail on an unsupported tokenizer before the slow part
    except GGUFTokenizerError as exc:
        raise GGUFConversionError(str(exc)) from None
    plan = tensor_plan(reader)  # unknown tensors fail here, before anything is written
    config["torch_dtype"] = _storage_dtype(plan)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write_safetensors(tmp / "model.safetensors", plan, convert_tensors(reader, config, progress=progress),
                          {"format": "pt"})
        _write_json(tmp / "config.json", config)
        tokenizer.save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", tokenizer_config(meta, config["max_position_embeddings"]))
        _write_json(tmp / "generation_config.json", {
            "bos_token_id": config["bos_token_id"],
            "eos_token_id": config["eos_token_id"],
            "pad_token_id": config["pad_token_id"],
        })
        _write_json(tmp / "gguf_source.json", {
            "file": gguf_path.name,
            "name": meta.get("general.name"),
            "architecture": meta.get("general.architecture"),
            "file_type": meta.get("general.file_type"),
            "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
        })
        _relax_permissions(tmp)
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

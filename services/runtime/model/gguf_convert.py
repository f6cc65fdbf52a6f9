"""Convert a llama-architecture GGUF file into an HF-layout model directory.

    convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", out_dir)
    out_dir/
      config.json             LlamaForCausalLM, every field read from the GGUF metadata
      model.safetensors       float32, the exact dequantized values, HF tensor names
      tokenizer.json          byte-level BPE built with `tokenizers`
      tokenizer_config.json   chat template, special tokens, added_tokens_decoder
      generation_config.json  bos / eos / pad

Only numpy, gguf, safetensors and tokenizers are used: the runtime host converts without torch
or transformers. HF transformers loading the GGUF itself is the reference the tests hold this to.

Two traps, both undone here:
  * llama.cpp's converter permutes the rows of attn_q / attn_k so that RoPE rotates adjacent
    pairs (GPT-J style); HF llama rotates the two halves of each head (NeoX style).
  * the tokenizer is GPT-2 byte-level BPE, but the `smollm` pre-tokenizer splits every digit
    on its own before the GPT-2 regex runs (llama.cpp: regex "\\p{N}" then the GPT-2 pattern).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ARCH = "llama"

# GGUF tensor name (after "blk.N.") -> HF name (after "model.layers.N.")
LAYER_TENSORS = {
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
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
# llama.cpp stores these in its GGUF but they are recomputed at load time; HF has no weight for them.
SKIPPED_TENSORS = {"rope_freqs.weight"}

# llama.cpp token types (gguf.TokenType): CONTROL tokens are special, USER_DEFINED are added tokens.
TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4
# `tokenizer.ggml.pre` values whose split is "each digit alone, then the GPT-2 regex".
DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact"}
# ... and those that use the GPT-2 regex unchanged (ByteLevel's built-in one).
GPT2_PRE = {"gpt-2", "gpt2", "default"}


class GGUFConversionError(ValueError):
    """A GGUF file this converter cannot turn into an HF directory; the message says why."""


# ---------------------------------------------------------------------------------- metadata


def read_metadata(reader) -> dict:
    """Every key-value field of the GGUF as plain Python values (str, int, float, bool, list)."""
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def _required(meta: dict, key: str):
    if key not in meta:
        raise GGUFConversionError(f"GGUF metadata lacks {key!r}; is this a llama-architecture file?")
    return meta[key]


def hf_config(meta: dict, has_lm_head: bool) -> dict:
    """The HF LlamaConfig dict, every number from the file (none hard-coded for SmolLM2)."""
    arch = meta.get("general.architecture")
    if arch != ARCH:
        raise GGUFConversionError(f"GGUF architecture is {arch!r}; this converter handles {ARCH!r} only")
    if meta.get(f"{ARCH}.rope.scaling.type") not in (None, "none"):
        raise GGUFConversionError(f"rope scaling {meta[f'{ARCH}.rope.scaling.type']!r} is not supported")
    hidden = int(_required(meta, f"{ARCH}.embedding_length"))
    num_heads = int(_required(meta, f"{ARCH}.attention.head_count"))
    head_dim = int(meta.get(f"{ARCH}.rope.dimension_count", hidden // num_heads))
    vocab = int(meta.get(f"{ARCH}.vocab_size", len(_required(meta, "tokenizer.ggml.tokens"))))
    rope_theta = float(meta.get(f"{ARCH}.rope.freq_base", 10000.0))
    bos, eos = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
    pad = meta.get("tokenizer.ggml.padding_token_id")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(_required(meta, f"{ARCH}.feed_forward_length")),
        "num_hidden_layers": int(_required(meta, f"{ARCH}.block_count")),
        "num_attention_heads": num_heads,
        "num_key_value_heads": int(meta.get(f"{ARCH}.attention.head_count_kv", num_heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        # float32 in the file: keep its exact value (9.999999747378752e-06, not 1e-5) so that we
        # and transformers' GGUF loader compute the very same norm.
        "rms_norm_eps": float(_required(meta, f"{ARCH}.attention.layer_norm_rms_epsilon")),
        # transformers 4 reads rope_theta, transformers 5 rope_parameters: write both.
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "max_position_embeddings": int(meta.get(f"{ARCH}.context_length", 2048)),
        "attention_bias": False,
        "mlp_bias": False,
        # no output.weight in the file means the LM head reuses the embedding
        "tie_word_embeddings": not has_lm_head,
        "bos_token_id": None if bos is None else int(bos),
        "eos_token_id": None if eos is None else int(eos),
        "pad_token_id": None if pad is None else int(pad),
        "torch_dtype": "float32",
        "use_cache": True,
    }


# ----------------------------------------------------------------------------------- tensors


def hf_tensor_name(gguf_name: str) -> str | None:
    """HF parameter name for a GGUF tensor name; None for tensors HF does not keep."""
    if gguf_name in SKIPPED_TENSORS:
        return None
    if gguf_name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[gguf_name]
    prefix, _, rest = gguf_name.partition(".")
    layer, _, leaf = rest.partition(".")
    if prefix == "blk" and layer.isdigit() and leaf in LAYER_TENSORS:
        return f"model.layers.{layer}.{LAYER_TENSORS[leaf]}"
    raise GGUFConversionError(f"unknown GGUF tensor {gguf_name!r} for a llama model")


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


def convert_tensors(reader, config: dict, progress: bool = True) -> dict[str, np.ndarray]:
    """Dequantize every tensor to float32 under its HF name, q/k rows unpermuted."""
    from gguf.quants import dequantize
    from tqdm import tqdm

    tensors: dict[str, np.ndarray] = {}
    for tensor in tqdm(reader.tensors, desc="dequantizing", unit="tensor", file=sys.stderr, disable=not progress):
        name = hf_tensor_name(tensor.name)
        if name is None:
            continue
        # dequantize returns numpy order: GGUF `shape` is ne (fastest dim first), i.e. reversed,
        # so a (out, in) HF Linear weight arrives as (out, in) here already.
        weight = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        expected = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        if weight.shape != expected:
            weight = weight.reshape(expected)
        if tensor.name.endswith("attn_q.weight"):
            weight = unpermute_rope_rows(weight, config["num_attention_heads"])
        elif tensor.name.endswith("attn_k.weight"):
            weight = unpermute_rope_rows(weight, config["num_key_value_heads"])
        tensors[name] = np.ascontiguousarray(weight)
    return tensors


# --------------------------------------------------------------------------------- tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the alphabet byte-level vocabularies use)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def build_tokenizer(meta: dict):
    """A `tokenizers.Tokenizer` equal to the one the GGUF describes (tokenizer.ggml.model == gpt2)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFConversionError(f"tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2') is supported")
    tokens: list[str] = _required(meta, "tokenizer.ggml.tokens")
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in _required(meta, "tokenizer.ggml.merges")]

    # A byte-level vocabulary spells every token in the GPT-2 alphabet; respell one that is not
    # (as transformers' GGUF loader does) so that the vocabulary keeps its size.
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {}
    for index, token in enumerate(tokens):
        if not set(token) <= alphabet:
            token = "".join(spelling[b] for b in token.encode("utf-8"))
        vocab.setdefault(token, index)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))

    pre = meta.get("tokenizer.ggml.pre", "default")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in DIGIT_SPLIT_PRE:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in GPT2_PRE:
        tokenizer.pre_tokenizer = byte_level
    else:
        raise GGUFConversionError(f"tokenizer.ggml.pre {pre!r} is not supported (known: smollm, gpt2)")
    tokenizer.decoder = decoders.ByteLevel()

    # CONTROL tokens (<|im_start|>, ...) must match whole in the text, never be cut into bytes.
    # transformers skips a control token spelled outside the byte alphabet (a llama.cpp mislabel).
    specials = [AddedToken(t, special=True, normalized=False) for t, token_type in zip(tokens, types)
                if token_type == TOKEN_CONTROL and set(t) <= alphabet]
    user = [AddedToken(t, special=False, normalized=False) for t, token_type in zip(tokens, types) if token_type == TOKEN_USER_DEFINED]
    tokenizer.add_special_tokens(specials)
    tokenizer.add_tokens(user)

    bos_id = meta.get("tokenizer.ggml.bos_token_id")
    if meta.get("tokenizer.ggml.add_bos_token") and bos_id is not None:
        bos = tokens[bos_id]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, int(bos_id))]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def tokenizer_config(meta: dict) -> dict:
    """tokenizer_config.json: chat template, the four role tokens, and every added token."""
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)

    def token_of(key: str) -> str | None:
        index = meta.get(f"tokenizer.ggml.{key}")
        return None if index is None else tokens[index]

    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": token_type == TOKEN_CONTROL}
        for i, (t, token_type) in enumerate(zip(tokens, types)) if token_type in (TOKEN_CONTROL, TOKEN_USER_DEFINED)
    }
    config = {
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": bool(meta.get("tokenizer.ggml.add_space_prefix", False)),
        "added_tokens_decoder": added,
        "bos_token": token_of("bos_token_id"),
        "eos_token": token_of("eos_token_id"),
        "pad_token": token_of("padding_token_id"),
        "unk_token": token_of("unknown_token_id"),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(meta.get(f"{ARCH}.context_length", 2048)),
        # The generic class: it takes tokenizer.json as written instead of rebuilding a pipeline.
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if "tokenizer.chat_template" in meta:
        config["chat_template"] = meta["tokenizer.chat_template"]
    return config


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


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, progress: bool = True) -> Path:
    """Convert `gguf_path` into the HF directory `out_dir` (replaced if present); returns it."""
    import gguf
    from safetensors.numpy import save_file

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    reader = gguf.GGUFReader(str(gguf_path))
    meta = read_metadata(reader)
    names = {t.name for t in reader.tensors}
    config = hf_config(meta, has_lm_head="output.weight" in names)
    tokenizer = build_tokenizer(meta)  # fail on an unsupported tokenizer before the slow part

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tensors = convert_tensors(reader, config, progress=progress)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        _write_json(tmp / "config.json", config)
        tokenizer.save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", tokenizer_config(meta))
        _write_json(tmp / "generation_config.json", {
            "bos_token_id": config["bos_token_id"],
            "eos_token_id": config["eos_token_id"],
            "pad_token_id": config["pad_token_id"],
        })
        _write_json(tmp / "gguf_source.json", {
            "file": gguf_path.name,
            "name": meta.get("general.name"),
            "file_type": meta.get("general.file_type"),
        })
        _relax_permissions(tmp)
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

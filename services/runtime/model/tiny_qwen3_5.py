"""Tiny random Qwen3.5 models in the HF layout, for tests (tiny.py does the dense families).

`vision=True` writes what users download: Qwen3_5ForConditionalGeneration, the text fields
in a nested `text_config`, the text stack under `model.language_model.*`, a (tiny) vision
tower under `model.visual.*` and a multi-token-prediction tensor under `mtp.*`, both of
which text generation skips. `vision=False` writes a qwen3_5_text directory
(Qwen3_5ForCausalLM, weights under `model.*`). The tokenizer is tiny.py's; the chat
template is a short one in Qwen3.5's forms (XML tool calls, thinking).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from inloop.services.runtime.model.tiny import (
    _DTYPES, SPECIAL_TOKENS, train_tokenizer, write_safetensors,
)

DEFAULT_LAYERS = ("linear_attention", "linear_attention", "linear_attention", "full_attention")
# A short chat template in Qwen3.5's forms: tools offered with the XML call format, and the
# generation prompt opening <think> unless enable_thinking is false (then an empty thought).
QWEN35_CHAT_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n\\n<tools>' }}{%- for tool in tools %}"
    "{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nIf you choose to call a function ONLY reply in the following format:\\n\\n"
    "<tool_call>\\n<function=example_function_name>\\n<parameter=example_parameter_1>\\nvalue_1\\n"
    "</parameter>\\n</function>\\n</tool_call><|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content"
    " + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- else %}{{- '<think>\\n' }}{%- endif %}{%- endif %}"
)


def tiny_text_config(vocab_size: int, layer_types: tuple[str, ...]) -> dict:
    return {
        "model_type": "qwen3_5_text", "vocab_size": vocab_size, "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": len(layer_types), "layer_types": list(layer_types),
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
        "linear_conv_kernel_dim": 4, "linear_key_head_dim": 16, "linear_value_head_dim": 24,
        "linear_num_key_heads": 2, "linear_num_value_heads": 4,
        "rms_norm_eps": 1e-6, "hidden_act": "silu", "max_position_embeddings": 2048,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                            "mrope_section": [2, 1, 1], "mrope_interleaved": True},
        "attention_bias": False, "attention_dropout": 0.0, "initializer_range": 0.02,
        "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 0,
        "torch_dtype": "float32",
    }


def tiny_vision_config(out_hidden: int) -> dict:
    return {"model_type": "qwen3_5_vision", "depth": 1, "hidden_size": 32, "intermediate_size": 64,
            "num_heads": 2, "in_channels": 3, "patch_size": 4, "temporal_patch_size": 2,
            "spatial_merge_size": 2, "out_hidden_size": out_hidden, "num_position_embeddings": 16,
            "hidden_act": "gelu_pytorch_tanh"}


def random_text_weights(cfg: dict, seed: int, prefix: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    kh, vh = cfg["linear_num_key_heads"], cfg["linear_num_value_heads"]
    kd, vd, kernel = cfg["linear_key_head_dim"], cfg["linear_value_head_dim"], cfg["linear_conv_kernel_dim"]
    conv_dim = 2 * kh * kd + vh * vd

    def mat(rows, cols):  # scaled so activations stay O(1) and logits are peaked
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def centred_norm(n):  # the zero-centred RMSNorm's weight (HF multiplies by 1 + w)
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {prefix + "embed_tokens.weight": rng.standard_normal((v, d)).astype(np.float32),
         prefix + "norm.weight": centred_norm(d)}
    for i, kind in enumerate(cfg["layer_types"]):
        p = f"{prefix}layers.{i}."
        w[p + "input_layernorm.weight"] = centred_norm(d)
        w[p + "post_attention_layernorm.weight"] = centred_norm(d)
        w[p + "mlp.gate_proj.weight"] = mat(f, d)
        w[p + "mlp.up_proj.weight"] = mat(f, d)
        w[p + "mlp.down_proj.weight"] = mat(d, f)
        if kind == "linear_attention":
            a = p + "linear_attn."
            # queries near the keys (as a trained layer reads what it wrote): the delta rule's
            # outputs stay O(1), not the near-cancelling sums of unrelated random unit vectors
            # that the gated RMSNorm would then blow up, float32 noise and all
            qkv = mat(conv_dim, d)
            qkv[:kh * kd] = qkv[kh * kd:2 * kh * kd] + 0.3 * mat(kh * kd, d)
            w[a + "in_proj_qkv.weight"] = qkv
            w[a + "in_proj_z.weight"] = mat(vh * vd, d)
            w[a + "in_proj_b.weight"] = mat(vh, d)
            w[a + "in_proj_a.weight"] = mat(vh, d)
            conv = (rng.standard_normal((conv_dim, 1, kernel)) / np.sqrt(kernel)).astype(np.float32)
            conv[:kh * kd] = conv[kh * kd:2 * kh * kd]
            w[a + "conv1d.weight"] = conv
            w[a + "dt_bias"] = (1.0 + 0.1 * rng.standard_normal(vh)).astype(np.float32)
            # slow decays (as trained models have): a state that remembers keeps outputs O(1)
            w[a + "A_log"] = np.log(rng.uniform(0.02, 0.5, vh)).astype(np.float32)
            w[a + "norm.weight"] = (1.0 + 0.1 * rng.standard_normal(vd)).astype(np.float32)
            w[a + "out_proj.weight"] = mat(d, vh * vd)
        else:
            a = p + "self_attn."
            w[a + "q_proj.weight"] = mat(2 * heads * hd, d)
            w[a + "k_proj.weight"] = mat(kv * hd, d)
            w[a + "v_proj.weight"] = mat(kv * hd, d)
            w[a + "o_proj.weight"] = mat(d, heads * hd)
            w[a + "q_norm.weight"] = centred_norm(hd)
            w[a + "k_norm.weight"] = centred_norm(hd)
    w["lm_head.weight"] = mat(v, d) * 4.0
    return w


def random_vision_weights(vc: dict, seed: int) -> dict[str, np.ndarray]:
    """A vision tower of the right names and shapes (never run by us; HF loads it)."""
    rng = np.random.default_rng(seed + 1000)
    h, i, m = vc["hidden_size"], vc["intermediate_size"], vc["spatial_merge_size"] ** 2
    shapes = {
        "patch_embed.proj.weight": (h, vc["in_channels"], vc["temporal_patch_size"], vc["patch_size"], vc["patch_size"]),
        "patch_embed.proj.bias": (h,), "pos_embed.weight": (vc["num_position_embeddings"], h),
        "merger.norm.weight": (h,), "merger.norm.bias": (h,),
        "merger.linear_fc1.weight": (h * m, h * m), "merger.linear_fc1.bias": (h * m,),
        "merger.linear_fc2.weight": (vc["out_hidden_size"], h * m), "merger.linear_fc2.bias": (vc["out_hidden_size"],),
    }
    for b in range(vc["depth"]):
        p = f"blocks.{b}."
        shapes.update({p + "norm1.weight": (h,), p + "norm1.bias": (h,), p + "norm2.weight": (h,),
                       p + "norm2.bias": (h,), p + "attn.qkv.weight": (3 * h, h), p + "attn.qkv.bias": (3 * h,),
                       p + "attn.proj.weight": (h, h), p + "attn.proj.bias": (h,),
                       p + "mlp.linear_fc1.weight": (i, h), p + "mlp.linear_fc1.bias": (i,),
                       p + "mlp.linear_fc2.weight": (h, i), p + "mlp.linear_fc2.bias": (h,)})
    return {"model.visual." + n: (0.02 * rng.standard_normal(s)).astype(np.float32) for n, s in shapes.items()}


def make_tiny_qwen3_5(out_dir: str | Path, layer_types: tuple[str, ...] = DEFAULT_LAYERS, vision: bool = True,
                      seed: int = 0, dtype: str = "float32", chat_template: str = QWEN35_CHAT_TEMPLATE) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    text = tiny_text_config(tok.get_vocab_size(), tuple(layer_types))
    text["torch_dtype"] = dtype
    if vision:
        cfg = {"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
               "text_config": text, "vision_config": tiny_vision_config(text["hidden_size"]),
               "image_token_id": 3, "video_token_id": 4, "vision_start_token_id": 5, "vision_end_token_id": 6,
               "tie_word_embeddings": False, "torch_dtype": dtype}
        weights = random_text_weights(text, seed, "model.language_model.")
        weights.update(random_vision_weights(cfg["vision_config"], seed))
        weights["mtp.norm.weight"] = np.zeros(text["hidden_size"], np.float32)
    else:
        cfg = {"architectures": ["Qwen3_5ForCausalLM"], **text}
        weights = random_text_weights(text, seed, "model.")
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 2}))
    added = {str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                      "normalized": False, "single_word": False} for i, t in enumerate(SPECIAL_TOKENS)}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "add_prefix_space": False,
        "model_max_length": 2048, "added_tokens_decoder": added, "chat_template": chat_template,
    }, indent=2))
    write_safetensors(out / "model.safetensors", weights, _DTYPES[dtype])
    return out

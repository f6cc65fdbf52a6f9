"""A random model shaped like Qwen3.5-0.8B (text stack), and its greedy parity on CUDA against
the numpy backend: the check gpu_check runs for the Gated DeltaNet kernels
(kernels/linear_attention.cu) at the real head sizes (16 heads of 128 x 128 state per layer).

Qwen3.5 has no CUDA graphs yet: both sides run Qwen35Model.forward op by op, so the ms/token
reported here is the op path's (a launch per op, host synchronization per token), not what a
decode graph would reach (the issue's <= 1.0 ms/token target is for that).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from bench.cuda.models import prompt_ids

# Qwen3.5-0.8B's text config (HF, qwen3_5_text): 24 layers, three Gated DeltaNet layers to one
# gated full-attention layer. Untied here only because the random writer draws an lm_head.
QWEN35_08B = {
    "model_type": "qwen3_5_text", "architectures": ["Qwen3_5ForCausalLM"], "vocab_size": 248320,
    "hidden_size": 1024, "intermediate_size": 3584, "num_hidden_layers": 24,
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"] * 6,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256,
    "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128, "linear_value_head_dim": 128,
    "linear_num_key_heads": 16, "linear_num_value_heads": 16, "rms_norm_eps": 1e-6, "hidden_act": "silu",
    "max_position_embeddings": 262144,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25},
    "attention_bias": False, "tie_word_embeddings": False, "bos_token_id": None, "eos_token_id": 248044,
    "torch_dtype": "bfloat16",
}


def make_qwen35_model(out_dir: str | Path, seed: int = 0) -> Path:
    """config.json + model.safetensors (bf16) of a random Qwen3.5-0.8B-shaped text model (the
    tiny Qwen3.5's weight recipe at this size); reuses a finished one."""
    from inloop.services.runtime.model.tiny import write_safetensors
    from inloop.services.runtime.model.tiny_qwen3_5 import random_text_weights

    out = Path(out_dir)
    done = out / ".complete"
    if done.is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", random_text_weights(QWEN35_08B, seed, "model."), "BF16")
    (out / "config.json").write_text(json.dumps(QWEN35_08B, indent=2))
    done.write_text("ok\n")
    return out


def qwen35_greedy_parity(model_dir: Path, be, prompt_len: int = 16, steps: int = 8, tol_scale: float = 3e-2) -> dict:
    """numpy vs CUDA, both through Qwen35Model.forward: teacher-forced logits and argmax at every
    step, then free-running greedy; a differing token is allowed only where numpy's top-2
    margin < tol (bf16 weights and GEMM inputs on CUDA, float32 on numpy)."""
    from inloop.services.runtime.backends.cpu.backend import NumpyBackend
    from inloop.services.runtime.model.architectures import build_model, read_config
    from inloop.services.runtime.model.weights import Weights

    cfg = read_config(model_dir)
    t = time.perf_counter()
    ref = build_model(cfg, NumpyBackend(), Weights(model_dir))
    ours = build_model(cfg, be, Weights(model_dir))
    load_s = time.perf_counter() - t
    ids = prompt_ids(cfg.vocab_size, prompt_len, seed=3)
    cap = prompt_len + steps + 8

    def fwd(model, toks, start, cache):
        b = model.backend
        positions = np.arange(start, start + len(toks), dtype=np.int32)
        lg = model.forward(b.ids(np.asarray(toks, np.int32)), b.ids(positions), cache)
        return np.asarray(b.to_host(lg))[-1]

    def margin(lg):
        a = np.partition(lg, -2)[-2:]
        return float(a[1] - a[0])

    def tol(lg):
        return tol_scale * max(1.0, float(np.abs(lg).max()))

    cache = ref.new_cache(cap)
    ref_logits = [fwd(ref, ids, 0, cache)]
    tokens = []
    for s in range(steps):
        tokens.append(int(np.argmax(ref_logits[-1])))
        ref_logits.append(fwd(ref, [tokens[-1]], prompt_len + s, cache))

    gcache = ours.new_cache(cap)
    t = time.perf_counter()
    got_logits = [fwd(ours, ids, 0, gcache)]
    prefill_ms = (time.perf_counter() - t) * 1e3
    t = time.perf_counter()
    got_logits += [fwd(ours, [tok], prompt_len + s, gcache) for s, tok in enumerate(tokens)]
    decode_ms = (time.perf_counter() - t) * 1e3 / max(1, len(tokens))
    max_rel, mismatches = 0.0, []
    for s, (g, r) in enumerate(zip(got_logits, ref_logits)):
        max_rel = max(max_rel, float(np.abs(g - r).max() / max(1.0, np.abs(r).max())))
        if int(np.argmax(g)) != int(np.argmax(r)):
            mismatches.append({"step": s, "numpy_margin": margin(r), "tol": tol(r), "allowed": margin(r) < tol(r)})

    gcache = ours.new_cache(cap)
    free = [int(np.argmax(fwd(ours, ids, 0, gcache)))]
    for s in range(steps - 1):
        free.append(int(np.argmax(fwd(ours, [free[-1]], prompt_len + s, gcache))))
    first_div = next((s for s, (a, b) in enumerate(zip(free, tokens)) if a != b), None)
    div = None
    if first_div is not None:
        m, tl = margin(ref_logits[first_div]), tol(ref_logits[first_div])
        div = {"step": first_div, "numpy_margin": m, "tol": tl, "allowed": m < tl}
    ok = all(x["allowed"] for x in mismatches) and (div is None or div["allowed"])
    return {"arch": cfg.arch, "steps": steps, "teacher_forced_argmax_mismatches": mismatches,
            "max_logit_err_rel_to_max": max_rel, "free_running_equal_tokens": first_div is None,
            "free_running_first_divergence": div, "ok": ok, "tokens_numpy": tokens, "tokens_cuda": free,
            "load_s": round(load_s, 2), "prompt_len": prompt_len, "op_path_prefill_ms": round(prefill_ms, 2),
            "op_path_decode_ms_per_token": round(decode_ms, 3)}

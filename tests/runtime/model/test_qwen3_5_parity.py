"""Qwen3.5 on the numpy backend against HF transformers (torch, CPU, float32): tiny random
models with both layer kinds in several patterns, with and without the vision wrapper.
HF's Gated DeltaNet runs its torch fallback here (chunked rule for prefill, recurrent for
decode), the reference the issue names."""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.tiny_qwen3_5 import make_tiny_qwen3_5
from tests.conftest import requires_reference
from tests.runtime.model.parity import assert_greedy_matches_generate, assert_prefill_and_decode_match

pytestmark = [requires_reference, pytest.mark.reference]
ATOL, RTOL = 1e-5, 1e-4
L, F = "linear_attention", "full_attention"
# (layer pattern, vision wrapper): HF's default 3:1 pattern, full first, alternating, two full
# last. (HF cannot run a model without any full-attention layer: its mask code needs one.)
CASES = {
    "3lin_1full_vision": ((L, L, L, F), True),
    "3lin_1full_text": ((L, L, L, F), False),
    "full_first_text": ((F, L, L), False),
    "alternating_vision": ((L, F, L, F, L), True),
    "2lin_2full_text": ((L, L, F, F), False),
}
PROMPT = "The receipt from Corner Market lists bread and milk"


def assert_close(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.shape == ref.shape, what
    excess = np.abs(ours - ref) - (ATOL + RTOL * np.abs(ref))
    worst = np.unravel_index(int(excess.argmax()), excess.shape)
    assert excess.max() <= 0, (f"{what}: |ours - ref| exceeds {ATOL} + {RTOL}*|ref| at {worst}: "
                               f"ours {ours[worst]:.7g} ref {ref[worst]:.7g}")


def load_hf(model_dir, vision: bool):
    import torch
    from transformers import AutoModelForCausalLM, Qwen3_5ForConditionalGeneration

    cls = Qwen3_5ForConditionalGeneration if vision else AutoModelForCausalLM
    model, info = cls.from_pretrained(model_dir, dtype=torch.float32, output_loading_info=True)
    # every tensor HF expects comes from the checkpoint (the vision tower too), none is left over
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    assert set(info["unexpected_keys"]) <= {"mtp.norm.weight"}, info
    return model.eval()


@pytest.fixture(scope="module")
def qwen35_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen3_5")
    return {name: make_tiny_qwen3_5(root / name, layers, vision=vision, seed=i)
            for i, (name, (layers, vision)) in enumerate(CASES.items())}


def _prefill_then_decode(engine, hf, ids: list[int], steps: int = 8) -> None:
    """Prefill and `steps` greedy decode steps on both sides: logits compared element-wise at
    each, greedy tokens equal."""
    assert_prefill_and_decode_match(engine, hf, steps=steps, ids=ids, close=assert_close, greedy_equal=True)


@pytest.mark.parametrize("case", list(CASES))
def test_prefill_and_8_decode_steps_match_hf(case, qwen35_models):
    engine = Engine.load(qwen35_models[case])
    hf = load_hf(qwen35_models[case], vision=CASES[case][1])
    _prefill_then_decode(engine, hf, engine.tokenizer.encode(PROMPT))


def test_a_prompt_longer_than_hf_chunk_matches(qwen35_models):
    """HF's chunked delta rule works in chunks of 64 tokens: a 150-token prompt crosses two."""
    engine = Engine.load(qwen35_models["3lin_1full_vision"])
    hf = load_hf(qwen35_models["3lin_1full_vision"], vision=True)
    ids = (engine.tokenizer.encode(PROMPT + " and coffee. " * 12) * 2)[:150]
    assert len(ids) == 150
    _prefill_then_decode(engine, hf, ids, steps=3)


@pytest.mark.parametrize("case", ["3lin_1full_vision", "full_first_text"])
def test_greedy_generation_matches_hf_generate(case, qwen35_models):
    engine = Engine.load(qwen35_models[case])
    assert_greedy_matches_generate(engine, load_hf(qwen35_models[case], vision=CASES[case][1]))

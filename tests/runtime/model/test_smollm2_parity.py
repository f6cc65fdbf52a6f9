"""The real default model: our greedy tokens equal HF transformers' loading the same GGUF file."""
from __future__ import annotations

import pytest

from inloop.services.contract.generation import ChatMessage, GenerateRequest, SamplingParams
from inloop.services.runtime.engine.engine import Engine
from inloop.services.runtime.model.default_model import find_gguf, pull_default
from tests.conftest import requires_reference

pytestmark = [requires_reference, pytest.mark.reference, pytest.mark.slow]

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a GPU does in one sentence.",
    "List three fruits that are red.",
    "What is 12 plus 30?",
    "Give me a tip for writing clean Python code.",
]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def smollm2():
    return Engine.load(pull_default())


@pytest.fixture(scope="module")
def hf_gguf():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf = find_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return model, tok


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_tokens_equal_hf_on_the_gguf(prompt, smollm2, hf_gguf):
    import torch
    model, tok = hf_gguf
    req = GenerateRequest(messages=[ChatMessage("user", prompt)], sampling=SamplingParams(max_tokens=NEW_TOKENS))
    ours = smollm2.generate(req)
    hf_ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                     tokenize=True, return_dict=False)
    if isinstance(hf_ids, dict):
        hf_ids = hf_ids["input_ids"]
    assert smollm2.prompt_ids(req) == list(hf_ids), "prompt tokenization differs from HF's"
    with torch.no_grad():
        out = model.generate(torch.tensor([hf_ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                             eos_token_id=sorted(smollm2.eos_ids), pad_token_id=2)
    assert ours.token_ids == out[0, len(hf_ids):].tolist()
    assert ours.completion_tokens >= 1 and ours.text.strip()

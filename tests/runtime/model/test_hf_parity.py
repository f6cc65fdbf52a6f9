"""Our numpy forward pass against HF transformers (torch, CPU, float32) on tiny random models."""
from __future__ import annotations

import numpy as np
import pytest

from bench.runtime_vs_hf import hf_forward
from inloop.services.runtime.engine.engine import Engine
from tests.conftest import ARCHS, requires_reference

pytestmark = [requires_reference, pytest.mark.reference]
REL_TOL = 1e-4


def _rel(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("arch", ARCHS)
def test_prefill_and_8_decode_steps_match_hf(arch, tiny_models):
    import torch
    from transformers import AutoModelForCausalLM

    engine = Engine.load(tiny_models[arch])
    hf = AutoModelForCausalLM.from_pretrained(tiny_models[arch], dtype=torch.float32).eval()
    ids = engine.tokenizer.encode("The receipt from Corner Market lists bread and milk")
    backend = engine.model.backend
    cache = engine.model.new_cache(len(ids) + 16)
    ours = engine.model.forward(backend.ids(np.array(ids, np.int32)),
                                backend.ids(np.arange(len(ids), dtype=np.int32)), cache, all_logits=True)
    cache.length = len(ids)
    with torch.no_grad():
        out, past = hf_forward(hf, torch.tensor([ids]))
    ref = out.logits[0].numpy()
    assert ours.shape == ref.shape
    assert _rel(ours, ref) < REL_TOL, f"prefill logits differ: rel {_rel(ours, ref):.2e}"

    token = int(ref[-1].argmax())
    for step in range(8):
        ours = engine.decode_one_token(token, cache)
        with torch.no_grad():
            out, past = hf_forward(hf, torch.tensor([[token]]), past)
        ref = out.logits[0, -1].numpy()
        assert _rel(ours, ref) < REL_TOL, f"decode step {step}: rel {_rel(ours, ref):.2e}"
        token = int(ref.argmax())


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_matches_hf_generate(arch, tiny_models):
    import torch
    from transformers import AutoModelForCausalLM

    from inloop.services.contract.generation import ChatMessage, GenerateRequest, SamplingParams

    engine = Engine.load(tiny_models[arch])
    hf = AutoModelForCausalLM.from_pretrained(tiny_models[arch], dtype=torch.float32).eval()
    req = GenerateRequest(messages=[ChatMessage("user", "What is 17 * 23?")],
                          sampling=SamplingParams(max_tokens=12))
    result = engine.generate(req)
    prompt = engine.prompt_ids(req)
    with torch.no_grad():
        ref = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                          eos_token_id=sorted(engine.eos_ids), pad_token_id=0)
    assert result.token_ids == ref[0, len(prompt):].tolist()


def test_bench_runs_hf_side_by_side_with_the_same_greedy_tokens(tiny_llama):
    """`inloop bench runtime`'s reference loop (bench.run_hf: prefill, then cached decode steps
    through hf_forward) on the CPU: both sides decode, and greedily agree on a tiny model."""
    from bench.runtime_vs_hf import bench

    r = bench(tiny_llama, "cpu", runs=2, prompt_tokens=8, new_tokens=4, with_hf=True, start_runs=0)
    assert r["hf"]["ttft_ms"] > 0 and r["ours"]["ttft_ms"] > 0
    assert r["same_greedy_tokens"] == [True, True], r

"""Our numpy forward pass against HF transformers (torch, CPU, float32) on tiny random models."""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.runtime.engine.engine import Engine
from tests.conftest import ARCHS, requires_reference
from tests.runtime.model.parity import assert_greedy_matches_generate, assert_prefill_and_decode_match, hf_model

pytestmark = [requires_reference, pytest.mark.reference]
REL_TOL = 1e-4


def _rel(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _close_rel(ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    assert _rel(ours, ref) < REL_TOL, f"{what} differ: rel {_rel(ours, ref):.2e}"


@pytest.mark.parametrize("arch", ARCHS)
def test_prefill_and_8_decode_steps_match_hf(arch, tiny_models):
    engine = Engine.load(tiny_models[arch])
    assert_prefill_and_decode_match(engine, hf_model(tiny_models[arch]),
                                    "The receipt from Corner Market lists bread and milk", close=_close_rel)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_matches_hf_generate(arch, tiny_models):
    engine = Engine.load(tiny_models[arch])
    assert_greedy_matches_generate(engine, hf_model(tiny_models[arch]), question="What is 17 * 23?")


def test_bench_runs_hf_side_by_side_with_the_same_greedy_tokens(tiny_llama):
    """`inloop bench runtime`'s reference loop (bench.run_hf: prefill, then cached decode steps
    through hf_forward) on the CPU: both sides decode, and greedily agree on a tiny model."""
    from bench.runtime_vs_hf import bench

    r = bench(tiny_llama, "cpu", runs=2, prompt_tokens=8, new_tokens=4, with_hf=True, start_runs=0)
    assert r["hf"]["ttft_ms"] > 0 and r["ours"]["ttft_ms"] > 0
    assert r["same_greedy_tokens"] == [True, True], r

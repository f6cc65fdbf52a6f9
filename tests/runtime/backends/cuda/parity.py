"""Parity helpers shared by the GPU tests: bf16 rounding, tolerance checks, divergence reports."""
from __future__ import annotations

import json
import os

import numpy as np

# the last row's logits of a forward call on any backend, and numpy's free-running greedy
# reference: gpu_check's bench code, so the tests and the GPU run compute them one way
from bench.cuda.benchmark import last_row_logits as last_logits  # noqa: F401 - used by the test modules
from bench.cuda.benchmark import numpy_greedy_reference as numpy_greedy  # noqa: F401


def bf16(a) -> np.ndarray:
    """Round float32 to the nearest bf16 (ties to even), returned as float32."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.astype(np.uint32).view(np.float32)


def assert_close(got, ref, rtol: float, atol: float, what: str = "") -> None:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} vs {ref.shape}"
    err = np.abs(got - ref)
    bound = atol + rtol * np.abs(ref)
    bad = err > bound
    if bad.any():
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())}/{bad.size} outside atol={atol} rtol={rtol}; worst at {i}: "
                             f"got {got[i]:.6g} ref {ref[i]:.6g} (max abs err {err.max():.3g})")


def margin_tolerance(logits: np.ndarray) -> float:
    """How far apart two logits must be for bf16 weights/KV to keep their order: a few bf16 ulps
    of the logit scale."""
    return 3e-2 * max(1.0, float(np.abs(logits).max()))


def top2_margin(logits: np.ndarray) -> float:
    a = np.partition(logits, -2)[-2:]
    return float(a[1] - a[0])


def graph_greedy(runner, prompt, steps: int, cache) -> list[int]:
    """Free-running greedy through a GraphRunner: the prefill graph samples the first token,
    the decode graph the rest."""
    out = [runner.prefill_sample(prompt, 0, cache)[0]]
    for step in range(steps - 1):
        out.append(runner.decode_sample(out[-1], len(prompt) + step, cache)[0])
    return out


def assert_greedy_agrees(got: list[int], tokens: list[int], ref_logits, label: str, note: dict) -> None:
    """Greedy tokens equal numpy's, or they part first where numpy's top-2 margin is within
    bf16's tolerance (then reported with `note`)."""
    first = next((i for i, (a, b) in enumerate(zip(got, tokens)) if a != b), None)
    if first is not None:
        m, tol = top2_margin(ref_logits[first]), margin_tolerance(ref_logits[first])
        assert m < tol, f"{label}: greedy token {first} differs ({got[first]} vs {tokens[first]}), numpy margin {m:.4g}"
        report({**note, "step": first, "numpy_margin": m, "tol": tol})


def report(record: dict) -> None:
    """Append a parity note (e.g. an allowed greedy divergence) to $INLOOP_PARITY_REPORT."""
    path = os.environ.get("INLOOP_PARITY_REPORT")
    print("PARITY", json.dumps(record))
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def assert_teacher_forced(gpu_model, prompt, tokens: list[int], ref_logits, capacity: int, test: str, note: dict) -> None:
    """Feed the prompt, then numpy's greedy tokens one by one, through `gpu_model`: every step's
    logits within the CUDA tolerance of numpy's, the argmax equal wherever numpy's top-2 margin
    is clear (a differing argmax inside the margin is reported with `note`)."""
    cache = gpu_model.new_cache(capacity)
    got = [last_logits(gpu_model, prompt, 0, cache)]
    for step, tok in enumerate(tokens):
        got.append(last_logits(gpu_model, [tok], len(prompt) + step, cache))
    for step, (g, r) in enumerate(zip(got, ref_logits)):
        tol = margin_tolerance(r)
        assert_close(g, r, 2e-2, tol, f"{test}: logits at step {step}")
        if int(np.argmax(g)) != int(np.argmax(r)):
            assert top2_margin(r) < tol, f"{test} step {step}: argmax differs with numpy margin {top2_margin(r)}"
            report({"test": test, **note, "step": step, "numpy_margin": top2_margin(r), "tol": tol})

"""Parity helpers shared by the GPU tests: bf16 rounding, tolerance checks, divergence reports."""
from __future__ import annotations

import json
import os

import numpy as np


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


def report(record: dict) -> None:
    """Append a parity note (e.g. an allowed greedy divergence) to $INLOOP_PARITY_REPORT."""
    path = os.environ.get("INLOOP_PARITY_REPORT")
    print("PARITY", json.dumps(record))
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

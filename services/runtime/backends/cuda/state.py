"""The host mirror of `struct DecodeState` (kernels/common.cuh): same fields, same offsets."""
from __future__ import annotations

import numpy as np

from inloop.services.contract.step_runner import DeviceSampling

DECODE_STATE = np.dtype({
    "names": ["token", "pos", "rng_step", "top_k", "temperature", "top_p", "seed_lo", "seed_hi",
              "logprob", "entropy", "margin", "flags", "k_cache", "v_cache", "capacity", "rows", "pad"],
    "formats": ["<i4", "<i4", "<u4", "<i4", "<f4", "<f4", "<u4", "<u4",
                "<f4", "<f4", "<f4", "<i4", "<u8", "<u8", "<i4", "<i4", ("<i4", 2)],
    "offsets": [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 56, 64, 68, 72],
    "itemsize": 80,
})
FLAG_ADVANCE = 1  # the sampler advances pos and rng_step after writing the token

# struct SampleStats (kernels/sample.cu): m, z, s, top1, top2, gkey, top1_idx, gidx
SAMPLE_STATS_BYTES = 32


def new_state() -> np.ndarray:
    s = np.zeros(1, DECODE_STATE)
    s["top_p"] = 1.0
    return s


def set_sampling(s: np.ndarray, sampling: DeviceSampling) -> None:
    """A request's settings, seed and token index into the state the sampler kernels read."""
    s["temperature"] = sampling.temperature
    s["top_k"] = sampling.top_k
    s["top_p"] = sampling.top_p
    seed = sampling.seed & ((1 << 64) - 1)
    s["seed_lo"] = seed & 0xFFFFFFFF
    s["seed_hi"] = seed >> 32
    s["rng_step"] = sampling.step & 0xFFFFFFFF

"""The rows of a scaled RoPE's cos/sin table, computed on the host as the numpy backend does.

The CUDA kernels read RoPE's (cos, sin) pairs from a table with one row per position
(kernels/rope.cuh lane_table_cs); plain RoPE's table is built on the device from theta
(rope.cu rope_table). A scaled RoPE's rows come from here: model/rope.py's frequencies and
the numpy backend's own rope_cos_sin, so the graphs rotate by exactly the reference's values.

Linear, llama3 and yarn fix their frequencies once, so a row depends on its position alone.
Dynamic RoPE takes them from the length of each call (HF: max(position_ids) + 1), so a
position has two kinds of row: a decode step at p rotates by the frequencies of length p + 1
(`rows`, the decode graph's table), and a prefill call of positions [start, end) rotates all
its rows by those of length `end` (`call_rows`, written into the prefill graphs' own table
before each call).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inloop.services.runtime.backends.cpu.backend import rope_cos_sin
from inloop.services.runtime.model.rope import RopeScaling, rope_inv_freq


@dataclass(frozen=True)
class HostRope:
    """A scaled RoPE of one head size: its table rows, as host arrays f32 [n, head_dim/2, 2]."""

    rope: RopeScaling
    head_dim: int

    @property
    def dynamic(self) -> bool:
        return self.rope.rope_type == "dynamic"

    def frequencies(self, length: int | None = None) -> tuple[np.ndarray, float]:
        """(inv_freq, attention_scaling) of a call whose longest sequence has `length` positions
        (model/rope.py Rotary.frequencies: dynamic keeps the plain ones up to its original length)."""
        if self.dynamic and (length or 0) <= self.rope.original_max_position:
            return rope_inv_freq(RopeScaling(theta=self.rope.theta), self.head_dim)
        return rope_inv_freq(self.rope, self.head_dim, length)

    def _cs(self, positions: np.ndarray, freqs: tuple[np.ndarray, float]) -> np.ndarray:
        cos, sin = rope_cos_sin(positions, self.head_dim, self.rope.theta, freqs[0], freqs[1])
        return np.stack([cos, sin], axis=-1).astype(np.float32)

    def rows(self, first: int, n: int) -> np.ndarray:
        """Rows [first, first + n) as a decode step at each position rotates it."""
        positions = np.arange(first, first + n)
        if not self.dynamic:
            return self._cs(positions, self.frequencies())
        out = np.empty((n, self.head_dim // 2, 2), np.float32)
        plain = positions + 1 <= self.rope.original_max_position
        if plain.any():
            out[plain] = self._cs(positions[plain], self.frequencies())
        for i in np.flatnonzero(~plain):  # past the original length: each length its own frequencies
            out[i] = self._cs(positions[i:i + 1], self.frequencies(int(positions[i]) + 1))[0]
        return out

    def call_rows(self, start: int, n: int) -> np.ndarray:
        """Rows [start, start + n) as one call of those positions rotates them (a prefill chunk)."""
        return self._cs(np.arange(start, start + n), self.frequencies(start + n))

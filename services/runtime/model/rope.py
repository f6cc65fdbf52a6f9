"""RoPE frequencies as HF transformers computes them (modeling_rope_utils.py), in numpy.

    rope = RopeScaling.from_hf(config_json, default_theta=10000.0)
    inv_freq, attention_scaling = rope_inv_freq(rope, head_dim, seq_len)
    cos = cos(pos * inv_freq) * attention_scaling          # and sin alike

The types, each as HF writes it:
  default  base^(-2i/d)
  linear   default / factor (position interpolation)
  dynamic  NTK: the base grows with the current length once it passes max_position_embeddings;
           HF recomputes it from max(position_ids) + 1 of every forward call, and so do we
           (`Rotary.frequencies`), so keys already in the cache keep the frequencies they had.
  yarn     a ramp between interpolated and extrapolated frequencies, and cos/sin scaled by
           `attention_factor` (0.1 ln(factor) + 1 unless given)
  llama3   low frequencies / factor, high ones kept, a smooth ramp between

A config names them in the classic `rope_scaling` dict ({"type" or "rope_type", "factor", ...},
`rope_theta` beside it) or in transformers 5's `rope_parameters` ({"rope_type", "rope_theta",
...}); `rope_scaling` wins where both are present, as in HF.

Every step is float32 in the order torch takes it, so the frequencies match to the ulp; powers
are taken in float64 and rounded once (numpy's float32 power is off by an ulp for some inputs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")
_F32 = np.float32


class RopeConfigError(ValueError):
    """A RoPE setting this runtime does not implement; the message says which and what runs."""


@dataclass(frozen=True)
class RopeScaling:
    rope_type: str = "default"
    theta: float = 10000.0
    factor: float = 1.0
    # the pretraining length: llama3 / yarn read it from the scaling dict, dynamic uses
    # max_position_embeddings (HF's `config.max_position_embeddings`)
    original_max_position: int = 2048
    low_freq_factor: float = 1.0        # llama3
    high_freq_factor: float = 4.0       # llama3
    beta_fast: float = 32.0             # yarn
    beta_slow: float = 1.0              # yarn
    attention_factor: float | None = None  # yarn: given, or derived from factor / mscale
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True               # yarn: round the correction range to whole dims

    @property
    def scaled(self) -> bool:
        return self.rope_type != "default"

    @classmethod
    def from_hf(cls, hf: dict, default_theta: float = 10000.0) -> "RopeScaling":
        """From an HF config.json dict (either form); raises RopeConfigError for what we cannot run."""
        params = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
        if not isinstance(params, dict) or any(isinstance(v, dict) for v in params.values()):
            raise RopeConfigError(f"per-layer-type RoPE parameters {params!r} are not supported")
        rope_type = params.get("rope_type", params.get("type")) or "default"
        theta = float(params.get("rope_theta", hf.get("rope_theta", default_theta)))
        if rope_type not in ROPE_TYPES:
            raise RopeConfigError(
                f"RoPE type {rope_type!r} is not supported: inloop runs {', '.join(ROPE_TYPES)}")
        partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
        if partial not in (None, 1, 1.0):
            raise RopeConfigError(f"partial_rotary_factor {partial} is not supported for this architecture")
        max_position = int(hf.get("max_position_embeddings", 2048))
        if rope_type == "default":
            return cls(theta=theta, original_max_position=max_position)
        if rope_type in ("llama3", "yarn"):
            # HF: a top-level original_max_position_embeddings (Phi-3 style) has priority
            original = hf.get("original_max_position_embeddings") or params.get("original_max_position_embeddings")
            original = int(original or max_position)
        else:
            original = max_position
        factor = params.get("factor")
        if factor is None:
            if rope_type != "yarn":
                raise RopeConfigError(f"RoPE type {rope_type!r} needs a 'factor'")
            factor = max_position / original  # HF's yarn fallback (DeepSeek-V3 style)

        def opt(key):
            value = params.get(key)
            return None if value is None else float(value)

        return cls(
            rope_type=rope_type, theta=theta, factor=float(factor), original_max_position=original,
            low_freq_factor=float(params.get("low_freq_factor", 1.0)),
            high_freq_factor=float(params.get("high_freq_factor", 4.0)),
            beta_fast=float(params.get("beta_fast") or 32), beta_slow=float(params.get("beta_slow") or 1),
            attention_factor=opt("attention_factor"), mscale=opt("mscale"), mscale_all_dim=opt("mscale_all_dim"),
            # HF reads truncate from the config's rope parameters, default True
            truncate=bool(params.get("truncate", True)),
        )

    def context_length(self, max_position: int) -> int:
        """How many positions the scaled model serves. linear / dynamic configs keep the
        pretraining length in max_position_embeddings and stretch it by `factor`; yarn names the
        pretraining length apart; llama3 configs already state the long one."""
        if self.rope_type in ("linear", "dynamic"):
            return int(max_position * self.factor)
        if self.rope_type == "yarn":
            return max(max_position, int(self.original_max_position * self.factor))
        return max_position


def _pow(base, exponents: np.ndarray) -> np.ndarray:
    """float32 base ** float32 exponents, rounded once from float64 (as torch's result is)."""
    return (np.float64(_F32(base)) ** exponents.astype(np.float64)).astype(_F32)


def _exponents(dim: int) -> np.ndarray:
    """torch.arange(0, dim, 2, dtype=int64).float() / dim, in float32."""
    return np.arange(0, dim, 2, dtype=np.int64).astype(_F32) / _F32(dim)


def default_inv_freq(theta: float, dim: int) -> np.ndarray:
    return (_F32(1.0) / _pow(theta, _exponents(dim))).astype(_F32)


def _llama3(rope: RopeScaling, dim: int) -> np.ndarray:
    inv_freq = default_inv_freq(rope.theta, dim)
    factor, low, high, old = rope.factor, rope.low_freq_factor, rope.high_freq_factor, rope.original_max_position
    low_freq_wavelen = _F32(old / low)
    high_freq_wavelen = _F32(old / high)
    wavelen = _F32(2 * math.pi) / inv_freq
    llama = np.where(wavelen > low_freq_wavelen, inv_freq / _F32(factor), inv_freq).astype(_F32)
    smooth = (_F32(old) / wavelen - _F32(low)) / _F32(high - low)
    smoothed = (_F32(1) - smooth) * llama / _F32(factor) + smooth * llama
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, llama).astype(_F32)


def _dynamic(rope: RopeScaling, dim: int, seq_len: int) -> np.ndarray:
    # HF: seq_len is a tensor here, so everything after the first product is float32
    seq = _F32(max(seq_len, rope.original_max_position))
    ratio = _F32(rope.factor) * seq / _F32(rope.original_max_position) - _F32(rope.factor - 1)
    growth = _F32(np.float64(ratio) ** (dim / (dim - 2)))  # torch keeps a Python exponent in double
    base = _F32(rope.theta) * growth
    return (_F32(1.0) / _pow(base, _exponents(dim))).astype(_F32)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn(rope: RopeScaling, dim: int) -> tuple[np.ndarray, float]:
    factor, base = rope.factor, rope.theta
    attention = rope.attention_factor
    if attention is None:
        if rope.mscale and rope.mscale_all_dim:
            attention = float(yarn_mscale(factor, rope.mscale) / yarn_mscale(factor, rope.mscale_all_dim))
        else:
            attention = yarn_mscale(factor)

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(rope.original_max_position / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # HF: prevent a zero-width ramp
    pos_freqs = _pow(base, _exponents(dim))
    extrapolation = _F32(1.0) / pos_freqs
    interpolation = _F32(1.0) / (_F32(factor) * pos_freqs)
    ramp = np.clip((np.arange(dim // 2, dtype=_F32) - _F32(low)) / _F32(high - low), 0, 1).astype(_F32)
    extrapolation_factor = _F32(1) - ramp
    inv_freq = interpolation * (_F32(1) - extrapolation_factor) + extrapolation * extrapolation_factor
    return inv_freq.astype(_F32), attention


def rope_inv_freq(rope: RopeScaling, head_dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    """(inv_freq float32 [head_dim/2], attention_scaling) for a call whose longest sequence is
    `seq_len` positions (only `dynamic` looks at it)."""
    if rope.rope_type == "default":
        return default_inv_freq(rope.theta, head_dim), 1.0
    if rope.rope_type == "linear":
        return (default_inv_freq(rope.theta, head_dim) / _F32(rope.factor)).astype(_F32), 1.0
    if rope.rope_type == "llama3":
        return _llama3(rope, head_dim), 1.0
    if rope.rope_type == "dynamic":
        return _dynamic(rope, head_dim, seq_len or 0), 1.0
    if rope.rope_type == "yarn":
        return _yarn(rope, head_dim)
    raise RopeConfigError(f"RoPE type {rope.rope_type!r} is not supported")


class Rotary:
    """The frequencies the forward pass hands the backend's rope op, per call.

    None for the default type: backends then compute cos/sin from theta as they always have.
    Static scalings are computed once; dynamic ones from the call's positions, as HF does
    (max(position_ids) + 1 over the whole call)."""

    def __init__(self, rope: RopeScaling, head_dim: int):
        self.rope, self.head_dim = rope, head_dim
        self._static = None
        if rope.scaled and rope.rope_type != "dynamic":
            self._static = rope_inv_freq(rope, head_dim)

    def frequencies(self, host_positions) -> tuple[np.ndarray, float] | None:
        """(inv_freq, attention_scaling) or None; `host_positions` is a callable giving the
        positions as a host array (only the dynamic type calls it)."""
        if not self.rope.scaled:
            return None
        if self._static is not None:
            return self._static
        seq_len = int(np.max(host_positions())) + 1
        if seq_len <= self.rope.original_max_position:
            return default_inv_freq(self.rope.theta, self.head_dim), 1.0
        return rope_inv_freq(self.rope, self.head_dim, seq_len)

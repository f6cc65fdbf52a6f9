"""Model configuration read from an HF-layout `config.json`.

One frozen dataclass for the three supported decoder families:
  llama  : plain attention, optional `attention_bias`
  qwen2  : bias on the q/k/v projections
  qwen3  : RMSNorm on each q and k head before RoPE, explicit head_dim
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3")


class ModelLoadError(ValueError):
    """A model directory that cannot be loaded; the message says what to fix."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position: int
    tie_word_embeddings: bool
    attention_bias: bool
    qk_norm: bool
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str = "float32"
    # derived
    q_size: int = field(init=False)    # num_heads * head_dim
    kv_size: int = field(init=False)   # num_kv_heads * head_dim
    qkv_size: int = field(init=False)  # rows of the fused q|k|v projection
    group_size: int = field(init=False)  # query heads per kv head (GQA)

    def __post_init__(self) -> None:
        if self.arch not in SUPPORTED_ARCHS:
            raise ModelLoadError(
                f"unsupported architecture {self.arch!r}: inloop runs {', '.join(SUPPORTED_ARCHS)}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ModelLoadError(
                f"num_attention_heads ({self.num_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ModelLoadError(f"head_dim must be even for RoPE, got {self.head_dim}")
        object.__setattr__(self, "q_size", self.num_heads * self.head_dim)
        object.__setattr__(self, "kv_size", self.num_kv_heads * self.head_dim)
        object.__setattr__(self, "qkv_size", self.q_size + 2 * self.kv_size)
        object.__setattr__(self, "group_size", self.num_heads // self.num_kv_heads)

    @classmethod
    def from_hf(cls, hf: dict) -> "ModelConfig":
        arch = hf.get("model_type")
        if arch not in SUPPORTED_ARCHS:
            archs = hf.get("architectures") or []
            raise ModelLoadError(
                f"unsupported model_type {arch!r} (architectures {archs}): "
                f"inloop runs {', '.join(SUPPORTED_ARCHS)}"
            )
        rope_scaling = hf.get("rope_scaling")
        if rope_scaling and rope_scaling.get("rope_type", rope_scaling.get("type")) not in (None, "default"):
            raise ModelLoadError(f"rope_scaling {rope_scaling} is not supported yet")
        try:
            num_heads = int(hf["num_attention_heads"])
            hidden = int(hf["hidden_size"])
            eos = hf.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
            rope_params = hf.get("rope_parameters") or {}
            return cls(
                arch=arch,
                vocab_size=int(hf["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(hf["intermediate_size"]),
                num_layers=int(hf["num_hidden_layers"]),
                num_heads=num_heads,
                num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
                head_dim=int(hf.get("head_dim") or hidden // num_heads),
                rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                rope_theta=float(hf.get("rope_theta", rope_params.get("rope_theta", 10000.0))),
                max_position=int(hf.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                attention_bias=True if arch == "qwen2" else bool(hf.get("attention_bias", False)),
                qk_norm=arch == "qwen3",
                bos_token_id=hf.get("bos_token_id"),
                eos_token_ids=eos_ids,
                torch_dtype=str(hf.get("torch_dtype") or hf.get("dtype") or "float32"),
            )
        except KeyError as exc:
            raise ModelLoadError(f"config.json is missing the field {exc.args[0]!r}") from None

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "ModelConfig":
        path = Path(model_dir) / "config.json"
        if not path.is_file():
            raise ModelLoadError(f"{path} not found: a model directory needs an HF config.json")
        return cls.from_hf(json.loads(path.read_text()))

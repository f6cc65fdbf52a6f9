"""Model configuration read from an HF-layout `config.json`.

One frozen dataclass for the supported decoder families:
  llama   : plain attention, optional `attention_bias`
  qwen2   : bias on the q/k/v projections
  qwen3   : RMSNorm on each q and k head before RoPE, explicit head_dim
  smollm3 : llama with RoPE skipped on some layers (`no_rope_layers`: every fourth by default)
Each may scale its RoPE (rope.py: linear, dynamic, yarn, llama3).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from inloop.services.runtime.model.rope import RopeConfigError, RopeScaling

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "smollm3")
# the hybrid models (qwen3_5_config.py), named here for the messages of an unsupported one
HYBRID_NOTE = "qwen3_5 and qwen3_5_text (numpy backend)"
# rope_theta where a config leaves it out: the config class's `default_theta` in transformers
_DEFAULT_THETA = {"smollm3": 2_000_000.0}


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
    rope: RopeScaling = field(default_factory=RopeScaling)
    use_rope: tuple[bool, ...] = ()    # per layer; () = every layer (smollm3 skips some)
    # derived
    q_size: int = field(init=False)    # num_heads * head_dim
    kv_size: int = field(init=False)   # num_kv_heads * head_dim
    qkv_size: int = field(init=False)  # rows of the fused q|k|v projection
    group_size: int = field(init=False)  # query heads per kv head (GQA)

    def __post_init__(self) -> None:
        if self.arch not in SUPPORTED_ARCHS:
            raise ModelLoadError(
                f"unsupported architecture {self.arch!r}: inloop runs {', '.join(SUPPORTED_ARCHS)}, {HYBRID_NOTE}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ModelLoadError(
                f"num_attention_heads ({self.num_heads}) is not a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ModelLoadError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if not self.use_rope:
            object.__setattr__(self, "use_rope", (True,) * self.num_layers)
        if len(self.use_rope) != self.num_layers:
            raise ModelLoadError(f"no_rope_layers has {len(self.use_rope)} entries for {self.num_layers} layers")
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
                f"inloop runs {', '.join(SUPPORTED_ARCHS)}, {HYBRID_NOTE}"
            )
        try:
            rope = RopeScaling.from_hf(hf, _DEFAULT_THETA.get(arch, 10000.0))
        except RopeConfigError as exc:
            raise ModelLoadError(str(exc)) from None
        if hf.get("mlp_bias"):
            raise ModelLoadError(f"{arch} with mlp_bias is not supported (no bias on the MLP projections)")
        try:
            num_heads = int(hf["num_attention_heads"])
            hidden = int(hf["hidden_size"])
            num_layers = int(hf["num_hidden_layers"])
            eos = hf.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
            use_rope = _use_rope(arch, hf, num_layers)
            if _has_sliding_layers(arch, hf, use_rope):
                raise ModelLoadError(f"{arch} with sliding-window layers (use_sliding_window) is not supported: "
                                     "inloop runs full attention only")
            return cls(
                arch=arch,
                vocab_size=int(hf["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(hf["intermediate_size"]),
                num_layers=num_layers,
                num_heads=num_heads,
                num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
                head_dim=int(hf.get("head_dim") or hidden // num_heads),
                rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                rope_theta=rope.theta,
                max_position=rope.context_length(int(hf.get("max_position_embeddings", 2048))),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", arch == "smollm3")),
                attention_bias=True if arch == "qwen2" else bool(hf.get("attention_bias", False)),
                qk_norm=arch == "qwen3",
                bos_token_id=hf.get("bos_token_id"),
                eos_token_ids=eos_ids,
                torch_dtype=str(hf.get("torch_dtype") or hf.get("dtype") or "float32"),
                rope=rope,
                use_rope=use_rope,
            )
        except KeyError as exc:
            raise ModelLoadError(f"config.json is missing the field {exc.args[0]!r}") from None

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> "ModelConfig":
        path = Path(model_dir) / "config.json"
        if not path.is_file():
            raise ModelLoadError(f"{path} not found: a model directory needs an HF config.json")
        return cls.from_hf(json.loads(path.read_text()))


def _use_rope(arch: str, hf: dict, num_layers: int) -> tuple[bool, ...]:
    """smollm3's `no_rope_layers` (1 = this layer uses RoPE), or every `no_rope_layer_interval`-th
    layer without it, as SmolLM3Config builds it; every layer for the other families."""
    if arch != "smollm3":
        return (True,) * num_layers
    flags = hf.get("no_rope_layers")
    if flags is None:
        interval = int(hf.get("no_rope_layer_interval", 4))
        flags = [int((i + 1) % interval != 0) for i in range(num_layers)]
    return tuple(bool(f) for f in flags)


def _has_sliding_layers(arch: str, hf: dict, use_rope: tuple[bool, ...]) -> bool:
    """Whether HF would run any layer with a sliding window (its config's own rule per family)."""
    if "sliding_attention" in (hf.get("layer_types") or ()):
        return True
    if not (hf.get("use_sliding_window") and hf.get("sliding_window")):
        return False
    if arch == "smollm3":  # only the layers without RoPE slide
        return not all(use_rope)
    if arch in ("qwen2", "qwen3"):  # layers from max_window_layers on slide
        return int(hf.get("max_window_layers", len(use_rope))) < len(use_rope)
    return False

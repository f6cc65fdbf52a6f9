"""Qwen3.5's configuration: a hybrid decoder of Gated DeltaNet (linear attention) layers and
gated full-attention layers, read from an HF `config.json`.

Two layouts reach us:
  qwen3_5       the checkpoints users download (Qwen3_5ForConditionalGeneration): a vision
                tower beside the text stack; the text fields sit in a nested `text_config`
                and the text weights under `model.language_model.*`.
  qwen3_5_text  a text-only directory (Qwen3_5ForCausalLM): the fields at the top level and
                the weights under `model.*`.
Defaults are HF's (configuration_qwen3_5.py) for fields a config leaves out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from inloop.services.runtime.model.config import ModelLoadError

HYBRID_ARCHS = ("qwen3_5", "qwen3_5_text")
LINEAR, FULL = "linear_attention", "full_attention"


def _layer_types(text: dict, num_layers: int) -> tuple[str, ...]:
    types = text.get("layer_types")
    if types is None:  # HF's default pattern: every `full_attention_interval`-th layer is full
        interval = int(text.get("full_attention_interval", 4))
        types = [LINEAR if (i + 1) % interval else FULL for i in range(num_layers)]
    if len(types) < num_layers or any(t not in (LINEAR, FULL) for t in types[:num_layers]):
        raise ModelLoadError(f"layer_types must name {num_layers} layers, each {LINEAR!r} or {FULL!r}: {types}")
    return tuple(types[:num_layers])


@dataclass(frozen=True)
class Qwen35Config:
    arch: str                      # qwen3_5 or qwen3_5_text: which layout the directory has
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    layer_types: tuple[str, ...]
    # gated full attention
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rotary_dim: int                # the first head_dim * partial_rotary_factor dims rotate
    rope_theta: float
    # Gated DeltaNet
    conv_kernel: int
    linear_k_heads: int
    linear_v_heads: int
    linear_k_dim: int
    linear_v_dim: int
    rms_norm_eps: float
    max_position: int
    tie_word_embeddings: bool
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str = "float32"
    # derived
    q_size: int = field(init=False)          # num_heads * head_dim (the gate has as many)
    kv_size: int = field(init=False)
    conv_dim: int = field(init=False)        # q | k | v channels of the linear layers' conv
    full_layers: tuple[int, ...] = field(init=False)
    linear_layers: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ModelLoadError(f"num_attention_heads ({self.num_heads}) is not a multiple of "
                                 f"num_key_value_heads ({self.num_kv_heads})")
        if self.linear_v_heads % self.linear_k_heads:
            raise ModelLoadError(f"linear_num_value_heads ({self.linear_v_heads}) is not a multiple of "
                                 f"linear_num_key_heads ({self.linear_k_heads})")
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.head_dim:
            raise ModelLoadError(f"the rotary part of head_dim {self.head_dim} must be even and "
                                 f"positive, got {self.rotary_dim}")
        if self.conv_kernel < 1:
            raise ModelLoadError(f"linear_conv_kernel_dim must be >= 1, got {self.conv_kernel}")
        set_ = object.__setattr__
        set_(self, "q_size", self.num_heads * self.head_dim)
        set_(self, "kv_size", self.num_kv_heads * self.head_dim)
        set_(self, "conv_dim", 2 * self.linear_k_heads * self.linear_k_dim + self.linear_v_heads * self.linear_v_dim)
        set_(self, "full_layers", tuple(i for i, t in enumerate(self.layer_types) if t == FULL))
        set_(self, "linear_layers", tuple(i for i, t in enumerate(self.layer_types) if t == LINEAR))

    @classmethod
    def from_hf(cls, hf: dict) -> "Qwen35Config":
        arch = hf.get("model_type")
        if arch not in HYBRID_ARCHS:
            raise ModelLoadError(f"not a Qwen3.5 config: model_type {arch!r}")
        text = hf.get("text_config") or {} if arch == "qwen3_5" else hf
        if arch == "qwen3_5" and not text:
            raise ModelLoadError("a qwen3_5 config.json needs its `text_config` (the language model's fields)")
        try:
            return cls._from_text(arch, text, hf)
        except KeyError as exc:
            where = "text_config" if arch == "qwen3_5" else "config.json"
            raise ModelLoadError(f"{where} is missing the field {exc.args[0]!r}") from None

    @classmethod
    def _from_text(cls, arch: str, text: dict, top: dict) -> "Qwen35Config":
        if text.get("hidden_act", "silu") != "silu":
            raise ModelLoadError(f"hidden_act {text['hidden_act']!r}: Qwen3.5 layers here use silu")
        if text.get("attention_bias"):
            raise ModelLoadError("attention_bias=true is not supported for qwen3_5 (no released model uses it)")
        rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ModelLoadError(f"rope_parameters {rope}: qwen3_5 runs the default RoPE only")
        num_heads = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        head_dim = int(text.get("head_dim") or 256)
        factor = float(rope.get("partial_rotary_factor", text.get("partial_rotary_factor", 0.25)))
        num_layers = int(text["num_hidden_layers"])

        def first(name, default=None):  # a field of the text config, else of the wrapper
            return text.get(name, top.get(name, default))

        eos = first("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        return cls(
            arch=arch,
            vocab_size=int(text["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(text["intermediate_size"]),
            num_layers=num_layers,
            layer_types=_layer_types(text, num_layers),
            num_heads=num_heads,
            num_kv_heads=int(text.get("num_key_value_heads") or num_heads),
            head_dim=head_dim,
            rotary_dim=int(head_dim * factor),
            rope_theta=float(rope.get("rope_theta", text.get("rope_theta", 10000.0))),
            conv_kernel=int(text.get("linear_conv_kernel_dim", 4)),
            linear_k_heads=int(text.get("linear_num_key_heads", 16)),
            linear_v_heads=int(text.get("linear_num_value_heads", 32)),
            linear_k_dim=int(text.get("linear_key_head_dim", 128)),
            linear_v_dim=int(text.get("linear_value_head_dim", 128)),
            rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)),
            max_position=int(text.get("max_position_embeddings", 32768)),
            # HF ties by the wrapper's own flag where there is a wrapper (its _tied_weights_keys)
            tie_word_embeddings=bool(top.get("tie_word_embeddings", False)),
            bos_token_id=first("bos_token_id"),
            eos_token_ids=eos_ids,
            torch_dtype=str(first("torch_dtype") or first("dtype") or "float32"),
        )

"""Which kernel lives in which file, with which parameters; loading them for one device.

The signature strings are checked against the compiled PTX's entry parameters by
tests/runtime/backends/cuda/test_compile.py (no GPU needed), so a launcher can never pass
an argument list that disagrees with the kernel.
"""
from __future__ import annotations

import logging
import time

from . import compiler
from .module import Kernel, Module

log = logging.getLogger("inloop.cuda")

HEAD_DIM_VARIANTS = (32, 64, 128, 256)  # attention kernels are instantiated per head_dim bound
GEMV_KERNELS = ("gemv_store", "gemv_norm_store", "gemv_residual", "gemv_swiglu", "gemv_norm_swiglu")

# kernel -> (kernel file stem, signature: p pointer, i int32, f float32, q int64)
SIGNATURES: dict[str, tuple[str, str]] = {
    "embedding": ("embedding", "pppii"),
    "select_row": ("embedding", "pppii"),
    "gather_rows": ("embedding", "pppii"),
    "rmsnorm": ("norm", "pppif"),
    "add_rmsnorm": ("norm", "pppppif"),
    "swiglu": ("activation", "ppii"),
    "convert_f32_bf16": ("convert", "ppq"),
    "convert_f16_bf16": ("convert", "ppq"),
    "convert_bf16_f32": ("convert", "ppq"),
    "rope_qknorm": ("rope", "pppppppppiiiiiiiffi"),
    "rope_table": ("rope", "piif"),
    "kv_store": ("attention", "pppppiiiii"),
    "gemm_bf16": ("gemm", "ppppppppiiiiif"),
    "gemm_swiglu_bf16": ("gemm", "ppppppppiiiiif"),
    "gemm_norm_bf16": ("gemm", "ppppppppiiiiif"),
    "sample_reduce": ("sample", "pippp"),
    "sample_truncated": ("sample", "pippi"),
    **{f"attention_prefill_d{d}": ("attention", "ppppppiiiiiifi") for d in HEAD_DIM_VARIANTS},
    **{f"attention_decode_d{d}": ("attention_decode", "pppppppppppiiiiiiffi") for d in HEAD_DIM_VARIANTS},
    **{f"attention_paged_d{d}": ("attention", "pppppppiiiiiifi") for d in HEAD_DIM_VARIANTS},
    **{name: ("gemv", "pppppiiiif") for name in GEMV_KERNELS},
    "convert_f32_f16": ("convert", "ppq"),
    "convert_bf16_f16": ("convert", "ppq"),
    # Qwen3.5's Gated DeltaNet and gated attention (linear_attention_ops.py); fp32 parameters, one build
    "gdn_conv": ("linear_attention", "pppppiiq"),
    "gdn_decay_beta": ("linear_attention", "ppppppii"),
    "gdn_recurrence": ("linear_attention", "ppppppiiiifq"),
    "gdn_gated_rmsnorm": ("linear_attention", "ppppiif"),
    "partial_rope": ("linear_attention", "ppiiiif"),
    "output_gate": ("linear_attention", "pppi"),
}
# The fp16-weight build of each kernel that reads weights (compiler.WEIGHT_FILES): same file,
# same parameters, suffix _f16.
F16_SUFFIX = "_f16"
F16_BUILD = {name + F16_SUFFIX: (stem, sig) for name, (stem, sig) in SIGNATURES.items()
             if stem in compiler.WEIGHT_FILES and name not in ("select_row", "gather_rows", "rope_table")}
SIGNATURES.update(F16_BUILD)


def weight_format(name: str) -> str:
    """Which build of its file a kernel comes from (convert_f32_f16 is a bf16-build kernel)."""
    return "f16" if name in F16_BUILD else "bf16"


def base_kernel(name: str) -> str:
    """The kernel a build's kernel is a copy of (gemv_store_f16 -> gemv_store)."""
    return name.removesuffix(F16_SUFFIX) if name in F16_BUILD else name


def for_weights(name: str, dtype: str) -> str:
    """The kernel `name` for weights stored as `dtype` ("bf16" or "f16")."""
    return name + F16_SUFFIX if dtype == "f16" else name


class KernelSet:
    """Every kernel compiled (or taken from the cubin cache) for one arch and loaded into the
    current context: the bf16 build at once, the fp16-weight build when a model needs it
    (`ensure("f16")`, called when fp16 weights are uploaded, never during a capture)."""

    def __init__(self, arch: str, use_cache: bool = True):
        self.arch, self.use_cache = arch, use_cache
        self.modules: dict[tuple[str, str], Module] = {}
        self.kernels: dict[str, Kernel] = {}
        self.compiled: list[str] = []
        self.compile_seconds = self.load_seconds = 0.0
        self.ensure("bf16")

    def ensure(self, weights: str) -> None:
        if any(w == weights for _, w in self.modules):
            return
        t0 = time.perf_counter()
        results = compiler.compile_all(self.arch, self.use_cache, weights)
        t1 = time.perf_counter()
        for stem, r in results.items():
            self.modules[(stem, weights)] = Module(stem if weights == "bf16" else f"{stem}.{weights}", r.cubin)
        for name, (stem, sig) in SIGNATURES.items():
            if weight_format(name) == weights:
                self.kernels[name] = self.modules[(stem, weights)].kernel(name, sig)
        t2 = time.perf_counter()
        compiled = [stem for stem, r in results.items() if not r.cached]
        self.compiled += [s if weights == "bf16" else f"{s}.{weights}" for s in compiled]
        self.compile_seconds += t1 - t0
        self.load_seconds += t2 - t1
        log.info("cuda kernels ready: arch=%s weights=%s files=%d compiled=%s compile_s=%.3f load_s=%.3f",
                 self.arch, weights, len(results), ",".join(compiled) or "none (cache)", t1 - t0, t2 - t1)

    def __getitem__(self, name: str) -> Kernel:
        kernel = self.kernels.get(name)
        if kernel is None:
            raise KeyError(f"kernel {name} is not loaded" + (" (the fp16-weight build loads with the first fp16 "
                                                            "upload)" if weight_format(name) == "f16" else ""))
        return kernel

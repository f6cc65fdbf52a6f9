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
    "rmsnorm": ("norm", "pppif"),
    "add_rmsnorm": ("norm", "pppppif"),
    "swiglu": ("activation", "ppii"),
    "convert_f32_bf16": ("convert", "ppq"),
    "convert_f16_bf16": ("convert", "ppq"),
    "convert_bf16_f32": ("convert", "ppq"),
    "rope_qknorm": ("rope", "ppppiiiiffi"),
    "kv_store": ("attention", "pppppiiiii"),
    "gemm_bf16": ("gemm", "ppppppiiiii"),
    "sample_reduce": ("sample", "pippp"),
    "sample_truncated": ("sample", "pipp"),
    **{f"attention_prefill_d{d}": ("attention", "ppppppiiiiiifi") for d in HEAD_DIM_VARIANTS},
    **{f"attention_decode_d{d}": ("attention_decode", "ppppppppppiiiiifffi") for d in HEAD_DIM_VARIANTS},
    **{name: ("gemv", "pppppiiiif") for name in GEMV_KERNELS},
}


class KernelSet:
    """Every kernel compiled (or taken from the cubin cache) for one arch and loaded into the
    current context."""

    def __init__(self, arch: str, use_cache: bool = True):
        self.arch = arch
        t0 = time.perf_counter()
        results = compiler.compile_all(arch, use_cache)
        t1 = time.perf_counter()
        self.modules = {stem: Module(stem, r.cubin) for stem, r in results.items()}
        self.kernels: dict[str, Kernel] = {
            name: self.modules[stem].kernel(name, sig) for name, (stem, sig) in SIGNATURES.items()
        }
        t2 = time.perf_counter()
        self.compiled = [stem for stem, r in results.items() if not r.cached]
        self.compile_seconds, self.load_seconds = t1 - t0, t2 - t1
        log.info("cuda kernels ready: arch=%s files=%d compiled=%s compile_s=%.3f load_s=%.3f",
                 arch, len(results), ",".join(self.compiled) or "none (cache)", self.compile_seconds,
                 self.load_seconds)

    def __getitem__(self, name: str) -> Kernel:
        return self.kernels[name]

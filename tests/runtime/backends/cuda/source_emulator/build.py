"""Build the kernel sources for the CPU and launch them: the other half of runtime.h.

Each `kernels/*.cu` file becomes one shared library (as each becomes one cubin on the GPU):
the source is taken as it is, with one rewrite (`extern __shared__ T name[];`, which C++
cannot declare, becomes a pointer to the launch's dynamic shared memory) and one line per
kernel appended that exports a launcher taking the driver's `void**` argument array.
Libraries are cached by the hash of everything that goes into them, so a second run (or a
second test module) compiles nothing.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from inloop.services.runtime.backends.cuda.compiler import KERNEL_DIR, WEIGHT_FORMATS, format_files, format_options
from inloop.services.runtime.backends.cuda.kernels_registry import SIGNATURES, weight_format

RUNTIME = Path(__file__).resolve().parent / "runtime.h"  # includes the other headers beside it
# UBSan checks whose handlers ubsan.h defines (no sanitizer runtime is linked).
SANITIZE = "alignment,bounds,signed-integer-overflow,shift,integer-divide-by-zero,vla-bound,unreachable"
FLAGS = ("-std=c++17", "-O2", "-g", "-fPIC", "-shared", "-fno-strict-aliasing", "-fvisibility=hidden",
         "-fno-gnu-unique", "-Wno-unknown-pragmas", f"-fsanitize={SANITIZE}", "-fsanitize-recover=all",
         "-DINLOOP_SM=90")
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?(\w+)\s+(\w+)\s*\[\s*\]\s*;")


class KernelFault(AssertionError):
    """A kernel did something undefined on the GPU (runtime.h says what, where)."""


class _Launch(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("smem", ctypes.c_uint)]


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++"))


def translate(stem: str, source: str, exports: list[str]) -> str:
    """The C++ translation unit for one kernel file."""
    body = _EXTERN_SHARED.sub(r"\1* \2 = reinterpret_cast<\1*>(::emu::dynamic_smem());", source)
    lines = [f'#line 1 "{stem}.cu"', body, "", "// exported launchers (build.py)"]
    lines += [f"INLOOP_EMU_EXPORT({n})" for n in exports]
    return "\n".join(lines) + "\n"


@functools.cache
def _version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], check=True, capture_output=True, text=True).stdout.split("\n", 1)[0]


def cache_root() -> Path:
    root = os.environ.get("INLOOP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "inloop")
    return Path(root) / "cpu-kernels"


def build_library(stem: str, source: str, exports: list[str], root: Path | None = None,
                  defines: tuple[str, ...] = ()) -> Path:
    """Compile one kernel file's source (kernels/ headers on the include path, `defines` as
    NVRTC gets them) to a shared library, or return the cached one built from the same inputs."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++) for the CPU kernel emulator")
    root = root or cache_root()
    unit = translate(stem, source, exports)
    version = _version(cxx)
    h = hashlib.sha256()
    for part in (unit.encode(), version.encode(), "\0".join(FLAGS + defines).encode()):
        h.update(len(part).to_bytes(8, "little") + part)
    for header in sorted(RUNTIME.parent.glob("*.h")):
        h.update(header.name.encode() + b"\0" + header.read_bytes())
    for header in sorted(KERNEL_DIR.glob("*.cuh")):
        h.update(header.name.encode() + b"\0" + header.read_bytes())
    out = root / f"{stem}-{h.hexdigest()[:24]}.so"
    if out.exists():
        return out
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        src = Path(tmp) / f"{stem}.emu.cpp"
        src.write_text(unit)
        lib = Path(tmp) / out.name
        cmd = [cxx, *FLAGS, *defines, "-include", str(RUNTIME), "-I", str(KERNEL_DIR), "-o", str(lib), str(src)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"g++ failed on {stem}.cu for the CPU emulator:\n{done.stderr[-6000:]}")
        os.replace(lib, out)  # atomic: a concurrent builder sees a whole file or none
    return out


def _packed(args) -> ctypes.Array:
    """The driver's `void*[]` of argument addresses for ctypes values (kept alive by the caller)."""
    return (ctypes.c_void_p * max(1, len(args)))(*[ctypes.addressof(a) for a in args])


def _spans(spans) -> ctypes.Array:
    flat = [v for span in spans for v in span]
    return (ctypes.c_uint64 * max(1, len(flat)))(*flat)


class Library:
    """One built kernel file: `launch` runs one of its exported kernels."""

    _lock = threading.Lock()  # one launch at a time per process: each library's scheduler is global state

    def __init__(self, path: Path, exports: list[str]):
        self.cdll = ctypes.CDLL(str(path), mode=os.RTLD_LOCAL)
        self._error = self.cdll.emu_last_error
        self._error.argtypes, self._error.restype = [], ctypes.c_char_p
        u64p = ctypes.POINTER(ctypes.c_uint64)
        self._hz_set = self.cdll.emu_hazards_set
        self._hz_set.argtypes = [u64p, ctypes.c_int, u64p, ctypes.c_int, ctypes.c_int]
        self._hz_set.restype = None
        self._hz_written = self.cdll.emu_hazards_written
        self._hz_written.argtypes, self._hz_written.restype = [u64p, ctypes.c_int], ctypes.c_int
        self.hazards_supported = bool(self.cdll.emu_hazards_supported())
        self.entry = {}
        for name in exports:
            fn = getattr(self.cdll, f"emu_launch_{name}")
            fn.argtypes, fn.restype = [ctypes.POINTER(_Launch), ctypes.c_void_p], ctypes.c_int
            self.entry[name] = fn

    def launch(self, name: str, grid, block, smem: int, params: int,
               hazards: tuple[list, list, bool] | None = None) -> list[tuple[int, int]] | None:
        """Run kernel `name`; `params` is the address of a `void*[]` of argument addresses,
        as cuLaunchKernel takes it. Raises KernelFault when the kernel does something undefined.

        `hazards` = (tracked, stale, pdl): the device allocations as page-aligned [lo, hi)
        spans, the bytes earlier kernels of the PDL chain wrote, and whether this launch is a
        PDL one; the launch then faults on touching those bytes, or writing anything, before
        griddepcontrol.wait (pdl_hazards.h) and returns the spans it wrote."""
        grid, block = (tuple(grid) + (1, 1))[:3], (tuple(block) + (1, 1))[:3]
        cfg = _Launch((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), int(smem))
        track = hazards is not None and self.hazards_supported
        with self._lock:
            if track:
                tracked, stale = (_spans(s) for s in hazards[:2])
                self._hz_set(tracked, len(hazards[0]), stale, len(hazards[1]), int(hazards[2]))
            try:
                failed = self.entry[name](ctypes.byref(cfg), ctypes.c_void_p(params)) != 0
            finally:
                if track:
                    self._hz_set(None, -1, None, 0, 0)
            if failed:
                raise KernelFault(f"{name} grid={grid} block={block}: {self._error().decode(errors='replace')}")
            if not track:
                return None
            n = self._hz_written(None, 0)
            out = (ctypes.c_uint64 * (2 * n))()
            self._hz_written(out, n)
            return [(out[2 * i], out[2 * i + 1]) for i in range(n)]

    def call(self, name: str, grid, block, *args, smem: int = 0) -> None:
        """Launch with ctypes values (c_void_p(address), c_int(3), ...) packed here."""
        packed = _packed(args)  # alive through the launch
        self.launch(name, grid, block, smem, ctypes.addressof(packed))

    def launch_with(self, mem, name: str, grid, block, stale, *args, smem: int = 0) -> list[tuple[int, int]]:
        """`call` as a PDL launch under the hazard check, on `mem`'s (fake_driver.Memory) device
        pages, with `stale` the bytes earlier kernels of the chain wrote; returns the bytes this
        one wrote."""
        packed = _packed(args)  # alive through the launch
        return self.launch(name, grid, block, smem, ctypes.addressof(packed),
                           hazards=(list(mem.device_pages.values()), stale, True))


class SourceKernels:
    """Every kernel file of kernels/ built for the CPU and loaded, as the GPU gets them: each
    file for bf16 weights, and the weight-reading files again for fp16 weights."""

    def __init__(self, root: Path | None = None):
        builds = [(path.stem, w) for w in WEIGHT_FORMATS for path in format_files(w)]
        exports = {b: [n for n, (stem, _sig) in SIGNATURES.items() if (stem, weight_format(n)) == b] for b in builds}

        def build(b):
            stem, weights = b
            return build_library(stem, (KERNEL_DIR / f"{stem}.cu").read_text(), exports[b], root,
                                 format_options(weights))

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            paths = dict(zip(builds, pool.map(build, builds)))
        self.libs = {b: Library(path, exports[b]) for b, path in paths.items()}
        self.lib_of = {name: self.libs[b] for b, names in exports.items() for name in names}

    def launch(self, name: str, grid, block, smem: int, params: int, hazards=None):
        return self.lib_of[name].launch(name, grid, block, smem, params, hazards)

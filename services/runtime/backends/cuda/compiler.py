"""NVRTC: compile `kernels/*.cu` to cubins, with a disk cache so a warm start compiles nothing.

Compiling and running are separate: nothing here touches a GPU, so `inloop cuda compile`
and the compile tests run on any machine that has libnvrtc.

Each `.cu` file is one op family with `extern "C"` kernels; every `.cuh` beside them is
handed to NVRTC as an in-memory header (no include path, no CUDA headers needed). A cubin
is cached under `$INLOOP_CACHE/cubins` (default ~/.cache/inloop) keyed by the sha256 of the
source, every header, the options, the arch and the NVRTC version.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
CACHE_FORMAT = "1"  # bump when the cache layout or the meaning of a key changes
# -default-device: NVRTC 13.0 (the one a 13.0 driver comes with) takes a generic lambda inside a
# kernel for a host function unless unannotated functions default to __device__.
LANGUAGE_OPTIONS = ("-std=c++17", "--fmad=true", "-default-device")
BASE_OPTIONS = (*LANGUAGE_OPTIONS, "--ptxas-options=-v")
MIN_ARCH = 80  # cvt.rn.bf16*.f32 and mma.sync bf16 need sm_80
# Weights are bf16, or fp16 where the model is fp16. Files whose kernels read weights are built
# once per format; the fp16 build defines INLOOP_WEIGHTS_F16 and its weight-reading kernels
# carry the suffix _f16 (kernels/common.cuh). Every other file is built once.
WEIGHT_FORMATS = ("bf16", "f16")
WEIGHT_FILES = ("attention_decode", "embedding", "gemm", "gemv", "norm", "rope")


class CompileError(RuntimeError):
    """NVRTC rejected a kernel file; `log` is the full program log."""

    def __init__(self, name: str, arch: str, log: str):
        super().__init__(f"NVRTC failed to compile {name} for {arch}:\n{log}")
        self.name, self.arch, self.log = name, arch, log


@dataclass(frozen=True)
class CompileResult:
    name: str          # kernel file stem, e.g. "gemv"
    arch: str          # e.g. "sm_90"
    cubin: bytes
    log: str           # ptxas -v report (registers, spills) or warnings
    seconds: float     # compile time; 0 on a cache hit
    cached: bool


def _nvrtc():
    try:  # imported late: `inloop --help` must not need it
        from cuda.bindings import nvrtc
    except ImportError:  # cuda-python before 12.6
        from cuda import nvrtc
    return nvrtc


def _check(result, what: str):
    """Unwrap NVRTC's (err, *values) tuple."""
    nvrtc = _nvrtc()
    err, *values = result
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, msg = nvrtc.nvrtcGetErrorString(err)
        raise RuntimeError(f"{what}: {msg.decode() if isinstance(msg, bytes) else msg}")
    return values[0] if len(values) == 1 else values


def nvrtc_version() -> str:
    major, minor = _check(_nvrtc().nvrtcVersion(), "nvrtcVersion")
    return f"{major}.{minor}"


def supported_archs() -> list[int]:
    return list(_check(_nvrtc().nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs"))


def arch_for_capability(major: int, minor: int) -> str:
    """The arch to build for a device. Portable code only, so plain sm_XY even on Hopper;
    sm_90a is for files that opt in (see `kernel_archs`)."""
    return f"sm_{major}{minor}"


def parse_arch(arch: str) -> int:
    """'sm_90a' -> 90; raises ValueError on anything else."""
    a = arch.strip().lower()
    if not a.startswith("sm_"):
        raise ValueError(f"arch must look like sm_90 or sm_90a, got {arch!r}")
    digits = a[3:].rstrip("af")
    if not digits.isdigit():
        raise ValueError(f"arch must look like sm_90 or sm_90a, got {arch!r}")
    num = int(digits)
    if num < MIN_ARCH:
        raise ValueError(f"{arch}: the kernels need sm_{MIN_ARCH} or newer (bf16 conversions, mma.sync)")
    return num


def kernel_files() -> list[Path]:
    return sorted(KERNEL_DIR.glob("*.cu"))


def format_options(weights: str) -> tuple[str, ...]:
    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weight format must be one of {WEIGHT_FORMATS}, got {weights!r}")
    return () if weights == "bf16" else ("-DINLOOP_WEIGHTS_F16=1",)


def format_files(weights: str) -> list[Path]:
    """The kernel files built for a weight format: all of them for bf16, WEIGHT_FILES for f16."""
    format_options(weights)
    return [p for p in kernel_files() if weights == "bf16" or p.stem in WEIGHT_FILES]


def _headers() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(KERNEL_DIR.glob("*.cuh"))]


def cache_dir() -> Path:
    root = os.environ.get("INLOOP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "inloop")
    return Path(root) / "cubins"


def options_for(arch: str, extra: tuple[str, ...] = ()) -> list[str]:
    num = parse_arch(arch)
    return [f"--gpu-architecture={arch}", *BASE_OPTIONS, f"-DINLOOP_SM={num}", *extra]


def cache_key(source: bytes, headers: list[tuple[str, bytes]], options: list[str], arch: str,
              version: str) -> str:
    h = hashlib.sha256()
    for part in (CACHE_FORMAT.encode(), source, arch.encode(), version.encode(), "\0".join(options).encode()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    for name, data in headers:
        h.update(name.encode() + b"\0")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def compile_source(name: str, source: bytes, arch: str, headers: list[tuple[str, bytes]] | None = None,
                   extra: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """Compile one translation unit to a cubin; raises CompileError with the full log."""
    nvrtc = _nvrtc()
    headers = _headers() if headers is None else headers
    opts = [o.encode() for o in options_for(arch, extra)]
    prog = _check(nvrtc.nvrtcCreateProgram(source, f"{name}.cu".encode(), len(headers),
                                           [d for _, d in headers], [n.encode() for n, _ in headers]),
                  "nvrtcCreateProgram")
    try:
        err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        buf = b" " * size
        _check(nvrtc.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        log = buf.rstrip(b"\0 ").decode(errors="replace")
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise CompileError(name, arch, log)
        size = _check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = b" " * size
        _check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        return cubin, log
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def compile_file(path: Path | str, arch: str, use_cache: bool = True,
                 extra: tuple[str, ...] = ()) -> CompileResult:
    """Compile one kernel file for `arch`, through the disk cache."""
    path = Path(path)
    source, headers = path.read_bytes(), _headers()
    key = cache_key(source, headers, options_for(arch, extra), arch, nvrtc_version())
    cubin_path = cache_dir() / f"{path.stem}-{arch}-{key[:24]}.cubin"
    log_path = cubin_path.with_suffix(".log")
    if use_cache and cubin_path.is_file():
        log = log_path.read_text() if log_path.is_file() else ""
        return CompileResult(path.stem, arch, cubin_path.read_bytes(), log, 0.0, True)
    t0 = time.perf_counter()
    cubin, log = compile_source(path.stem, source, arch, headers, extra)
    seconds = time.perf_counter() - t0
    if use_cache:
        _atomic_write(log_path, log.encode())
        _atomic_write(cubin_path, cubin)  # last: its presence marks a complete entry
    return CompileResult(path.stem, arch, cubin, log, seconds, False)


def compile_many(jobs: list[tuple[Path, str, str]], use_cache: bool = True) -> list[CompileResult | CompileError]:
    """Compile (file, arch, weight format) jobs on a few threads (NVRTC releases the GIL); a
    failure is returned in its slot rather than raised, so every file gets reported."""
    def one(job):
        path, arch, weights = job
        try:
            return compile_file(path, arch, use_cache, format_options(weights))
        except CompileError as exc:
            return exc

    workers = max(1, min(len(jobs), os.cpu_count() or 1, 8))
    if workers == 1:
        return [one(j) for j in jobs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, jobs))


def compile_all(arch: str, use_cache: bool = True, weights: str = "bf16") -> dict[str, CompileResult]:
    """Every file of one weight format's build for `arch` (stem -> result); raises on a failure."""
    files = format_files(weights)
    results = compile_many([(p, arch, weights) for p in files], use_cache)
    for r in results:
        if isinstance(r, CompileError):
            raise r
    return {p.stem: r for p, r in zip(files, results)}


def code_sizes(cubin: bytes) -> dict[str, int]:
    """Bytes of machine code per kernel in a cubin (its ELF `.text.<kernel>` sections).

    At batch 1 a decode kernel's code is fetched cold at every launch (the weights stream
    through L2 in between), so on the decode path code size is time: see the cuda README."""
    import struct

    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:  # ELF64 only
        return {}
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * shentsize) for i in range(shnum)]
    names_at = sections[shstrndx][4]
    out = {}
    for sh in sections:
        start = names_at + sh[0]
        name = cubin[start:cubin.index(b"\0", start)].decode()
        if name.startswith(".text."):
            out[name[len(".text."):]] = sh[5]
    return out


def ptxas_summary(log: str) -> dict[str, dict]:
    """Per-kernel registers / spill bytes / stack from a `ptxas -v` log."""
    out: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        if "Compiling entry function" in line:
            current = line.split("'")[1]
            out[current] = {"registers": 0, "spill_bytes": 0, "stack_bytes": 0}
        elif current and "bytes stack frame" in line:
            words = line.replace(",", "").split()
            nums = [int(w) for w in words if w.isdigit()]
            if len(nums) >= 3:
                out[current]["stack_bytes"] = nums[0]
                out[current]["spill_bytes"] = nums[1] + nums[2]
        elif current and "Used" in line and "registers" in line:
            words = line.split()
            out[current]["registers"] = int(words[words.index("Used") + 1])
    return out


def compile_ptx(path: Path | str, virtual_arch: str = "compute_80", weights: str = "bf16") -> str:
    """PTX of one kernel file (never cached: used by tests to read the entry signatures)."""
    nvrtc = _nvrtc()
    path = Path(path)
    headers = _headers()
    opts = [f"--gpu-architecture={virtual_arch}".encode(), *(o.encode() for o in LANGUAGE_OPTIONS),
            *(o.encode() for o in format_options(weights))]
    prog = _check(nvrtc.nvrtcCreateProgram(path.read_bytes(), path.name.encode(), len(headers),
                                           [d for _, d in headers], [n.encode() for n, _ in headers]),
                  "nvrtcCreateProgram")
    try:
        err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            buf = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, buf)
            raise CompileError(path.stem, virtual_arch, buf.decode(errors="replace"))
        size = _check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
        buf = b" " * size
        _check(nvrtc.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
        return buf.rstrip(b"\0 ").decode()
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def ptx_entry_max_threads(ptx: str) -> dict[str, int]:
    """Kernel name -> the block size its __launch_bounds__ allows (`.maxntid`); kernels without
    one are left out (the device limit, 1024, applies). A bigger launch fails on the GPU."""
    out: dict[str, int] = {}
    for m in re.finditer(r"\.entry\s+(\w+)\s*\(.*?\)\s*((?:\.\w+[^\n{]*\s*)*)\{", ptx, re.DOTALL):
        bound = re.search(r"\.maxntid\s+(\d+)\s*,\s*(\d+)\s*,\s*(\d+)", m.group(2))
        if bound:
            out[m.group(1)] = int(bound.group(1)) * int(bound.group(2)) * int(bound.group(3))
    return out


def ptx_entry_params(ptx: str) -> dict[str, list[str]]:
    """Kernel name -> PTX parameter types ('.u64', '.u32', '.f32', ...) from `.entry` blocks."""
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"\.entry\s+(\w+)\s*\((.*?)\)", ptx, re.DOTALL):
        out[m.group(1)] = re.findall(r"\.param\s+(\.\w+)", m.group(2))
    return out

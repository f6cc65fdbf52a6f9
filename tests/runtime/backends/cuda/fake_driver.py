"""A test double for `cuda.bindings.driver`, for machines without a GPU.

It sits below the real boundary (the driver API) and is strict where the Python layer can
go wrong: every call's argument count is checked against the real binding's signature,
enums and structs are the real ones, every device access is bounds-checked against live
allocations (a freed buffer or a graph pointing at one fails loudly), launch arguments are
decoded from the packed `void**` exactly as the driver would, PDL launch configs are
inspected, and stream capture records launches and copies into graphs that replay them.
Kernels run through kernel_emulator.py (numpy semantics of each kernel's contract).
"""
from __future__ import annotations

import bisect
import ctypes
import functools
import mmap
import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from cuda.bindings import driver as real

from inloop.services.runtime.backends.cuda import compiler
from inloop.services.runtime.backends.cuda.kernels_registry import SIGNATURES
from inloop.services.runtime.backends.cuda.module import ARG_CTYPES, pack_args

from . import kernel_emulator

OK = real.CUresult.CUDA_SUCCESS


@functools.cache
def launch_bounds() -> dict[str, int]:
    """Kernel -> the most threads per block its __launch_bounds__ allows, read from the PTX of
    every build (the GPU refuses a bigger launch; the emulators would not notice)."""
    builds = [(p, w) for w in compiler.WEIGHT_FORMATS for p in compiler.format_files(w)]
    with ThreadPoolExecutor(4) as pool:  # NVRTC releases the GIL
        ptxs = list(pool.map(lambda b: compiler.compile_ptx(b[0], weights=b[1]), builds))
    out: dict[str, int] = {}
    for ptx in ptxs:
        out.update(compiler.ptx_entry_max_threads(ptx))
    return out


def _arity(name: str) -> int:
    first = getattr(real, name).__doc__.split("\n", 1)[0]
    inside = first[first.index("(") + 1: first.rindex(")")].strip()
    return len(inside.split(",")) if inside else 0


class Memory:
    """Device (and pinned host) memory as real host allocations, so pointers are real
    addresses; accesses are checked against the live set. Each allocation sits between two
    guard zones; `check_guards` finds a kernel that wrote past either end. Each starts on a
    page of its own, and a device allocation's pages (to the end of its back guard zone) are
    listed in `device_pages`: the PDL hazard check maps them per launch (pdl_hazards.h). Not
    those of allocations over TRACK_LIMIT: mapping costs per page per launch, and at the
    tests' sizes those are weights (the tiny models' buffers are all tracked)."""

    GUARD = 1024
    PAGE = mmap.PAGESIZE
    TRACK_LIMIT = 1 << 20
    FILL = 0xA5        # fresh memory: not zero, finite as f32/bf16/f16 (code must not rely on zeroed memory)
    GUARD_FILL = 0xFF  # NaN as f32, bf16 and f16: a read past either end shows up in the results

    def __init__(self):
        self.starts: list[int] = []
        self.blocks: dict[int, tuple[int, np.ndarray]] = {}
        self.device_pages: dict[int, tuple[int, int]] = {}  # base -> [lo, hi), whole pages
        self.graveyard: list[np.ndarray] = []  # freed memory stays mapped: stale reads fail the check, not the process

    def alloc(self, n: int, device: bool = False) -> int:
        g, page = self.GUARD, self.PAGE
        span = -(-(n + g) // page) * page  # the allocation and its back guard, in whole pages
        raw = np.full(g + page + span, self.FILL, np.uint8)
        base = raw.ctypes.data + g + (-(raw.ctypes.data + g) % page)
        off = base - raw.ctypes.data
        raw[off - g:off] = raw[off + n:off + n + g] = self.GUARD_FILL
        self.blocks[base] = (n, raw)
        if device and n <= self.TRACK_LIMIT:
            self.device_pages[base] = (base, base + span)
        bisect.insort(self.starts, base)
        return base

    def owner(self, ptr: int) -> str:
        """`base+offset` of the live allocation holding ptr, for messages."""
        i = bisect.bisect_right(self.starts, ptr) - 1
        return f"{self.starts[i]:#x}+{ptr - self.starts[i]}" if i >= 0 else f"{ptr:#x}"

    def check_guards(self, what: str) -> None:
        g = self.GUARD
        for base, (n, raw) in self.blocks.items():
            off = base - raw.ctypes.data
            for lo, hi, side in ((off - g, off, "before"), (off + n, off + n + g, "past the end of")):
                zone = raw[lo:hi]
                if (zone != self.GUARD_FILL).any():
                    first = int(np.flatnonzero(zone != self.GUARD_FILL)[0])
                    raise AssertionError(f"{what} wrote {side} the allocation {base:#x}+{n} "
                                         f"(guard byte {first} of {g})")

    def free(self, ptr: int) -> None:
        ptr = int(ptr)
        assert ptr in self.blocks, f"free of {ptr:#x}: not a live allocation"
        n, raw = self.blocks.pop(ptr)
        self.device_pages.pop(ptr, None)
        self.starts.remove(ptr)
        self.graveyard.append(raw)

    def check(self, ptr: int, nbytes: int) -> None:
        ptr = int(ptr)
        i = bisect.bisect_right(self.starts, ptr) - 1
        if i < 0 or nbytes < 0:
            raise AssertionError(f"access {ptr:#x}+{nbytes}: no live allocation")
        base = self.starts[i]
        size = self.blocks[base][0]
        if ptr + nbytes > base + size:
            raise AssertionError(f"access {ptr:#x}+{nbytes} overruns the allocation {base:#x}+{size}")

    def view(self, ptr: int, nbytes: int, dtype=np.uint8) -> np.ndarray:
        nbytes = int(nbytes)
        if nbytes == 0:
            return np.zeros(0, dtype)
        self.check(ptr, nbytes)
        return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(int(ptr))).view(dtype)


class FakeDriver:
    """`kernels="contract"` runs each launch through kernel_emulator.py (numpy semantics of the
    kernel's contract, fast); `kernels="source"` runs the real CUDA C of kernels/ compiled for
    the CPU (source_emulator/), so the kernels' own code is what gets tested.

    With the sources, PDL is checked too (`pdl_hazards`; on unless INLOOP_EMU_PDL_HAZARDS=0): a
    kernel launched with programmatic stream serialization may start while every kernel since
    the stream's last ordinary launch, copy, memset or graph start still runs, so the bytes
    those kernels wrote (the chain) are closed to its threads until they reach
    griddepcontrol.wait, and it may write nothing before then."""

    HAZARD = re.compile(r"(?:touched|wrote) (0x[0-9a-f]+) before griddepcontrol.wait")

    def __init__(self, sm_count: int = 132, capability=(9, 0), kernels: str = "contract",
                 pdl_hazards: bool | None = None):
        if kernels not in ("contract", "source"):
            raise ValueError(f"kernels must be 'contract' or 'source', got {kernels!r}")
        self.source = None
        if kernels == "source":
            from .source_emulator.build import SourceKernels
            self.source = SourceKernels()
        self.mem = Memory()
        self.sm_count, self.capability = sm_count, capability
        self.modules: dict[int, bytes] = {}
        self.functions: dict[int, dict] = {}
        self.capturing: dict[int, list] = {}
        self.graphs: dict[int, list] = {}
        self.launches: list[tuple[str, bool]] = []  # (kernel, pdl) of every executed launch
        if pdl_hazards is None:  # read here, not when the module is imported
            pdl_hazards = os.environ.get("INLOOP_EMU_PDL_HAZARDS", "1") != "0"
        self.pdl_hazards = pdl_hazards and kernels == "source"
        self.chain: list[tuple[int, int, str]] = []  # (lo, hi, kernel): bytes this PDL chain wrote
        self._next = 1000

    def _handle(self) -> int:
        self._next += 1
        return self._next

    def __getattr__(self, name):
        value = getattr(real, name)  # enums and structs: the real ones
        if callable(value) and name.startswith("cu") and not isinstance(value, type):
            raise AttributeError(f"the fake driver does not implement {name}")
        return value

    def _call(self, name, args):
        n = _arity(name)
        assert len(args) == n, f"{name} takes {n} arguments in cuda-python, got {len(args)}"

    # ---- device / context ----------------------------------------------------------------
    def cuInit(self, *a):
        self._call("cuInit", a)
        return (OK,)

    def cuDeviceGetCount(self, *a):
        self._call("cuDeviceGetCount", a)
        return (OK, 1)

    def cuDeviceGet(self, *a):
        self._call("cuDeviceGet", a)
        return (OK, real.CUdevice(0))

    def cuDeviceGetName(self, *a):
        self._call("cuDeviceGetName", a)
        return (OK, b"Fake H100\0")

    def cuDevicePrimaryCtxRetain(self, *a):
        self._call("cuDevicePrimaryCtxRetain", a)
        return (OK, real.CUcontext(7))

    def cuCtxSetCurrent(self, *a):
        self._call("cuCtxSetCurrent", a)
        return (OK,)

    def cuCtxSynchronize(self, *a):
        self._call("cuCtxSynchronize", a)
        return (OK,)

    def cuDeviceTotalMem(self, *a):
        self._call("cuDeviceTotalMem", a)
        return (OK, 80 << 30)

    def cuDriverGetVersion(self, *a):
        self._call("cuDriverGetVersion", a)
        return (OK, 13000)

    def cuDeviceGetAttribute(self, *a):
        self._call("cuDeviceGetAttribute", a)
        A = real.CUdevice_attribute
        values = {A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: self.capability[0],
                  A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: self.capability[1],
                  A.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: self.sm_count,
                  A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: 227 * 1024,
                  A.CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: 1}
        return (OK, values[a[0]])

    # ---- streams, events -------------------------------------------------------------------
    def cuStreamCreate(self, *a):
        self._call("cuStreamCreate", a)
        return (OK, real.CUstream(self._handle()))

    def cuStreamSynchronize(self, *a):
        self._call("cuStreamSynchronize", a)
        assert int(a[0]) not in self.capturing, "synchronize during capture"
        return (OK,)
    def cuEventCreate(self, *a):
        self._call("cuEventCreate", a)
        return (OK, real.CUevent(self._handle()))

    def cuEventRecord(self, *a):
        self._call("cuEventRecord", a)
        return (OK,)

    def cuEventSynchronize(self, *a):
        self._call("cuEventSynchronize", a)
        return (OK,)

    def cuEventElapsedTime(self, *a):
        self._call("cuEventElapsedTime", a)
        return (OK, 0.001)


    # ---- memory -------------------------------------------------------------------------------
    def cuDeviceGetDefaultMemPool(self, *a):
        self._call("cuDeviceGetDefaultMemPool", a)
        return (OK, real.CUmemoryPool(3))

    def cuMemPoolSetAttribute(self, *a):
        self._call("cuMemPoolSetAttribute", a)
        return (OK,)

    def cuMemAllocAsync(self, *a):
        self._call("cuMemAllocAsync", a)
        assert int(a[1]) not in self.capturing, "allocation inside a capture"
        return (OK, real.CUdeviceptr(self.mem.alloc(int(a[0]), device=True)))

    def cuMemFreeAsync(self, *a):
        self._call("cuMemFreeAsync", a)
        assert int(a[1]) not in self.capturing, "free inside a capture"
        self.mem.free(int(a[0]))
        return (OK,)

    def cuMemHostAlloc(self, *a):
        self._call("cuMemHostAlloc", a)
        return (OK, self.mem.alloc(int(a[0])))

    def cuMemFreeHost(self, *a):
        self._call("cuMemFreeHost", a)
        self.mem.free(int(a[0]))
        return (OK,)

    def _copy(self, stream, dst, src, n, check_dst, check_src):
        assert int(stream) not in self.capturing, "the decode graph captures no copies: state moves outside it"

        def run():
            if check_dst:
                self.mem.check(dst, n)
            if check_src:
                self.mem.check(src, n)
            ctypes.memmove(int(dst), int(src), int(n))
            self.chain.clear()  # a copy waits for the kernels before it; the next kernel waits for it
        self._enqueue(stream, run)
        return (OK,)

    def cuMemcpyHtoDAsync(self, *a):
        self._call("cuMemcpyHtoDAsync", a)
        dst, src, n, stream = a
        return self._copy(stream, dst, src, n, True, False)

    def cuMemcpyDtoHAsync(self, *a):
        self._call("cuMemcpyDtoHAsync", a)
        dst, src, n, stream = a
        return self._copy(stream, dst, src, n, False, True)

    def cuMemcpyDtoDAsync(self, *a):
        self._call("cuMemcpyDtoDAsync", a)
        dst, src, n, stream = a
        return self._copy(stream, dst, src, n, True, True)

    def cuMemsetD8Async(self, *a):
        self._call("cuMemsetD8Async", a)
        dst, value, n, stream = a
        def run():
            self.mem.view(dst, n).fill(value)
            self.chain.clear()
        self._enqueue(stream, run)
        return (OK,)

    # ---- modules and launches -------------------------------------------------------------------
    def cuModuleLoadData(self, *a):
        self._call("cuModuleLoadData", a)
        assert bytes(a[0][:4]) == b"\x7fELF", "not a cubin"
        h = self._handle()
        self.modules[h] = bytes(a[0])
        return (OK, real.CUmodule(h))

    def cuModuleGetFunction(self, *a):
        self._call("cuModuleGetFunction", a)
        module, name = int(a[0]), a[1].decode()
        assert name.encode() + b"\0" in self.modules[module], f"{name} is not in the cubin"
        h = self._handle()
        self.functions[h] = {"name": name, "max_dynamic_smem": 48 * 1024 - kernel_emulator.static_smem(name)}
        return (OK, real.CUfunction(h))

    def cuFuncGetAttribute(self, *a):
        self._call("cuFuncGetAttribute", a)
        A, fn = real.CUfunction_attribute, self.functions[int(a[1])]
        if a[0] == A.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES:
            return (OK, kernel_emulator.static_smem(fn["name"]))
        return (OK, 64)

    def cuFuncSetAttribute(self, *a):
        self._call("cuFuncSetAttribute", a)
        assert a[1] == real.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        assert int(a[2]) <= 227 * 1024
        self.functions[int(a[0])]["max_dynamic_smem"] = int(a[2])
        return (OK,)

    def _decode_args(self, name: str, params: int) -> tuple:
        sig = SIGNATURES[name][1]
        ptrs = (ctypes.c_void_p * len(sig)).from_address(int(params))
        return tuple(ARG_CTYPES[c].from_address(ptrs[i]).value for i, c in enumerate(sig))

    def _launch(self, f, grid, block, smem, stream, params, pdl):
        fn = self.functions[int(f)]
        name = fn["name"]
        assert smem <= fn["max_dynamic_smem"], f"{name}: {smem} B dynamic smem > allowed {fn['max_dynamic_smem']}"
        threads = block[0] * block[1] * block[2]
        assert all(g >= 1 for g in grid) and 1 <= threads <= 1024, (name, grid, block)
        bound = launch_bounds().get(name, 1024)
        assert threads <= bound, f"{name}: {threads} threads per block > its __launch_bounds__ ({bound})"
        args = self._decode_args(name, params)  # copied at launch, as the driver does

        def run():
            self.launches.append((name, pdl))
            if self.source is None:
                kernel_emulator.run(name, self.mem, grid, block, smem, args)
                return
            packed, _holders = pack_args(SIGNATURES[name][1], args)
            if not self.pdl_hazards:
                self.source.launch(name, grid, block, smem, ctypes.addressof(packed))
            else:
                self._launch_checked(name, grid, block, smem, ctypes.addressof(packed), pdl)
            self.mem.check_guards(name)
        self._enqueue(stream, run)
        return (OK,)

    def _launch_checked(self, name, grid, block, smem, params, pdl):
        """A source launch with what its chain wrote closed until griddepcontrol.wait."""
        if not pdl:
            self.chain.clear()  # an ordinary launch waits for every kernel before it
        stale = []
        for lo, hi, _ in sorted(self.chain):
            if stale and lo <= stale[-1][1]:
                stale[-1] = (stale[-1][0], max(stale[-1][1], hi))
            else:
                stale.append((lo, hi))
        try:
            written = self.source.launch(name, grid, block, smem, params,
                                         hazards=(list(self.mem.device_pages.values()), stale, pdl))
        except AssertionError as e:
            m = self.HAZARD.search(str(e))
            if m is None:
                raise
            at = int(m.group(1), 16)
            writers = sorted({k for lo, hi, k in self.chain if lo < at + 16 and at < hi})
            by = f", written by {', '.join(writers)} earlier in the chain" if writers else ""
            raise type(e)(f"{e}; that is allocation {self.mem.owner(at)}{by}") from None
        self.chain += [(lo, hi, name) for lo, hi in written or ()]

    def cuLaunchKernel(self, *a):
        self._call("cuLaunchKernel", a)
        f, gx, gy, gz, bx, by, bz, smem, stream, params, extra = a
        return self._launch(f, (gx, gy, gz), (bx, by, bz), smem, stream, params, False)

    def cuLaunchKernelEx(self, *a):
        self._call("cuLaunchKernelEx", a)
        cfg, f, params, extra = a
        assert cfg.numAttrs == 1 and len(cfg.attrs) == 1
        attr = cfg.attrs[0]
        assert attr.id == real.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        assert attr.value.programmaticStreamSerializationAllowed == 1
        return self._launch(f, (cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ), (cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ),
                            cfg.sharedMemBytes, cfg.hStream, params, True)

    # ---- capture and graphs ------------------------------------------------------------------
    def _enqueue(self, stream, fn):
        s = int(stream)
        if s in self.capturing:
            self.capturing[s].append(fn)
        else:
            fn()

    def cuStreamBeginCapture(self, *a):
        self._call("cuStreamBeginCapture", a)
        assert int(a[0]) not in self.capturing
        self.capturing[int(a[0])] = []
        return (OK,)

    def cuStreamEndCapture(self, *a):
        self._call("cuStreamEndCapture", a)
        h = self._handle()
        self.graphs[h] = self.capturing.pop(int(a[0]))
        return (OK, real.CUgraph(h))

    def cuGraphInstantiate(self, *a):
        self._call("cuGraphInstantiate", a)
        h = self._handle()
        self.graphs[h] = list(self.graphs[int(a[0])])
        return (OK, real.CUgraphExec(h))

    def cuGraphUpload(self, *a):
        self._call("cuGraphUpload", a)
        return (OK,)

    def cuGraphLaunch(self, *a):
        self._call("cuGraphLaunch", a)
        # the graph's first kernel has no programmatic edge: it waits for the stream's work
        self._enqueue(a[1], self.chain.clear)
        for fn in self.graphs[int(a[0])]:
            self._enqueue(a[1], fn)
        return (OK,)

    def cuGraphExecDestroy(self, *a):
        self._call("cuGraphExecDestroy", a)
        return (OK,)

    def cuGraphDestroy(self, *a):
        self._call("cuGraphDestroy", a)
        return (OK,)


"""Loaded cubins, kernel launches with packed arguments, and captured CUDA graphs."""
from __future__ import annotations

import ctypes

from . import driver as _driver
from .driver import Allocator, Stream, check

# Kernel signatures are strings, one letter per parameter, in the kernel's order:
#   p pointer (device address, 0 for null)   i int32   f float32   q int64
ARG_CTYPES = {"p": ctypes.c_uint64, "i": ctypes.c_int32, "f": ctypes.c_float, "q": ctypes.c_int64}


def pack_args(signature: str, args) -> tuple[ctypes.Array, list]:
    """The driver's `void**` kernel parameters for args (None -> a null pointer); keep the
    holders alive until the launch call returns (the driver copies the values)."""
    holders = [ARG_CTYPES[c](0 if a is None else a) for c, a in zip(signature, args)]
    params = (ctypes.c_void_p * max(1, len(holders)))(*[ctypes.addressof(h) for h in holders])
    return params, holders


class Kernel:
    """One `extern "C"` kernel of a loaded module."""

    def __init__(self, name: str, handle, signature: str):
        bad = set(signature) - set(ARG_CTYPES)
        if bad:
            raise ValueError(f"{name}: unknown signature letters {sorted(bad)} (use p, i, f, q)")
        self.name, self.handle, self.signature = name, handle, signature
        self._pdl_attr = None
        drv = _driver._drv()
        attr = drv.CUfunction_attribute
        self.num_regs = check(drv.cuFuncGetAttribute(attr.CU_FUNC_ATTRIBUTE_NUM_REGS, handle), name)
        self.static_smem = check(drv.cuFuncGetAttribute(attr.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, handle), name)
        self.max_dynamic_smem = 48 * 1024 - self.static_smem

    def allow_dynamic_smem(self, nbytes: int) -> None:
        """Opt in to more than 48 KB of dynamic shared memory (done once, before capture)."""
        if nbytes <= self.max_dynamic_smem:
            return
        drv = _driver._drv()
        check(drv.cuFuncSetAttribute(self.handle, drv.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                     int(nbytes)), f"{self.name}: raise dynamic shared memory to {nbytes}")
        self.max_dynamic_smem = int(nbytes)

    def _pack(self, args):
        if len(args) != len(self.signature):
            raise TypeError(f"{self.name} takes {len(self.signature)} arguments ({self.signature}), got {len(args)}")
        return pack_args(self.signature, args)

    def launch(self, grid, block, args, stream: Stream, smem: int = 0, pdl: bool = False) -> None:
        """Launch on `stream`. The driver copies the arguments, so the packed buffers may go
        right after the call. `pdl` allows programmatic dependent launch (sm_90+): the kernel
        may start while the previous one drains and must call pdl_wait() before using its
        outputs (every kernel in kernels/ does)."""
        gx, gy, gz = (tuple(grid) + (1, 1))[:3]
        bx, by, bz = (tuple(block) + (1, 1))[:3]
        if smem > self.max_dynamic_smem:
            raise ValueError(f"{self.name}: {smem} bytes of dynamic shared memory > allowed {self.max_dynamic_smem}")
        params, _holders = self._pack(args)
        drv = _driver._drv()
        if not pdl:
            check(drv.cuLaunchKernel(self.handle, gx, gy, gz, bx, by, bz, smem, stream.handle,
                                     ctypes.addressof(params), 0), self.name)
            return
        if self._pdl_attr is None:
            attr = drv.CUlaunchAttribute()
            attr.id = drv.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
            attr.value.programmaticStreamSerializationAllowed = 1
            self._pdl_attr = attr
        cfg = drv.CUlaunchConfig()
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = gx, gy, gz
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = bx, by, bz
        cfg.sharedMemBytes = smem
        cfg.hStream = stream.handle
        cfg.attrs = [self._pdl_attr]
        cfg.numAttrs = 1
        check(drv.cuLaunchKernelEx(cfg, self.handle, ctypes.addressof(params), 0), self.name)


class Module:
    """A cubin loaded into the current context."""

    def __init__(self, name: str, cubin: bytes):
        self.name = name
        self.handle = check(_driver._drv().cuModuleLoadData(cubin), f"cuModuleLoadData({name})")
        self.kernels: dict[str, Kernel] = {}

    def kernel(self, name: str, signature: str) -> Kernel:
        if name not in self.kernels:
            handle = check(_driver._drv().cuModuleGetFunction(self.handle, name.encode()), f"cuModuleGetFunction({name})")
            self.kernels[name] = Kernel(name, handle, signature)
        return self.kernels[name]


class Graph:
    """A captured and instantiated CUDA graph: record once with `capture`, `launch` per step."""

    def __init__(self, graph, exec_handle):
        self.graph, self.exec = graph, exec_handle

    @classmethod
    def capture(cls, stream: Stream, allocator: Allocator, record) -> Graph:
        """Run `record()` with the stream in capture mode; its launches become the graph."""
        drv = _driver._drv()
        check(drv.cuStreamBeginCapture(stream.handle, drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
              "cuStreamBeginCapture")
        allocator.capturing = True
        try:
            record()
        except BaseException:
            try:
                err, graph = drv.cuStreamEndCapture(stream.handle)
                if err == drv.CUresult.CUDA_SUCCESS and graph is not None:
                    drv.cuGraphDestroy(graph)
            finally:
                allocator.end_capture()
            raise
        graph = check(drv.cuStreamEndCapture(stream.handle), "cuStreamEndCapture")
        allocator.end_capture()
        exec_handle = check(drv.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
        check(drv.cuGraphUpload(exec_handle, stream.handle), "cuGraphUpload")
        return cls(graph, exec_handle)

    def launch(self, stream: Stream) -> None:
        check(_driver._drv().cuGraphLaunch(self.exec, stream.handle), "cuGraphLaunch")

    def __del__(self):
        try:
            drv = _driver._drv()
            drv.cuGraphExecDestroy(self.exec)
            drv.cuGraphDestroy(self.graph)
        except Exception:
            pass

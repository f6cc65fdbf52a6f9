"""The CUDA driver API through cuda-python: one `check()`, and thin wrappers for the few things
the backend needs (primary context, stream, memory, copies, modules, launches, graphs).

Everything here is a small object over a driver handle; nothing hides a synchronization.
Imports stay at numpy + cuda.bindings + stdlib so a bare GPU machine can run it.
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np


class CudaError(RuntimeError):
    """A driver call failed; `name` is the CUresult name (CUDA_ERROR_...)."""

    def __init__(self, name: str, message: str, call: str = ""):
        super().__init__(f"{call + ': ' if call else ''}{name}: {message}")
        self.name = name


def _drv():
    try:  # late: `inloop --help` and CPU-only hosts never load it
        from cuda.bindings import driver
    except ImportError:  # cuda-python before 12.6 named it cuda.cuda
        from cuda import cuda as driver
    return driver


def error_name(err) -> tuple[str, str]:
    drv = _drv()
    try:
        e, name = drv.cuGetErrorName(err)
        e2, text = drv.cuGetErrorString(err)
        name = name.decode() if isinstance(name, bytes) else str(name)
        text = text.decode() if isinstance(text, bytes) else str(text)
        if e == drv.CUresult.CUDA_SUCCESS:
            return name, text if e2 == drv.CUresult.CUDA_SUCCESS else ""
    except Exception:  # the driver library itself is missing
        pass
    return getattr(err, "name", str(err)), ""


def check(result, call: str = ""):
    """Unwrap cuda-python's `(err, *values)`: raise CudaError on failure, else return the
    value (or a tuple of values, or None)."""
    drv = _drv()
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != drv.CUresult.CUDA_SUCCESS:
        name, text = error_name(err)
        raise CudaError(name, text, call)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def cuda_available() -> tuple[bool, str]:
    """(True, device description) where a CUDA device answers, else (False, why). Never raises."""
    try:
        drv = _drv()
    except Exception as exc:  # cuda-bindings not installed
        return False, f"cuda-python unavailable: {exc}"
    try:
        err, = drv.cuInit(0)
        if err != drv.CUresult.CUDA_SUCCESS:
            return False, f"cuInit failed: {error_name(err)[0]}"
        count = check(drv.cuDeviceGetCount(), "cuDeviceGetCount")
        if count < 1:
            return False, "cuInit succeeded but no CUDA device is visible"
        dev = check(drv.cuDeviceGet(0), "cuDeviceGet")
        name = check(drv.cuDeviceGetName(256, dev), "cuDeviceGetName")
        return True, name.split(b"\0", 1)[0].decode(errors="replace")
    except Exception as exc:  # no libcuda (DynamicLibNotFoundError), driver too old, ...
        return False, f"cuInit failed: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class DeviceInfo:
    ordinal: int
    name: str
    capability: tuple[int, int]
    sm_count: int
    smem_optin: int          # max dynamic shared memory per block after opting in
    total_memory: int
    driver_version: int
    memory_pools: bool


class Device:
    """The primary context of one device, made current on each thread that uses it."""

    def __init__(self, ordinal: int = 0):
        drv = _drv()
        check(drv.cuInit(0), "cuInit")
        self.handle = check(drv.cuDeviceGet(ordinal), "cuDeviceGet")
        self.context = check(drv.cuDevicePrimaryCtxRetain(self.handle), "cuDevicePrimaryCtxRetain")
        self._local = threading.local()
        self.make_current()
        attr = drv.CUdevice_attribute

        def get(a):
            return check(drv.cuDeviceGetAttribute(a, self.handle), "cuDeviceGetAttribute")

        name = check(drv.cuDeviceGetName(256, self.handle), "cuDeviceGetName")
        self.info = DeviceInfo(
            ordinal=ordinal,
            name=name.split(b"\0", 1)[0].decode(errors="replace"),
            capability=(get(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                        get(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)),
            sm_count=get(attr.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
            smem_optin=get(attr.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
            total_memory=check(drv.cuDeviceTotalMem(self.handle), "cuDeviceTotalMem"),
            driver_version=check(drv.cuDriverGetVersion(), "cuDriverGetVersion"),
            memory_pools=bool(get(attr.CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)),
        )

    def make_current(self) -> None:
        """Bind the context to the calling thread (cheap after the first call on a thread)."""
        if getattr(self._local, "bound", False):
            return
        check(_drv().cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
        self._local.bound = True

    def synchronize(self) -> None:
        check(_drv().cuCtxSynchronize(), "cuCtxSynchronize")

    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory (cuMemGetInfo); "used" counts every process."""
        self.make_current()
        free, total = check(_drv().cuMemGetInfo(), "cuMemGetInfo")
        return int(free), int(total)


class Stream:
    def __init__(self):
        drv = _drv()
        self.handle = check(drv.cuStreamCreate(drv.CUstream_flags.CU_STREAM_NON_BLOCKING), "cuStreamCreate")

    def synchronize(self) -> None:
        check(_drv().cuStreamSynchronize(self.handle), "cuStreamSynchronize")


class Event:
    def __init__(self, timing: bool = True):
        drv = _drv()
        flags = 0 if timing else drv.CUevent_flags.CU_EVENT_DISABLE_TIMING
        self.handle = check(drv.cuEventCreate(flags), "cuEventCreate")

    def record(self, stream: Stream) -> None:
        check(_drv().cuEventRecord(self.handle, stream.handle), "cuEventRecord")

    def synchronize(self) -> None:
        check(_drv().cuEventSynchronize(self.handle), "cuEventSynchronize")

    def elapsed_ms(self, start: Event) -> float:
        return float(check(_drv().cuEventElapsedTime(start.handle, self.handle), "cuEventElapsedTime"))


class Allocator:
    """Stream-ordered device memory (cuMemAllocAsync from the device's default pool, kept
    cached), falling back to cuMemAlloc. Frees requested while a stream is being captured are
    deferred, so no free ever lands inside a graph."""

    def __init__(self, device: Device, stream: Stream):
        self.device, self.stream = device, stream
        self.async_ok = device.info.memory_pools
        self.capturing = False
        self._deferred: list[int] = []
        self.bytes_in_use = 0
        if self.async_ok:
            drv = _drv()
            try:  # keep freed memory in the pool instead of returning it at every sync
                pool = check(drv.cuDeviceGetDefaultMemPool(device.handle), "cuDeviceGetDefaultMemPool")
                check(drv.cuMemPoolSetAttribute(pool, drv.CUmemPool_attribute.CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                                                drv.cuuint64_t(2**64 - 1)), "cuMemPoolSetAttribute")
            except Exception:
                pass  # only a speed concern

    def alloc(self, nbytes: int) -> int:
        if self.capturing:
            raise RuntimeError("device allocation during graph capture: preallocate the buffers")
        drv = _drv()
        nbytes = max(int(nbytes), 256)
        if self.async_ok:
            ptr = check(drv.cuMemAllocAsync(nbytes, self.stream.handle), "cuMemAllocAsync")
        else:
            ptr = check(drv.cuMemAlloc(nbytes), "cuMemAlloc")
        self.bytes_in_use += nbytes
        return int(ptr)

    def free(self, ptr: int, nbytes: int = 0) -> None:
        if self.capturing:
            self._deferred.append(ptr)
            return
        self.device.make_current()  # the garbage collector may run on any thread
        drv = _drv()
        if self.async_ok:
            check(drv.cuMemFreeAsync(ptr, self.stream.handle), "cuMemFreeAsync")
        else:
            check(drv.cuMemFree(ptr), "cuMemFree")
        self.bytes_in_use -= max(int(nbytes), 256) if nbytes else 0

    def end_capture(self) -> None:
        self.capturing = False
        deferred, self._deferred = self._deferred, []
        for ptr in deferred:
            self.free(ptr)


class DeviceBuffer:
    """Owns one device allocation; frees it (stream-ordered) when collected."""

    __slots__ = ("_allocator", "nbytes", "ptr")

    def __init__(self, allocator: Allocator, nbytes: int):
        self._allocator = allocator
        self.nbytes = int(nbytes)
        self.ptr = allocator.alloc(nbytes)

    def __del__(self):
        try:
            if self.ptr:
                self._allocator.free(self.ptr, self.nbytes)
                self.ptr = 0
        except Exception:  # interpreter shutdown: the driver may already be gone
            pass


class PinnedBuffer:
    """Page-locked host memory with a numpy view (uint8), for staging and async copies."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = int(check(_drv().cuMemHostAlloc(self.nbytes, 0), "cuMemHostAlloc"))
        self.array = np.ctypeslib.as_array((ctypes.c_uint8 * self.nbytes).from_address(self.ptr))

    def view(self, dtype, count: int, offset: int = 0) -> np.ndarray:
        return self.array[offset: offset + count * np.dtype(dtype).itemsize].view(dtype)

    def __del__(self):
        try:
            if self.ptr:
                _drv().cuMemFreeHost(self.ptr)
                self.ptr = 0
        except Exception:
            pass


def copy_htod(dst: int, src_ptr: int, nbytes: int, stream: Stream) -> None:
    check(_drv().cuMemcpyHtoDAsync(dst, src_ptr, nbytes, stream.handle), "cuMemcpyHtoDAsync")


def copy_dtoh(dst_ptr: int, src: int, nbytes: int, stream: Stream) -> None:
    check(_drv().cuMemcpyDtoHAsync(dst_ptr, src, nbytes, stream.handle), "cuMemcpyDtoHAsync")


def copy_dtod(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    check(_drv().cuMemcpyDtoDAsync(dst, src, nbytes, stream.handle), "cuMemcpyDtoDAsync")


def memset_d8(dst: int, value: int, nbytes: int, stream: Stream) -> None:
    check(_drv().cuMemsetD8Async(dst, value, nbytes, stream.handle), "cuMemsetD8Async")

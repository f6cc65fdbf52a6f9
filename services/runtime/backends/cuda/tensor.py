"""Device tensors: a pointer, a shape and a dtype, kept alive by the buffer they view."""
from __future__ import annotations

import numpy as np

from .driver import DeviceBuffer

# dtype name -> (numpy dtype of the raw elements, bytes per element)
DTYPES = {"f32": (np.float32, 4), "bf16": (np.uint16, 2), "f16": (np.float16, 2), "i32": (np.int32, 4)}
WEIGHT_DTYPES = ("bf16", "f16")  # how weights are stored (kernels_registry.for_weights)


class DeviceTensor:
    """Row-major, contiguous. `buffer` owns the memory (None for memory owned elsewhere)."""

    __slots__ = ("buffer", "dtype", "ptr", "shape")

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: str, buffer: DeviceBuffer | None = None):
        if dtype not in DTYPES:
            raise ValueError(f"unknown device dtype {dtype!r}")
        self.ptr, self.shape, self.dtype, self.buffer = int(ptr), tuple(int(s) for s in shape), dtype, buffer

    @classmethod
    def empty(cls, allocator, shape, dtype: str) -> DeviceTensor:
        n = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype][1]
        buf = DeviceBuffer(allocator, n)
        return cls(buf.ptr, shape, dtype, buf)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype][1]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    def rows(self, start: int, stop: int) -> DeviceTensor:
        """Rows [start, stop) of a 2-D tensor, sharing memory."""
        assert len(self.shape) == 2 and 0 <= start <= stop <= self.shape[0], (self.shape, start, stop)
        return DeviceTensor(self.ptr + start * self.shape[1] * self.itemsize, (stop - start, self.shape[1]),
                            self.dtype, self.buffer)

    def reshape(self, *shape: int) -> DeviceTensor:
        assert int(np.prod(shape)) == self.numel, (self.shape, shape)
        return DeviceTensor(self.ptr, shape, self.dtype, self.buffer)

    def free(self) -> None:
        """Release the memory now (the tensor must not be used afterwards)."""
        if self.buffer is not None:
            self.buffer.__del__()
            self.buffer = None
        self.ptr = 0

    def __repr__(self) -> str:
        return f"DeviceTensor({self.dtype}{list(self.shape)} @ {self.ptr:#x})"

"""Weight upload: raw bytes -> pinned staging -> device -> bf16 (or fp16) on the device.

Two pinned slots alternate, so filling one (the host read of the memory-mapped file) overlaps
the other's DMA and conversion kernel. Every stage is timed; `summary()` is logged once the
model is up. A source already in the destination's type (bf16 -> bf16, fp16 -> fp16) is
copied straight into place; any other lands in a device scratch slot and a convert kernel
writes the destination's type.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from .driver import Allocator, DeviceBuffer, Event, PinnedBuffer, Stream, copy_htod
from .ops import Ops
from .tensor import DeviceTensor

log = logging.getLogger("inloop.cuda")

CHUNK_BYTES = 16 << 20  # per slot; a multiple of 16 so every chunk starts 16-byte aligned
SOURCE_DTYPES = {"F32": 4, "F16": 2, "BF16": 2}


def source_dtype(array: np.ndarray) -> tuple[np.ndarray, str]:
    """(raw contiguous 1-D array, safetensors dtype name) for a host floating array."""
    if array.dtype.name == "bfloat16":  # ml_dtypes
        return np.ascontiguousarray(array).reshape(-1).view(np.uint16), "BF16"
    if array.dtype == np.float16:
        return np.ascontiguousarray(array).reshape(-1), "F16"
    return np.ascontiguousarray(array, dtype=np.float32).reshape(-1), "F32"


class Uploader:
    def __init__(self, allocator: Allocator, stream: Stream, ops: Ops):
        self.allocator, self.stream, self.ops = allocator, stream, ops
        self._pinned: list[PinnedBuffer] = []
        self._scratch: list[DeviceBuffer] = []
        self._events: list[Event] = []
        self._in_use = [False, False]
        self._slot = 0
        self.stats = {"tensors": 0, "source_bytes": 0, "device_bytes": 0, "host_read_s": 0.0,
                      "slot_wait_s": 0.0, "enqueue_s": 0.0, "total_s": 0.0}
        self._gpu_start: Event | None = None

    def _ensure_slots(self) -> None:
        if not self._pinned:
            self._pinned = [PinnedBuffer(CHUNK_BYTES) for _ in range(2)]
            self._scratch = [DeviceBuffer(self.allocator, CHUNK_BYTES) for _ in range(2)]
            self._events = [Event(timing=False) for _ in range(2)]
            self._gpu_start = Event()
            self._gpu_start.record(self.stream)

    def upload(self, raw: np.ndarray, src_dtype: str, dst: DeviceTensor, offset: int = 0) -> None:
        """raw: 1-D array of the stored elements (uint16 bits for BF16), written to dst (bf16 or
        f16) from element `offset` on (a part of a fused tensor: q|k|v, gate|up)."""
        t0 = time.perf_counter()
        itemsize = SOURCE_DTYPES[src_dtype]
        n = raw.size
        assert dst.dtype in ("bf16", "f16") and offset + n <= dst.numel, (dst, offset, n)
        direct = src_dtype == dst.dtype.upper()
        assert direct or offset % 4 == 0, "converted parts must start at a multiple of 4"
        assert raw.dtype.itemsize == itemsize, (raw.dtype, src_dtype)
        self._ensure_slots()
        data = raw.view(np.uint8)
        per_chunk = CHUNK_BYTES // itemsize
        for start in range(0, n, per_chunk):
            count = min(per_chunk, n - start)
            slot = self._slot
            self._slot ^= 1
            if self._in_use[slot]:  # its previous DMA and conversion must be done with it
                tw = time.perf_counter()
                self._events[slot].synchronize()
                self.stats["slot_wait_s"] += time.perf_counter() - tw
            tr = time.perf_counter()
            pinned = self._pinned[slot]
            pinned.array[: count * itemsize] = data[start * itemsize: (start + count) * itemsize]
            te = time.perf_counter()
            self.stats["host_read_s"] += te - tr
            if direct:
                copy_htod(dst.ptr + 2 * (offset + start), pinned.ptr, count * 2, self.stream)
            else:
                copy_htod(self._scratch[slot].ptr, pinned.ptr, count * itemsize, self.stream)
                self.ops.convert(self._scratch[slot].ptr, src_dtype, dst, offset + start, count)
            self._events[slot].record(self.stream)
            self._in_use[slot] = True
            self.stats["enqueue_s"] += time.perf_counter() - te
        self.stats["tensors"] += 1
        self.stats["source_bytes"] += n * itemsize
        self.stats["device_bytes"] += n * 2
        self.stats["total_s"] += time.perf_counter() - t0

    def summary(self) -> dict:
        """Wait for the queued uploads and report the stages (GPU time from the first upload)."""
        out = dict(self.stats)
        if self._gpu_start is not None:
            end = Event()
            end.record(self.stream)
            end.synchronize()
            out["gpu_span_ms"] = round(end.elapsed_ms(self._gpu_start), 3)
        gb = out["source_bytes"] / 1e9
        out["host_read_gb_s"] = round(gb / out["host_read_s"], 2) if out["host_read_s"] else None
        for k in ("host_read_s", "slot_wait_s", "enqueue_s", "total_s"):
            out[k] = round(out[k], 4)
        log.info("cuda weight upload: %s", out)
        return out

    def release(self) -> None:
        """Give the pinned staging memory back (after the model is up)."""
        self.stream.synchronize()
        self._pinned, self._scratch, self._events = [], [], []
        self._in_use = [False, False]

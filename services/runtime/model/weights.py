"""Safetensors weights: single file or sharded (`model.safetensors.index.json`).

Tensors are memory-mapped and exposed raw (dtype name, shape, bytes) so that a GPU
backend can upload bf16/fp16 as they are and convert on the device, and as float32
numpy arrays for the numpy backend. We parse the header ourselves for BF16 because
numpy has no bfloat16 and safetensors' numpy frontend refuses it; the format is an
8-byte header length, a JSON header, then the raw little-endian data.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inloop.services.runtime.model.config import ModelLoadError

_NUMPY_DTYPES = {
    "F32": np.float32, "F16": np.float16, "F64": np.float64,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BF16": np.uint16,  # raw bits; widened to float32 by bf16_to_float32
}


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bf16 is the top half of a float32: shift the bits up."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


@dataclass(frozen=True)
class RawTensor:
    dtype: str          # safetensors dtype name: F32, F16, BF16, ...
    shape: tuple[int, ...]
    data: np.ndarray    # 1-D view of the stored elements (uint16 bits for BF16)

    def to_float32(self) -> np.ndarray:
        if self.dtype == "BF16":
            out = bf16_to_float32(self.data)
        else:
            out = self.data.astype(np.float32, copy=False)
        return out.reshape(self.shape)


class SafetensorsFile:
    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        self._header = header
        self._base = 8 + header_len
        self._mmap = np.memmap(path, dtype=np.uint8, mode="r")

    def keys(self) -> list[str]:
        return list(self._header)

    def raw(self, name: str) -> RawTensor:
        entry = self._header[name]
        dtype = entry["dtype"]
        if dtype not in _NUMPY_DTYPES:
            raise ModelLoadError(f"{self.path.name}: tensor {name} has unsupported dtype {dtype}")
        start, end = entry["data_offsets"]
        data = self._mmap[self._base + start: self._base + end].view(_NUMPY_DTYPES[dtype])
        return RawTensor(dtype, tuple(entry["shape"]), data)


class Weights:
    """All tensors of a model directory, by HF name."""

    def __init__(self, model_dir: str | Path):
        model_dir = Path(model_dir)
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in model_dir.glob("*.safetensors"))
        if not files:
            raise ModelLoadError(f"no *.safetensors files in {model_dir}")
        self._where: dict[str, SafetensorsFile] = {}
        for fname in files:
            path = model_dir / fname
            if not path.is_file():
                raise ModelLoadError(f"shard {fname} named by the index is missing from {model_dir}")
            sf = SafetensorsFile(path)
            for key in sf.keys():
                self._where[key] = sf

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def names(self) -> list[str]:
        return list(self._where)

    def raw(self, name: str, shape: tuple[int, ...] | None = None) -> RawTensor:
        if name not in self._where:
            raise ModelLoadError(f"missing tensor {name!r} in the model's safetensors")
        t = self._where[name].raw(name)
        if shape is not None and tuple(t.shape) != tuple(shape):
            raise ModelLoadError(f"tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}")
        return t

    def float32(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        return self.raw(name, shape).to_float32()

    def storage_dtype(self) -> str:
        """The floating dtype most tensors are stored in (BF16, F16 or F32)."""
        counts: dict[str, int] = {}
        for name, sf in self._where.items():
            d = sf._header[name]["dtype"]
            counts[d] = counts.get(d, 0) + 1
        return max(counts, key=counts.get)

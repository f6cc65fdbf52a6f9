"""CudaBackend: the backend interface on one NVIDIA GPU, with NVRTC-compiled kernels.

Weights are bf16 (fp16 for an fp16 checkpoint), the KV cache bf16; activations are fp32 (tiny at batch 1, and they keep
parity with the numpy reference tight); every op accumulates in fp32. Ops run on one
stream and return without synchronizing; `to_host` and `synchronize` wait. Entry points
(uploads, ids, embedding, to_host, ...) bind the device's primary context to the calling
thread, so a server may call from any worker thread.

The op interface serves any caller of `Transformer.forward`; at speed, `graph_runner(model)`
runs prefill (prefill.py, bucketed graphs) and decode (decode.py, the whole step as one
CUDA graph) with logits or GPU sampling.
"""
from __future__ import annotations

import logging
import os
import time

import numpy as np

from inloop.services.contract.backend import Backend, KVCache, PagedKV, SeqSlots
from inloop.services.runtime.backends.cpu.backend import rope_cos_sin
from inloop.services.contract.step_runner import DeviceSampling

from . import compiler
from .driver import Allocator, Device, Stream, copy_dtod, copy_dtoh, copy_htod, memset_d8
from .gemv_tuning import GemvTuner
from .gemv_tuning import enabled_by_env as gemv_enabled_by_env
from .kernels_registry import KernelSet
from .ops import Ops, Workspace
from .paged import paged_plan
from .state import DECODE_STATE, new_state, set_sampling
from .tensor import DTYPES, WEIGHT_DTYPES, DeviceTensor
from .upload import Uploader, source_dtype

log = logging.getLogger("inloop.cuda")


class CudaBackend(Backend):
    name = "cuda"
    compute_dtype = "bfloat16"
    paged_kv = True        # the batching core's block pool (alloc_paged_kv, paged_attention)
    kv_element_bytes = 2   # bf16 K/V

    def __init__(self, device: int = 0, arch: str | None = None, pdl: bool | None = None,
                 gemv_tune: bool | None = None):
        t0 = time.perf_counter()
        self.device = Device(device)
        self.info = self.device.info
        self.stream = Stream()
        self.allocator = Allocator(self.device, self.stream)
        self.arch = arch or compiler.arch_for_capability(*self.info.capability)
        self.kernels = KernelSet(self.arch)
        self.ops = Ops(self.kernels, self.stream, self.allocator, self.info)
        if pdl is None:
            pdl = os.environ.get("INLOOP_CUDA_PDL", "1") != "0"
        # programmatic dependent launch needs sm_90; used only inside captured graphs
        self.pdl = bool(pdl) and self.info.capability >= (9, 0)
        # decode GEMV configs measured on this card before the first decode graph (cached on disk)
        self.gemv_tuner = GemvTuner(self) if (gemv_enabled_by_env() if gemv_tune is None else gemv_tune) else None
        self.uploader = Uploader(self.allocator, self.stream, self.ops)
        self._sample_state = DeviceTensor.empty(self.allocator, (DECODE_STATE.itemsize // 4,), "i32")
        # the op path's table for scaled RoPE (rope()): frequencies it holds, rows filled
        self._op_rope, self._op_rope_key, self._op_rope_rows = Workspace(self.allocator, self.stream, "f32"), None, 0
        self._paged = None  # (seqs, plan, its device copy) of the batched step in progress
        self.start_seconds = time.perf_counter() - t0
        log.info("cuda backend: %s sm_%d%d, %d SMs, arch %s, pdl=%s, start %.3fs", self.info.name,
                 *self.info.capability, self.info.sm_count, self.arch, self.pdl, self.start_seconds)

    # ---- memory -------------------------------------------------------------------
    def _empty(self, shape, dtype: str = "f32") -> DeviceTensor:
        return DeviceTensor.empty(self.allocator, shape, dtype)

    def upload(self, array: np.ndarray, name: str = "", storage: str | None = None) -> DeviceTensor:
        """Floating arrays become 16-bit weights on the device (converted there): fp16 stays
        fp16, anything else becomes bf16, unless `storage` says which. Ints stay int32."""
        self.device.make_current()
        array = np.asarray(array)
        if array.dtype.kind == "f" or array.dtype.name == "bfloat16":
            raw, src = source_dtype(array)
            return self.upload_raw(raw, src, array.shape, name, storage)
        t = self._empty(array.shape, "i32")
        host = np.ascontiguousarray(array, dtype=np.int32)
        copy_htod(t.ptr, host.ctypes.data, host.nbytes, self.stream)
        return t

    def weight_tensor(self, shape, storage: str) -> DeviceTensor:
        """An empty weight tensor stored as `storage` ("bf16" or "f16"); the first fp16 one
        loads the fp16-weight build of the kernels (never inside a graph capture: weights
        are uploaded before any)."""
        if storage not in WEIGHT_DTYPES:
            raise ValueError(f"weights are stored as one of {WEIGHT_DTYPES}, not {storage!r}")
        self.kernels.ensure(storage)
        return self._empty(tuple(shape), storage)

    def upload_raw(self, raw: np.ndarray, src_dtype: str, shape, name: str = "",
                   storage: str | None = None) -> DeviceTensor:
        """Raw safetensors elements (F32 / F16 / BF16 bits) -> a 16-bit device tensor: `storage`,
        or fp16 for an F16 source and bf16 for the others."""
        self.device.make_current()
        t = self.weight_tensor(shape, storage or ("f16" if src_dtype == "F16" else "bf16"))
        self.uploader.upload(np.ascontiguousarray(raw).reshape(-1), src_dtype, t)
        return t

    def upload_activation(self, array: np.ndarray) -> DeviceTensor:
        """An fp32 tensor as-is (inputs computed on the host: tests, embeddings from elsewhere)."""
        self.device.make_current()
        host = np.ascontiguousarray(array, dtype=np.float32)
        t = self._empty(host.shape, "f32")
        copy_htod(t.ptr, host.ctypes.data, host.nbytes, self.stream)
        return t

    def upload_summary(self) -> dict:
        return self.uploader.summary()

    def to_host(self, t: DeviceTensor) -> np.ndarray:
        self.device.make_current()
        raw = np.empty(t.shape, dtype=DTYPES[t.dtype][0])
        if t.numel:
            copy_dtoh(raw.ctypes.data, t.ptr, t.nbytes, self.stream)
            self.stream.synchronize()
        if t.dtype == "bf16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        if t.dtype == "f16":
            return raw.astype(np.float32)
        return raw

    def ids(self, values) -> DeviceTensor:
        self.device.make_current()
        host = np.ascontiguousarray(values, dtype=np.int32).reshape(-1)
        t = self._empty((host.size,), "i32")
        copy_htod(t.ptr, host.ctypes.data, host.nbytes, self.stream)  # pageable: copied before return
        return t

    def alloc_kv(self, num_layers: int, num_kv_heads: int, capacity: int, head_dim: int) -> KVCache:
        self.device.make_current()
        shape = (num_layers, num_kv_heads, capacity, head_dim)
        k, v = self._empty(shape, "bf16"), self._empty(shape, "bf16")
        memset_d8(k.ptr, 0, k.nbytes, self.stream)
        memset_d8(v.ptr, 0, v.nbytes, self.stream)
        return KVCache(k, v, capacity)

    def alloc_paged_kv(self, num_layers, num_kv_heads, num_blocks, block_size, head_dim) -> PagedKV:
        self.device.make_current()
        # one block more than the core hands out: the bucket graphs' padding rows write
        # there (paged_step.py), so the slots are [layers, kv_heads, (num_blocks + 1) * bs, hd]
        shape = (num_layers, num_kv_heads, (num_blocks + 1) * block_size, head_dim)
        k, v = self._empty(shape, "bf16"), self._empty(shape, "bf16")
        memset_d8(k.ptr, 0, k.nbytes, self.stream)
        memset_d8(v.ptr, 0, v.nbytes, self.stream)
        return PagedKV(k, v, num_blocks, block_size)

    def paged_stepper(self, model, kv: PagedKV, max_context: int):
        """The batching core's steps (paged_step.py: one recording of the launches, a CUDA graph
        per bucket for decode-only steps; hybrid_step.py for Qwen3.5); None with
        INLOOP_CUDA_PAGED_STEP=0 (forward_paged op by op)."""
        if os.environ.get("INLOOP_CUDA_PAGED_STEP", "1") == "0":
            return None
        if hasattr(model, "alloc_paged_kv"):   # a hybrid model (Qwen3.5): hybrid_step.py
            from .hybrid_step import HybridStepper

            return HybridStepper(self, model, kv, max_context)
        from .paged_step import PagedStepper

        return PagedStepper(self, model, kv, max_context)

    def free_kv(self, cache: KVCache) -> None:
        self.device.make_current()
        for t in (cache.k, cache.v):
            if isinstance(t, DeviceTensor):
                t.free()

    def copy_kv(self, src: KVCache, dst: KVCache, length: int) -> None:
        self.device.make_current()
        L, KVH, cap_s, hd = src.k.shape
        cap_d = dst.k.shape[2]
        assert dst.k.shape == (L, KVH, cap_d, hd) and length <= min(cap_s, cap_d)
        row = hd * 2
        for a, b in ((src.k, dst.k), (src.v, dst.v)):
            for i in range(L * KVH):
                copy_dtod(b.ptr + i * cap_d * row, a.ptr + i * cap_s * row, length * row, self.stream)

    # ---- ops ----------------------------------------------------------------------
    def embedding(self, table: DeviceTensor, ids: DeviceTensor) -> DeviceTensor:
        self.device.make_current()
        out = self._empty((ids.numel, table.shape[1]))
        self.ops.embedding(table, ids, out)
        return out

    def rmsnorm(self, x: DeviceTensor, weight: DeviceTensor, eps: float) -> DeviceTensor:
        out = self._empty(x.shape)
        self.ops.rmsnorm(x, weight, out, eps)
        return out

    def add_rmsnorm(self, x, residual, weight, eps):
        out, s = self._empty(x.shape), self._empty(x.shape)
        self.ops.add_rmsnorm(x, residual, weight, out, s, eps)
        return out, s

    def linear(self, x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor | None = None) -> DeviceTensor:
        T = x.shape[0]
        out = self._empty((T, weight.shape[0]))
        if T == 1:
            self.ops.gemv(weight, x, out, bias=bias)
        else:
            self.ops.gemm(x, weight, out, bias)
        return out

    def batched_linear(self, x: DeviceTensor, weight: DeviceTensor, bias: DeviceTensor | None = None) -> DeviceTensor:
        """The batching core's projections: the tensor-core GEMM for any row count (one row too,
        where `linear` takes the GEMV), its K split fixed by the weight's shape, so a row's
        result is the same bits alone, in any batch, beside any prefill chunk."""
        out = self._empty((x.shape[0], weight.shape[0]))
        if x.shape[0]:  # a step may want no row's logits
            self.ops.gemm(x, weight, out, bias, batch_invariant=True)
        return out

    def qk_norm(self, qkv, q_weight, k_weight, eps, num_heads, num_kv_heads, head_dim) -> None:
        self.ops.rope_qknorm(qkv, None, num_heads, num_kv_heads, head_dim, 0.0, q_norm=q_weight,
                             k_norm=k_weight, eps=eps, rope=False)

    def rope(self, qkv, positions, num_heads, num_kv_heads, head_dim, theta, inv_freq=None,
             attention_scaling=1.0) -> None:
        if inv_freq is None:
            self.ops.rope_qknorm(qkv, positions, num_heads, num_kv_heads, head_dim, theta)
            return
        # A scaled RoPE (model/rope.py's frequencies for this call) reads a cos/sin table, the
        # same values the graphs' table holds. It must cover the call's last position, so the op
        # path reads the positions back (the tests' and the fallback's path, not the graphs').
        self.device.make_current()
        rows = int(np.max(self.to_host(positions))) + 1
        table = self._op_rope_table(head_dim, theta, rows, np.ascontiguousarray(inv_freq, np.float32),
                                    float(attention_scaling))
        self.ops.rope_qknorm(qkv, positions, num_heads, num_kv_heads, head_dim, theta, rope_table=table)

    def _op_rope_table(self, hd, theta, rows, inv_freq, scaling) -> tuple[DeviceTensor, int]:
        """One table, refilled when the frequencies change (dynamic RoPE past its original
        length: every call) or more rows are needed; stream order keeps launches already
        queued on the old values. Filled to the workspace's size, so a static scaling's
        decode steps refill it only as it grows."""
        key = (hd, float(theta), inv_freq.tobytes(), scaling)
        if self._op_rope_key != key or self._op_rope_rows < rows:
            grown = self._op_rope_rows if rows <= self._op_rope_rows else max(rows, 2 * self._op_rope_rows, 256)
            t = self._op_rope.get(grown * hd)
            self._op_rope_rows = t.numel // hd
            cos, sin = rope_cos_sin(np.arange(self._op_rope_rows), hd, theta, inv_freq, scaling)
            self.ops.write_rope_rows(t, 0, np.stack([cos, sin], axis=-1))
            self._op_rope_key = key
        return self._op_rope.tensor, self._op_rope_rows

    def attention(self, qkv, cache: KVCache, layer, positions, num_heads, num_kv_heads, head_dim):
        T = qkv.shape[0]
        out = self._empty((T, num_heads * head_dim))
        if T == 1:
            splits = self.ops.decode_splits(num_kv_heads, num_heads // num_kv_heads, cache.capacity, head_dim)
            self.ops.attention_decode(qkv, out, num_heads, num_kv_heads, head_dim, layer, splits,
                                      positions=positions, kc=cache.k, vc=cache.v, cap=cache.capacity)
        else:
            self.ops.kv_store(qkv, positions, cache.k, cache.v, num_heads, num_kv_heads, head_dim,
                              cache.capacity, layer)
            self.ops.attention_prefill(qkv, positions, cache.k, cache.v, out, num_heads, num_kv_heads,
                                       head_dim, cache.capacity, layer)
        return out

    def paged_attention(self, qkv, kv: PagedKV, layer, seqs: list[SeqSlots], num_heads, num_kv_heads, head_dim):
        """Store the step's k/v rows at their pool slots, then attend each row over its own
        sequence's blocks (paged.py: the step's layout, built once for all layers)."""
        T = qkv.shape[0]
        bq = max(1, 16 // (num_heads // num_kv_heads))
        plan, packed = self._paged_layout(seqs, kv.block_size, bq)
        assert plan.rows == T, (plan.rows, T)
        n_slots = kv.k.shape[2]
        slots = DeviceTensor(packed.ptr, (T,), "i32", packed.buffer)
        positions = DeviceTensor(packed.ptr + 4 * plan.positions_at, (T,), "i32", packed.buffer)
        tables = DeviceTensor(packed.ptr + 4 * plan.tables_at, (max(plan.n_tables, 1),), "i32", packed.buffer)
        tiles = DeviceTensor(packed.ptr + 4 * plan.tiles_at, (plan.n_tiles, 3), "i32", packed.buffer)
        self.ops.kv_store(qkv, slots, kv.k, kv.v, num_heads, num_kv_heads, head_dim, n_slots, layer)
        out = self._empty((T, num_heads * head_dim))
        self.ops.attention_paged(qkv, positions, tiles, plan.n_tiles, tables, kv.k, kv.v, out, num_heads, num_kv_heads,
                                 head_dim, n_slots, layer, kv.block_size, bq)
        return out

    def _paged_layout(self, seqs: list[SeqSlots], block_size: int, bq: int):
        """The step's PagedPlan and its device copy: every layer of a step passes the same `seqs`
        list (held here, so its id is not reused while cached)."""
        cached = self._paged
        if cached is None or cached[0] is not seqs or cached[1] != (block_size, bq):
            plan = paged_plan(seqs, block_size, bq)
            self._paged = cached = (seqs, (block_size, bq), plan, self.ids(plan.packed))
        return cached[2], cached[3]

    def take_rows(self, x: DeviceTensor, rows: DeviceTensor) -> DeviceTensor:
        out = self._empty((rows.numel, x.shape[1]))
        self.ops.gather_rows(x, rows, out)
        return out

    def swiglu(self, gate_up: DeviceTensor) -> DeviceTensor:
        out = self._empty((gate_up.shape[0], gate_up.shape[1] // 2))
        self.ops.swiglu(gate_up, out)
        return out

    def last_row(self, x: DeviceTensor) -> DeviceTensor:
        return x.rows(x.shape[0] - 1, x.shape[0])

    def synchronize(self) -> None:
        self.device.make_current()
        self.stream.synchronize()

    def describe(self) -> dict:
        return {"backend": self.name, "dtype": self.compute_dtype, "device": self.info.name,
                "capability": "%d.%d" % self.info.capability, "sm_count": self.info.sm_count,
                "arch": self.arch, "pdl": self.pdl, "driver_version": self.info.driver_version,
                "kernels_compiled_at_start": self.kernels.compiled,
                "kernel_compile_s": round(self.kernels.compile_seconds, 3),
                "kernel_load_s": round(self.kernels.load_seconds, 3),
                "gemv_tuning": "off" if self.gemv_tuner is None else
                f"{self.gemv_tuner.measured} shape(s) measured, {len(self.ops.gemv_choices)} known"}

    # ---- GPU sampling and the decode graph ------------------------------------------------
    def sample(self, logits: DeviceTensor,
               sampling: DeviceSampling = DeviceSampling()) -> tuple[int, float, float, float]:
        """Sample one token from logits [1, V] on the GPU: (token, logprob, entropy, margin), the
        statistics from the temperature-1 distribution (as engine/sampler.py defines them)."""
        self.device.make_current()
        host = new_state()
        set_sampling(host, sampling)
        st = self._sample_state
        copy_htod(st.ptr, host.ctypes.data, host.nbytes, self.stream)
        self.ops.sample(logits, st)
        copy_dtoh(host.ctypes.data, st.ptr, host.nbytes, self.stream)
        self.stream.synchronize()
        s = host[0]
        return int(s["token"]), float(s["logprob"]), float(s["entropy"]), float(s["margin"])

    def decode_graph(self, model, max_capacity: int, sample: bool = True):
        """A DecodeGraph for `model` (a Transformer built on this backend): see decode.py."""
        from .decode import DecodeGraph

        return DecodeGraph(self, model, max_capacity, sample=sample)

    def graph_runner(self, model, max_capacity: int):
        """Prefill and decode through CUDA graphs for `model` (see prefill.GraphRunner)."""
        from .prefill import GraphRunner

        return GraphRunner(self, model, max_capacity)

    # ---- what the engine asks for (engine/step_runner.py) ---------------------------------
    def load_model(self, cfg, weights):
        """The Transformer with its weights loaded straight to the GPU (loader.py: raw stored
        bytes, converted on the device; no float32 copy on the host). An fp16 checkpoint keeps
        fp16 weights (and runs the fp16-weight build of the kernels); any other is bf16."""
        from .loader import load_transformer

        stored = weights.storage_dtype()
        storage = "f16" if stored == "F16" else "bf16"
        model = load_transformer(self, cfg, weights, storage)
        log.info("weights loaded to the GPU: stored %s, kept %s, %.3fs", stored, storage, model.load_seconds)
        return model

    def step_runner(self, model, max_capacity: int):
        """The engine's fast path: prefill and decode graphs, sampling on the GPU (step_runner.py).
        None for a model the graphs do not describe (Qwen3.5's hybrid layers run op by op, through
        its forward and CudaLinearAttention): the engine then uses the forward pass."""
        from inloop.services.runtime.model.transformer import Transformer

        from .step_runner import CudaStepRunner

        if not isinstance(model, Transformer):
            return None
        return CudaStepRunner(self, model, max_capacity)

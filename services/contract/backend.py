"""The backend interface: the small set of buffers and ops the forward pass is written against.

The model code (runtime/model/transformer.py) is written once against this
interface; the engine reaches a backend only through it (and through the StepRunner a
backend may provide, step_runner.py). `backends/cpu` (numpy, float32) is the reference; `backends/cuda` implements the
same ops with NVRTC-compiled kernels and must match it op by op.

Conventions every backend follows:
  * A `Tensor` is whatever the backend uses for memory (numpy array, device pointer
    wrapper). The model never looks inside it; it only passes it back to ops.
  * Activations are row-major [T, N]: T tokens of one sequence, N features.
  * Linear weights are HF's [out_features, in_features]; `linear` computes x @ W^T + b.
  * The fused projections: qkv rows are q (num_heads*head_dim) | k | v, and gate_up
    rows are gate (intermediate) | up (intermediate).
  * Positions and lengths are device-resident int32 tensors, never Python ints, so a
    CUDA backend can capture one decode step in a graph and replay it for every position.
  * RoPE is HF's rotate-half form: for i < head_dim/2, (x[i], x[i+half]) rotate by
    pos * theta^(-2i/head_dim).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from inloop.services.contract.step_runner import StepRunner

Tensor = Any


@dataclass
class KVCache:
    """Keys and values of one sequence: k and v are [num_layers, num_kv_heads, capacity, head_dim].

    `length` is the number of valid positions; it is host bookkeeping kept by the engine.
    Positions >= length hold stale data and are overwritten by the next store.
    """

    k: Tensor
    v: Tensor
    capacity: int
    length: int = 0
    # A KV cache can be cut back to any prefix (`length = keep`). A model with linear-attention
    # layers keeps, beside it, a fixed-size state per sequence that describes exactly the
    # `length` tokens fed: such a cache grows but is never cut back (the engine starts afresh).
    rewindable: ClassVar[bool] = True

    def carry_state(self, dst: "KVCache") -> None:
        """Hand the state that is not stored per position to dst, a grown copy of this cache
        (nothing for a plain KV cache)."""


@dataclass
class PagedKV:
    """One pool of KV blocks that every sequence's block table points into: k and v are
    [num_layers, num_kv_heads, num_blocks * block_size, head_dim]; position p of a sequence
    lives at slot blocks[p // block_size] * block_size + p % block_size."""

    k: Tensor
    v: Tensor
    num_blocks: int
    block_size: int


@dataclass(frozen=True)
class SeqSlots:
    """Where one sequence's rows of a batched step read and write the pool.

    Its `rows` rows are consecutive in the step's activations and are the last `rows`
    positions of its `context` (positions context-rows .. context-1). `slots` [context]
    is the pool slot of every position; `runs` the same as (first slot, positions) of each
    stretch of consecutive slots, in order (one run: the keys are a view of the pool).
    `state`: the sequence's slot in a model's per-sequence state pool (a hybrid model's
    linear-attention state; -1 for a model without one)."""

    rows: int
    context: int
    slots: np.ndarray
    runs: tuple[tuple[int, int], ...]
    state: int = -1


class Backend(ABC):
    """Memory and ops for one device. Each op returns a new tensor unless it says in place."""

    name: str = "abstract"
    compute_dtype: str = "float32"

    # ---- memory -------------------------------------------------------------------
    @abstractmethod
    def upload(self, array: np.ndarray, name: str = "") -> Tensor:
        """Copy a host array (weights or a constant table) to the device, in the backend's
        storage dtype for floating arrays (float32 here, bf16 on CUDA) and as-is for ints."""

    @abstractmethod
    def to_host(self, t: Tensor) -> np.ndarray:
        """Copy a tensor back as a numpy array (float32 for floating tensors)."""

    @abstractmethod
    def ids(self, values: np.ndarray) -> Tensor:
        """An int32 device tensor holding token ids or positions."""

    @abstractmethod
    def alloc_kv(self, num_layers: int, num_kv_heads: int, capacity: int, head_dim: int) -> KVCache:
        """A zeroed KV cache for one sequence of up to `capacity` positions."""

    def free_kv(self, cache: KVCache) -> None:
        """Release a cache's memory (no-op where the garbage collector does it)."""

    @abstractmethod
    def copy_kv(self, src: KVCache, dst: KVCache, length: int) -> None:
        """Copy positions [0, length) of every layer from src to dst (growing a reused cache)."""

    # ---- ops ----------------------------------------------------------------------
    @abstractmethod
    def embedding(self, table: Tensor, ids: Tensor) -> Tensor:
        """table [V, D], ids [T] -> [T, D]."""

    @abstractmethod
    def rmsnorm(self, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        """x [T, D] -> x / rms(x) * weight."""

    @abstractmethod
    def add_rmsnorm(self, x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        """Fused residual add and norm: s = x + residual; returns (rmsnorm(s) * weight, s)."""

    @abstractmethod
    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """x [T, K], weight [N, K], bias [N] -> [T, N]."""

    @abstractmethod
    def qk_norm(self, qkv: Tensor, q_weight: Tensor, k_weight: Tensor, eps: float,
                num_heads: int, num_kv_heads: int, head_dim: int) -> None:
        """In place: RMSNorm over each head_dim slice of the q and k parts of qkv [T, qkv_size]
        (qwen3), with per-dimension weights q_weight/k_weight [head_dim]."""

    @abstractmethod
    def rope(self, qkv: Tensor, positions: Tensor, num_heads: int, num_kv_heads: int,
             head_dim: int, theta: float, inv_freq: np.ndarray | None = None,
             attention_scaling: float = 1.0) -> None:
        """In place: rotate the q and k heads of qkv [T, qkv_size] by positions [T].
        With `inv_freq` (float32 [head_dim/2], a scaled RoPE: model/rope.py) the angles are
        pos * inv_freq instead of pos * theta^(-2i/head_dim), and cos/sin are multiplied by
        `attention_scaling` (yarn)."""

    @abstractmethod
    def attention(self, qkv: Tensor, cache: KVCache, layer: int, positions: Tensor,
                  num_heads: int, num_kv_heads: int, head_dim: int) -> Tensor:
        """Store this step's k and v into `cache` at `positions`, then causal GQA attention:
        query t attends to cache positions 0..positions[t]. Returns [T, num_heads*head_dim]."""

    @abstractmethod
    def swiglu(self, gate_up: Tensor) -> Tensor:
        """gate_up [T, 2F] -> silu(gate) * up, [T, F]."""

    # ---- paged KV (continuous batching); a backend without them serves one sequence at a time
    paged_kv = False
    kv_element_bytes = 4   # bytes per K/V element in the block pool (the core sizes it by them)

    def alloc_paged_kv(self, num_layers: int, num_kv_heads: int, num_blocks: int, block_size: int,
                       head_dim: int) -> PagedKV:
        """A KV block pool (memory is committed as blocks are first written where the OS allows)."""
        raise NotImplementedError(f"{self.name}: no paged KV cache")

    def paged_attention(self, qkv: Tensor, kv: PagedKV, layer: int, seqs: list[SeqSlots],
                        num_heads: int, num_kv_heads: int, head_dim: int) -> Tensor:
        """The batched step's attention: qkv [T, qkv_size] holds the rows of `seqs` one
        sequence after another; store each row's k and v at its slot, then causal GQA
        attention of each sequence's rows over its own context only. [T, num_heads*head_dim]."""
        raise NotImplementedError(f"{self.name}: no paged KV cache")

    def batched_linear(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """`linear` in a batched step of the core (forward_paged). A backend whose `linear`
        picks its kernel by row count (CUDA: a GEMV for one row) keeps one here, so each row's
        result is the same bits whatever else is in the batch (batch invariance)."""
        return self.linear(x, weight, bias)

    def take_rows(self, x: Tensor, rows: Tensor) -> Tensor:
        """x [T, N], rows int32 [R] -> [R, N] (the rows whose logits a step needs)."""
        raise NotImplementedError

    def last_row(self, x: Tensor) -> Tensor:
        """x [T, N] -> [1, N], the last token's row (prefill only needs its logits)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued work (no-op on synchronous backends)."""

    def describe(self) -> dict:
        """A few facts for logs and reports (device name, dtype)."""
        return {"backend": self.name, "dtype": self.compute_dtype}

    # ---- optional capabilities: the defaults are the engine's generic path ----------
    def load_model(self, cfg: Any, weights: Any) -> Any | None:
        """The model loaded this backend's own way (CUDA: straight to the GPU), or None for
        the generic Transformer over this backend's ops."""
        return None

    def paged_stepper(self, model: Any, kv: PagedKV, max_context: int) -> Any | None:
        """The batching core's steps run this backend's own way (CUDA: fused launches, a graph
        per batch-size bucket for decode-only steps): an object with `run(ids, seqs,
        logit_rows)` -> logits [len(logit_rows), V] on the host; or None for forward_paged."""
        return None

    def step_runner(self, model: Any, max_capacity: int) -> "StepRunner | None":
        """This backend's own StepRunner (CUDA: prefill and decode graphs, sampling on the
        device), or None for the op-by-op forward pass with host sampling."""
        return None

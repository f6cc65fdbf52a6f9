"""One Python launcher per kernel: each asserts its shapes and owns its grid/block choice.

Launchers write into tensors the caller allocated, so the same code runs eagerly (the op
interface in backend.py) and under stream capture (decode.py), where nothing may allocate.
"""
from __future__ import annotations

import math

import numpy as np

from .driver import Allocator, DeviceInfo, Stream, copy_htod, memset_d8
from .gemv_tuning import choice_key
from .kernels_registry import HEAD_DIM_VARIANTS, KernelSet, for_weights
from .state import SAMPLE_STATS_BYTES
from .tensor import WEIGHT_DTYPES, DeviceTensor

ROPE_FLAG_ROPE, ROPE_FLAG_NORM, ROPE_FLAG_STORE = 1, 2, 4
GEMV_U = 4                 # 16-byte chunks in flight per thread (kernels/gemv.cu GEMV_U)
ATT_WARPS = 4              # warps per decode attention block (one block per split and query head)
ATT_STAGE_ELEMS, ATT_KPAD = 8192, 8  # decode attention's shared K/V stage (kernels/attention_decode.cu)
GEMM_TILE, GEMM_BK = 64, 32
GEMM_RESIDUAL, GEMM_ROW_SS = 1, 2  # kernels/gemm.cu mode bits (the input transforms are entry points)


def _aligned(t: DeviceTensor, n: int = 16) -> bool:
    return t.ptr % n == 0


def _ptr(t: DeviceTensor | None) -> int:
    return 0 if t is None else t.ptr


def head_dim_variant(hd: int) -> int:
    assert hd % 8 == 0 and hd <= HEAD_DIM_VARIANTS[-1], f"head_dim {hd}: need a multiple of 8 up to 256"
    return next(d for d in HEAD_DIM_VARIANTS if hd <= d)


def decode_stage_keys(hd: int) -> int:
    """Keys the decode attention kernel stages in shared memory per round (ATT_STAGE(D))."""
    return ATT_STAGE_ELEMS // head_dim_variant(hd)


def decode_smem_bytes(hd: int) -> int:
    """q, new k/v (fp32), the warps' accumulators, maxima, sums and probabilities, then the K
    (padded rows) and V stage, D = the kernel variant's head_dim columns each."""
    d = head_dim_variant(hd)
    return (4 * (3 * hd + ATT_WARPS * hd + 2 * ATT_WARPS + ATT_WARPS * 32)
            + 2 * decode_stage_keys(hd) * (2 * d + ATT_KPAD))


def _for(weight: DeviceTensor, name: str, *others: DeviceTensor | None) -> str:
    """The build of kernel `name` that reads `weight`'s storage type; every other weight the
    launch reads (bias, norm) must be stored the same way."""
    assert weight.dtype in WEIGHT_DTYPES, f"{name}: weight stored as {weight.dtype}"
    for o in others:
        assert o is None or o.dtype == weight.dtype, f"{name}: weights stored as {weight.dtype} and {o.dtype}"
    return for_weights(name, weight.dtype)


class Workspace:
    """A device scratch buffer that only grows (growing is refused under capture)."""

    def __init__(self, allocator: Allocator, stream: Stream, dtype: str, zeroed: bool = False):
        self.allocator, self.stream, self.dtype, self.zeroed = allocator, stream, dtype, zeroed
        self.tensor: DeviceTensor | None = None
        self._retired: list[DeviceTensor] = []  # a captured graph may still point at an old one

    def get(self, numel: int) -> DeviceTensor:
        if self.tensor is None or self.tensor.numel < numel:
            if self.tensor is not None:
                self._retired.append(self.tensor)
            self.tensor = DeviceTensor.empty(self.allocator, (max(numel, 1024),), self.dtype)
            if self.zeroed:  # counters must start at zero; kernels leave them at zero
                memset_d8(self.tensor.ptr, 0, self.tensor.nbytes, self.stream)
        return self.tensor


class Ops:
    def __init__(self, kernels: KernelSet, stream: Stream, allocator: Allocator, info: DeviceInfo):
        self.k, self.stream, self.info = kernels, stream, info
        self.sm_count = info.sm_count
        self.pdl = False  # set while recording a graph on sm_90+
        self.gemv_choices: dict[tuple, tuple[int, int]] = {}  # measured (split-K, threads): gemv_tuning.py
        self.gemm_ws = Workspace(allocator, stream, "f32")
        self.gemm_counters = Workspace(allocator, stream, "i32", zeroed=True)
        self.att_ws = Workspace(allocator, stream, "f32")
        self.att_counters = Workspace(allocator, stream, "i32", zeroed=True)
        self.sample_ws = Workspace(allocator, stream, "f32")
        self.sample_counter = Workspace(allocator, stream, "i32", zeroed=True)
        self.allocator = allocator
        # (hd, theta) or a HostRope -> (table, rows): see rope_table
        self.rope_tables: dict[tuple, tuple[Workspace, int]] = {}

    def _launch(self, name: str, grid, block, args, smem: int = 0) -> None:
        kernel = self.k[name]
        if smem > kernel.max_dynamic_smem:
            kernel.allow_dynamic_smem(smem)
        kernel.launch(grid, block, args, self.stream, smem, self.pdl)

    # ---- elementwise and norms ---------------------------------------------------------
    def embedding(self, table: DeviceTensor, ids: DeviceTensor, out: DeviceTensor) -> None:
        V, D = table.shape
        T = out.shape[0]
        assert ids.dtype == "i32" and out.dtype == "f32" and out.shape == (T, D)
        assert ids.numel >= T
        self._launch(_for(table, "embedding"), (T,), (128,), (table.ptr, ids.ptr, out.ptr, D, V))

    def select_row(self, src: DeviceTensor, dst: DeviceTensor, state: DeviceTensor) -> None:
        """dst [1, D] = src[state.rows - 1] (the last valid row of a padded prefill)."""
        rows, D = src.shape
        assert dst.numel == D and src.dtype == dst.dtype == "f32"
        self._launch("select_row", (1,), (256,), (src.ptr, dst.ptr, state.ptr, D, rows))

    def gather_rows(self, src: DeviceTensor, rows: DeviceTensor, dst: DeviceTensor) -> None:
        """dst [R, D] = src[rows] (rows int32 [R], each < src's rows)."""
        n, D = src.shape
        R = dst.shape[0]
        assert rows.dtype == "i32" and rows.numel >= R and dst.shape == (R, D) and src.dtype == dst.dtype == "f32"
        if R:
            self._launch("gather_rows", (R,), (256,), (src.ptr, rows.ptr, dst.ptr, D, n))

    def rmsnorm(self, x: DeviceTensor, w: DeviceTensor, out: DeviceTensor, eps: float) -> None:
        T, D = x.shape
        assert x.dtype == out.dtype == "f32" and w.numel == D and out.shape == (T, D)
        self._launch(_for(w, "rmsnorm"), (T,), (256,), (x.ptr, w.ptr, out.ptr, D, eps))

    def add_rmsnorm(self, x, residual, w, out, sum_out, eps: float) -> None:
        T, D = x.shape
        assert residual.shape == out.shape == sum_out.shape == (T, D) and w.numel == D
        self._launch(_for(w, "add_rmsnorm"), (T,), (256,), (x.ptr, residual.ptr, w.ptr, out.ptr, sum_out.ptr, D, eps))

    def swiglu(self, gate_up: DeviceTensor, out: DeviceTensor) -> None:
        T, F2 = gate_up.shape
        F = F2 // 2
        assert F2 % 2 == 0 and out.shape == (T, F) and gate_up.dtype == out.dtype == "f32"
        grid = max(1, min(math.ceil(T * F / 256), 8 * self.sm_count))
        self._launch("swiglu", (grid,), (256,), (gate_up.ptr, out.ptr, T, F))

    def convert(self, src_ptr: int, src_dtype: str, dst: DeviceTensor, offset_elems: int, n: int) -> None:
        """dst[offset : offset+n] = src[0:n] in dst's type (bf16 or f16), for a raw F32 / F16 /
        BF16 source already on the device."""
        assert dst.dtype in WEIGHT_DTYPES and offset_elems + n <= dst.numel and offset_elems % 4 == 0
        name = {("F32", "bf16"): "convert_f32_bf16", ("F16", "bf16"): "convert_f16_bf16",
                ("F32", "f16"): "convert_f32_f16", ("BF16", "f16"): "convert_bf16_f16"}[(src_dtype, dst.dtype)]
        grid = max(1, min(math.ceil(n / 1024), 4 * self.sm_count))
        self._launch(name, (grid,), (256,), (src_ptr, dst.ptr + 2 * offset_elems, n))

    # ---- projections ----------------------------------------------------------------------
    def gemv_config(self, N: int, K: int, mode: str = "store") -> tuple[int, int]:
        """(split-K warps per row group, threads per block) for a decode projection: split K
        until one pass (or two) of GEMV_U loads per thread covers a row; big blocks where K is
        split 8 ways or the row groups fill every SM 64 times over."""
        chunks = K // 8
        ks = 1
        while ks < 8 and chunks > 32 * ks * GEMV_U:
            ks *= 2
        groups = N // 2 if mode == "swiglu" else math.ceil(N / 2)
        threads = 256 if ks == 8 or (ks == 1 and groups >= 64 * self.sm_count) else 128
        return ks, threads

    def gemv(self, W: DeviceTensor, x: DeviceTensor, y: DeviceTensor, *, bias: DeviceTensor | None = None,
             norm_w: DeviceTensor | None = None, eps: float = 0.0, mode: str = "store",
             config: tuple[int, int] | None = None) -> None:
        """One token: y = W·norm?(x) (+b); mode store | residual (y +=) | swiglu (rows g, g+F).
        (split-K, threads): `config`, else this card's measured choice for the shape
        (gemv_tuning.py), else gemv_config's heuristic."""
        N, K = W.shape
        assert x.dtype == y.dtype == "f32" and x.numel == K
        assert K % 8 == 0 and _aligned(W) and _aligned(x), "gemv needs K % 8 == 0 and 16-byte aligned W, x"
        assert bias is None or bias.numel == N
        assert norm_w is None or norm_w.numel == K
        F = N // 2 if mode == "swiglu" else 0
        assert y.numel == (F if mode == "swiglu" else N), (mode, y.shape, N)
        assert not (mode == "residual" and norm_w is not None), "norm + residual would alias x and y"
        name = {("store", False): "gemv_store", ("store", True): "gemv_norm_store",
                ("residual", False): "gemv_residual", ("swiglu", False): "gemv_swiglu",
                ("swiglu", True): "gemv_norm_swiglu"}[(mode, norm_w is not None)]
        ks, threads = (config or self.gemv_choices.get(choice_key(N, K, mode, norm_w is not None, W.dtype))
                       or self.gemv_config(N, K, mode))
        assert ks in (1, 2, 4, 8) and threads in (64, 128, 256) and threads >= 32 * ks, (ks, threads)
        groups = F if mode == "swiglu" else math.ceil(N / 2)
        per_block = threads // 32 // ks
        smem = 4 * K + 4 * 2 * (threads // 32)
        self._launch(_for(W, name, bias, norm_w), (math.ceil(groups / per_block),), (threads,),
                     (W.ptr, x.ptr, _ptr(bias), _ptr(norm_w), y.ptr, N, K, F, ks, eps), smem)

    def gemm(self, x: DeviceTensor, W: DeviceTensor, y: DeviceTensor, bias: DeviceTensor | None = None,
             mode: str = "store", swiglu_input: bool = False, norm: tuple | None = None,
             row_ss: DeviceTensor | None = None, batch_invariant: bool = False) -> None:
        """Several tokens on tensor cores: y (=|+=) x @ W^T (+b); K split when tiles are few.
        `batch_invariant`: the K split follows the weight's shape only (as for one 64-row tile),
        never the row count, so each row's sums run in the same order whatever M is (the
        batching core's steps: a row's result must not depend on what else is in the batch).
        With `swiglu_input`, x is gate|up [M, 2K] and the product takes silu(gate) * up.
        With `row_ss` (f32, >= M * ceil(N/64)), also each row's sum of squares of y's new values
        per 64 columns (the residual GEMMs of a prefill). With `norm` = (norm weight, row_ss,
        eps), x is the residual stream that row_ss describes and the product takes
        rmsnorm(x) * norm weight, so no rmsnorm launch is needed."""
        M, K = x.shape[0], W.shape[1]
        N = W.shape[0]
        assert x.shape == (M, 2 * K if swiglu_input else K), (x.shape, W.shape, swiglu_input)
        assert x.dtype == y.dtype == "f32" and y.shape == (M, N)
        assert K % 8 == 0 and _aligned(W) and _aligned(x), "gemm needs K % 8 == 0 and 16-byte aligned W, x"
        assert bias is None or bias.numel == N
        assert not (norm and swiglu_input), "one input transform at a time"
        assert not (norm and row_ss is not None), "row_ss is read (norm) or written (row_ss), not both"
        tiles_n, tiles_m = math.ceil(N / GEMM_TILE), math.ceil(M / GEMM_TILE)
        assert row_ss is None or (row_ss.dtype == "f32" and row_ss.numel >= M * tiles_n)
        norm_w, ss_in, eps = norm if norm is not None else (None, None, 0.0)
        assert norm is None or (norm_w.numel == K and ss_in.numel >= M * math.ceil(K / GEMM_TILE))
        k_steps = math.ceil(K / GEMM_BK)
        splits = 1
        tiles = tiles_n * (1 if batch_invariant else tiles_m)  # what the split is chosen for
        if tiles < self.sm_count and k_steps >= 4:
            # Each split's K steps and the last block's merge (two splits per round trip) are
            # both chains of memory round trips: k_steps/splits + splits/2 is least near
            # sqrt(2 k_steps). More splits than that (to fill the GPU) only lengthen the merge.
            splits = min(k_steps // 2, math.ceil(2 * self.sm_count / tiles), 16,
                         max(2, round(math.sqrt(2 * k_steps))))
        k_per_split = math.ceil(k_steps / splits) * GEMM_BK
        splits = math.ceil(K / k_per_split)
        ws = self.gemm_ws.get(splits * M * N) if splits > 1 else None
        counters = self.gemm_counters.get(tiles_n * tiles_m) if splits > 1 else None
        flags = (GEMM_RESIDUAL if mode == "residual" else 0) | (GEMM_ROW_SS if row_ss is not None else 0)
        name = "gemm_swiglu_bf16" if swiglu_input else "gemm_norm_bf16" if norm is not None else "gemm_bf16"
        self._launch(_for(W, name, bias, norm_w), (tiles_n, tiles_m, splits), (128,),
                     (x.ptr, W.ptr, _ptr(bias), y.ptr, _ptr(ws), _ptr(counters),
                      _ptr(row_ss if row_ss is not None else ss_in), _ptr(norm_w), M, N, K, k_per_split, flags, eps))

    # ---- attention ------------------------------------------------------------------------
    def rope_qknorm(self, qkv: DeviceTensor, positions: DeviceTensor | None, H: int, KVH: int, hd: int,
                    theta: float, *, q_norm: DeviceTensor | None = None, k_norm: DeviceTensor | None = None,
                    eps: float = 0.0, rope: bool = True, store_layer: int | None = None, kc=None, vc=None,
                    cap: int = 0, state: DeviceTensor | None = None, rope_table=None,
                    slots: DeviceTensor | None = None) -> None:
        """In place on qkv's q and k heads. With `store_layer`, also kv_store's job: k (roped)
        and v rows to the cache at `positions` (or at `slots`, int32 [T]: a paged pool's), from
        `state` (a DecodeState) or kc/vc/cap.
        With `rope_table` (table, rows) from rope_table(), cos/sin come from it instead of
        being computed from `theta` (the same values: see rope.cu)."""
        T, stride = qkv.shape
        assert stride == (H + 2 * KVH) * hd and qkv.dtype == "f32" and hd % 2 == 0
        store = store_layer is not None
        flags = ((ROPE_FLAG_ROPE if rope else 0) | (ROPE_FLAG_NORM if q_norm is not None else 0)
                 | (ROPE_FLAG_STORE if store else 0))
        assert not (rope or store) or (positions is not None and positions.numel >= T)
        assert not store or state is not None or (kc is not None and vc is not None and cap > 0)
        assert slots is None or (store and slots.dtype == "i32" and slots.numel >= T)
        assert (q_norm is None) == (k_norm is None)
        name = _for(q_norm, "rope_qknorm", k_norm) if q_norm is not None else "rope_qknorm"
        heads = H + (2 if store else 1) * KVH
        table, rows = rope_table if rope_table is not None else (None, 0)
        self._launch(name, (T, math.ceil(heads / 4)), (128,),
                     (qkv.ptr, _ptr(positions), _ptr(q_norm), _ptr(k_norm), _ptr(kc), _ptr(vc), _ptr(state),
                      _ptr(table), _ptr(slots), H, KVH, hd, stride, cap, store_layer or 0, rows, theta, eps, flags))

    def kv_store(self, qkv, positions, kc, vc, H, KVH, hd, cap, layer, state=None) -> None:
        """Store k/v rows at positions; the cache comes from `state` (a DecodeState) when given."""
        T = qkv.shape[0]
        assert qkv.shape[1] == (H + 2 * KVH) * hd and positions.numel >= T
        assert state is not None or (kc.dtype == vc.dtype == "bf16" and cap > 0)
        self._launch("kv_store", (T,), (128,), (qkv.ptr, positions.ptr, _ptr(kc), _ptr(vc), _ptr(state), H, KVH, hd,
                                                cap, layer))

    def attention_prefill(self, qkv, positions, kc, vc, out, H, KVH, hd, cap, layer, state=None) -> None:
        T = qkv.shape[0]
        assert state is not None or cap > 0
        G = H // KVH
        assert G <= 16, f"{G} query heads per kv head: the prefill kernel handles up to 16"
        assert out.shape == (T, H * hd) and out.dtype == "f32"
        d = head_dim_variant(hd)
        bq = max(1, 16 // G)
        smem = 128 * hd + 4 * (16 * 32 + 16 + 16) + 128 * (hd + 2)  # q, acc, sums, max, positions; K, V tiles
        self._launch(f"attention_prefill_d{d}", (math.ceil(T / bq), KVH), (128,),
                     (qkv.ptr, positions.ptr, _ptr(kc), _ptr(vc), _ptr(state), out.ptr, T, H, KVH, hd, cap, layer,
                      1.0 / math.sqrt(hd), bq), smem)

    def attention_paged(self, qkv, positions, tiles, n_tiles: int, tables, kc, vc, out, H, KVH, hd,
                        slots: int, layer: int, block_size: int, bq: int) -> None:
        """Causal attention of a batched step's rows over the block pool kc/vc [layers, KVH,
        slots, hd], their k/v already stored. `tiles` int32 [n_tiles, 3]: (first row, rows <= bq,
        offset in `tables` of its sequence's block numbers), the rows of a tile one sequence's."""
        T = qkv.shape[0]
        G = H // KVH
        assert bq * G <= 16, f"{G} query heads per kv head, {bq} rows a tile: the kernel holds 16 items"
        assert out.shape == (T, H * hd) and out.dtype == "f32" and kc.dtype == vc.dtype == "bf16"
        assert positions.numel >= T and tiles.numel >= 3 * n_tiles and slots > 0
        d = head_dim_variant(hd)
        smem = 128 * hd + 4 * (16 * 32 + 16 + 16) + 128 * (hd + 2)  # as attention_prefill's
        self._launch(f"attention_paged_d{d}", (n_tiles, KVH), (128,),
                     (qkv.ptr, positions.ptr, tiles.ptr, tables.ptr, kc.ptr, vc.ptr, out.ptr, H, KVH, hd, slots,
                      layer, block_size, 1.0 / math.sqrt(hd), bq), smem)

    def rope_table(self, hd: int, theta: float, rows: int, host=None) -> tuple[DeviceTensor, int]:
        """(table, its rows): the (cos, sin) pairs of every position below `rows` (or more),
        f32 [rows, hd/2, 2], for the decode attention kernel and the prefill graphs. Built once
        per rotation and rebuilt larger when more rows are asked for; a graph captured with a
        smaller one keeps it (the workspace retires it rather than freeing it). Not under capture.

        Plain RoPE (`host` None) is built by the rope_table kernel from theta, the same sincosf
        the op path runs inline. A scaled one (`host`, a rope_rows.HostRope: linear, llama3,
        yarn, dynamic's decode rows) is computed on the host by the numpy backend's own
        rope_cos_sin and copied up, so the kernels rotate by exactly the reference's values and
        none of them needs to know the scaling."""
        key = (hd, float(theta)) if host is None else host
        assert host is None or host.head_dim == hd, (host, hd)
        ws, built = self.rope_tables.get(key, (None, 0))
        if ws is None:
            ws = Workspace(self.allocator, self.stream, "f32")
        if built < rows:
            t = ws.get(rows * hd)
            built = t.numel // hd
            if host is None:
                self._launch("rope_table", (built,), (64,), (t.ptr, built, hd, theta))
            else:
                self.write_rope_rows(t, 0, host.rows(0, built))
        self.rope_tables[key] = (ws, built)
        return ws.tensor, built

    def write_rope_rows(self, table: DeviceTensor, first: int, rows: np.ndarray) -> None:
        """Rows [first, first + len(rows)) of a rope table from the host (f32 [n, hd/2, 2]).
        Stream-ordered after every launch before it, so those read the old rows; a pageable
        copy, so the host array is staged before this returns."""
        host = np.ascontiguousarray(rows, np.float32)
        n, half = host.shape[:2]
        assert host.shape == (n, half, 2) and table.dtype == "f32" and table.numel >= (first + n) * 2 * half
        copy_htod(table.ptr + 4 * first * 2 * half, host.ctypes.data, host.nbytes, self.stream)

    def decode_splits(self, KVH: int, G: int, capacity: int, hd: int) -> int:
        """Blocks along the sequence: enough to fill the GPU at full context; the kernel uses
        only ceil(len / chunk) of them (chunk >= one stage of keys) at the current length."""
        stage = decode_stage_keys(hd)
        return max(1, min(math.ceil(capacity / stage), max(1, 2 * self.sm_count // (KVH * G)), 64))

    def attention_decode(self, qkv, out, H, KVH, hd, layer, n_splits, *, positions=None, kc=None, vc=None,
                         cap=0, state=None, q_norm=None, k_norm=None, eps=0.0, rope_table=None) -> None:
        """One token (fused q-k norm / kv store, and RoPE when given `rope_table`: a
        (table, rows) from Ops.rope_table covering every position it will see). Position, cache
        pointers and capacity come from `state` (a DecodeState) when given, else from the
        arguments."""
        assert qkv.numel == (H + 2 * KVH) * hd and out.numel == H * hd and out.dtype == "f32"
        assert state is not None or (positions is not None and kc is not None and vc is not None and cap > 0)
        rope = rope_table is not None
        table, rows = rope_table if rope else (None, 0)
        assert not rope or (table.dtype == "f32" and table.numel >= rows * hd)
        G = H // KVH
        d = head_dim_variant(hd)
        flags = (ROPE_FLAG_ROPE if rope else 0) | (ROPE_FLAG_NORM if q_norm is not None else 0)
        ws = self.att_ws.get(H * n_splits * (2 + hd))  # a record per (query head, split): m, l, acc[hd]
        counters = self.att_counters.get(H)
        smem = decode_smem_bytes(hd)
        name = f"attention_decode_d{d}"
        if q_norm is not None:
            name = _for(q_norm, name, k_norm)
        self._launch(name, (n_splits, KVH, G), (128,),
                     (qkv.ptr, _ptr(positions), _ptr(kc), _ptr(vc), _ptr(state), out.ptr, _ptr(q_norm), _ptr(k_norm),
                      ws.ptr, counters.ptr, _ptr(table), H, KVH, hd, cap, layer, rows, 1.0 / math.sqrt(hd), eps,
                      flags), smem)

    # ---- sampling ---------------------------------------------------------------------------
    def sample(self, logits: DeviceTensor, state: DeviceTensor) -> None:
        """Sample each row of logits [R, V] (or [V]) into its DecodeState of `state` (R of them,
        one after another): token, logprob, entropy, margin, with that row's parameters."""
        R, V = (1, logits.numel) if len(logits.shape) == 1 else (logits.shape[0], logits.numel // logits.shape[0])
        assert logits.dtype == "f32" and state.nbytes >= 80 * R
        nb = max(1, min(256, math.ceil(V / (256 * 8))))
        part = self.sample_ws.get(R * (nb + 1) * SAMPLE_STATS_BYTES // 4)
        counter = self.sample_counter.get(R)
        self._launch("sample_reduce", (nb, R), (256,), (logits.ptr, V, state.ptr, part.ptr, counter.ptr))
        self._launch("sample_truncated", (1, R), (1024,),
                     (logits.ptr, V, state.ptr, part.ptr + nb * SAMPLE_STATS_BYTES, nb + 1))

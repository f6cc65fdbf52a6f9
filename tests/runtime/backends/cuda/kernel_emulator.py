"""numpy semantics of each kernel's contract, on raw (bounds-checked) device memory, plus the
launch-shape checks the CUDA code relies on: grid coverage, block size, shared memory,
alignment, zeroed counters, workspace sizes. Used by fake_driver.py; never by the backend.
"""
from __future__ import annotations

import math

import numpy as np

from inloop.services.runtime.backends.cpu.backend import rope_cos_sin
from inloop.services.runtime.backends.cpu.linear_attention import NumpyLinearAttention
from inloop.services.runtime.backends.cuda.kernels_registry import base_kernel, weight_format
from inloop.services.runtime.backends.cuda.state import DECODE_STATE, SAMPLE_STATS_BYTES
from inloop.services.runtime.engine.sampler import _filter_top_k_top_p

KERNELS = {}


def static_smem(name: str) -> int:
    name = base_kernel(name)
    if name.startswith("gemm_"):
        return 2 * 2 * 64 * 40 * 2 + 2 * 64 * 4 + 4  # As, Bs, the row partials, the ticket
    return {"sample_reduce": 32 * SAMPLE_STATS_BYTES + 4,
            "gdn_recurrence": 4 * (2 * 8 * 32 + 2 * 2 * 8 * 32)}.get(name, 256)  # rows_qk, partial


def kernel(name):
    def wrap(fn):
        KERNELS[name] = fn
        return fn
    return wrap


_WEIGHTS = ["bf16"]  # the build of the kernel now running: how it reads weights (wt)


def run(name, mem, grid, block, smem, args):
    _WEIGHTS[0] = weight_format(name)
    name = base_kernel(name)
    if name.startswith(("attention_prefill_d", "attention_decode_d", "attention_paged_d")):
        base, d = name.rsplit("_d", 1)
        return KERNELS[base](mem, grid, block, smem, int(d), *args)
    if name.startswith("gemv_"):
        return KERNELS["gemv"](mem, grid, block, smem, name, *args)
    return KERNELS[name](mem, grid, block, smem, *args)


# ---- memory helpers ------------------------------------------------------------------------
def widen(bits):
    return (np.asarray(bits).astype(np.uint32) << 16).view(np.float32)


def bits(a):
    b = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def wt(mem, p, n):
    """n weights at p as float32, stored as the running kernel's build reads them."""
    if _WEIGHTS[0] == "f16":
        return mem.view(p, 2 * n, np.float16).astype(np.float32)
    return bf(mem, p, n)


def round_w(a):
    """a rounded to the weights' type (the GEMM's A operand)."""
    if _WEIGHTS[0] == "f16":
        return np.asarray(a, np.float32).astype(np.float16).astype(np.float32)
    return widen(bits(a))


def f32(mem, p, n):
    return mem.view(p, 4 * n, np.float32)


def bf(mem, p, n):
    return widen(mem.view(p, 2 * n, np.uint16))


def i32(mem, p, n):
    return mem.view(p, 4 * n, np.int32)


def rms(x, w, eps):
    x = x.astype(np.float32)
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps))) * w


def rotate(x, pos, theta):
    """x [..., n, hd] rows at positions pos [n] (HF rotate-half), returns a new array."""
    hd = x.shape[-1]
    cos, sin = rope_cos_sin(np.asarray(pos), hd, theta)
    half = hd // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(np.float32)


def rotate_cs(x, cos, sin):
    """x [..., hd] rotated by (cos, sin) [hd/2] (a rope table row)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(np.float32)


def state_view(mem, p):
    return mem.view(p, DECODE_STATE.itemsize).view(DECODE_STATE)


# ---- kernels -----------------------------------------------------------------------------------
@kernel("embedding")
def _embedding(mem, grid, block, smem, table, ids, out, D, V):
    T = grid[0]
    o = f32(mem, out, T * D).reshape(T, D)
    for t, i in enumerate(i32(mem, ids, T)):
        o[t] = wt(mem, table + 2 * int(i) * D, D) if 0 <= i < V else 0.0


@kernel("rmsnorm")
def _rmsnorm(mem, grid, block, smem, x, w, out, D, eps):
    T = grid[0]
    f32(mem, out, T * D)[:] = rms(f32(mem, x, T * D).reshape(T, D), wt(mem, w, D), eps).reshape(-1)


@kernel("add_rmsnorm")
def _add_rmsnorm(mem, grid, block, smem, x, res, w, out, sum_out, D, eps):
    T = grid[0]
    s = f32(mem, x, T * D) + f32(mem, res, T * D)
    f32(mem, sum_out, T * D)[:] = s
    f32(mem, out, T * D)[:] = rms(s.reshape(T, D), wt(mem, w, D), eps).reshape(-1)


@kernel("swiglu")
def _swiglu(mem, grid, block, smem, gu, out, T, F):
    g = f32(mem, gu, T * 2 * F).reshape(T, 2 * F)
    with np.errstate(over="ignore"):
        f32(mem, out, T * F)[:] = (g[:, :F] / (1 + np.exp(-g[:, :F])) * g[:, F:]).reshape(-1)


@kernel("convert_f32_bf16")
def _cvt32(mem, grid, block, smem, src, dst, n):
    assert src % 16 == 0 and dst % 8 == 0, "vector path: float4 loads, uint2 stores"
    mem.view(dst, 2 * n, np.uint16)[:] = bits(f32(mem, src, n))


@kernel("convert_f16_bf16")
def _cvt16(mem, grid, block, smem, src, dst, n):
    mem.view(dst, 2 * n, np.uint16)[:] = bits(mem.view(src, 2 * n, np.float16).astype(np.float32))


@kernel("convert_f32_f16")
def _cvt32h(mem, grid, block, smem, src, dst, n):
    assert src % 16 == 0 and dst % 8 == 0, "vector path: float4 loads, uint2 stores"
    with np.errstate(over="ignore"):
        mem.view(dst, 2 * n, np.float16)[:] = f32(mem, src, n).astype(np.float16)


@kernel("convert_bf16_f16")
def _cvtbh(mem, grid, block, smem, src, dst, n):
    with np.errstate(over="ignore"):
        mem.view(dst, 2 * n, np.float16)[:] = bf(mem, src, n).astype(np.float16)


@kernel("convert_bf16_f32")
def _cvtb(mem, grid, block, smem, src, dst, n):
    f32(mem, dst, n)[:] = bf(mem, src, n)


@kernel("rope_qknorm")
def _rope_qknorm(mem, grid, block, smem, qkv, positions, qw, kw, kc, vc, st, rope_cs, slots, H, KVH, hd, stride, cap,
                 layer, rope_rows, theta, eps, flags):
    T, store = grid[0], bool(flags & 4)
    assert grid[1] * 4 >= H + (2 if store else 1) * KVH and block[0] == 128
    m = f32(mem, qkv, T * stride).reshape(T, stride)
    heads = m[:, : (H + KVH) * hd].reshape(T, H + KVH, hd).copy()
    if flags & 2:
        heads[:, :H] = rms(heads[:, :H], wt(mem, qw, hd), eps)
        heads[:, H:] = rms(heads[:, H:], wt(mem, kw, hd), eps)
    if flags & 1 and rope_cs:  # cos/sin from the table's rows (a row past it: no rotation)
        pos = i32(mem, positions, T)
        table = f32(mem, rope_cs, rope_rows * hd).reshape(rope_rows, hd // 2, 2)
        for t, p in enumerate(pos):
            if 0 <= p < rope_rows:
                heads[t] = rotate_cs(heads[t], table[p, :, 0], table[p, :, 1])
    elif flags & 1:
        heads = rotate(heads.transpose(1, 0, 2), i32(mem, positions, T), theta).transpose(1, 0, 2)
    m[:, : (H + KVH) * hd] = heads.reshape(T, -1)
    if store:  # kv_store's contract, on the roped rows
        _kv_store(mem, (T, 1, 1), (128, 1, 1), 0, qkv, slots or positions, kc, vc, st, H, KVH, hd, cap, layer)


def _cache_rows(mem, base, layer, KVH, kvh, cap, hd, start, n):
    off = ((int(layer) * KVH + kvh) * cap + int(start)) * hd
    return mem.view(base + 2 * off, 2 * n * hd, np.uint16).reshape(n, hd)


def _cache_from_state(mem, st, kc, vc, cap):
    if not st:
        return kc, vc, cap
    s = state_view(mem, st)[0]
    return int(s["k_cache"]), int(s["v_cache"]), int(s["capacity"])


@kernel("rope_table")
def _rope_table(mem, grid, block, smem, tab, rows, hd, theta):
    assert grid[0] >= rows
    cos, sin = rope_cos_sin(np.arange(rows), hd, theta)
    f32(mem, tab, rows * hd).reshape(rows, hd // 2, 2)[:] = np.stack([cos, sin], axis=-1)


@kernel("select_row")
def _select_row(mem, grid, block, smem, src, dst, st, D, max_rows):
    row = min(max(int(state_view(mem, st)[0]["rows"]), 1), max_rows) - 1
    f32(mem, dst, D)[:] = f32(mem, src + 4 * row * D, D)


@kernel("kv_store")
def _kv_store(mem, grid, block, smem, qkv, positions, kc, vc, st, H, KVH, hd, cap, layer):
    kc, vc, cap = _cache_from_state(mem, st, kc, vc, cap)
    T, stride = grid[0], (H + 2 * KVH) * hd
    m = f32(mem, qkv, T * stride).reshape(T, stride)
    for t, p in enumerate(i32(mem, positions, T)):
        if 0 <= p < cap:
            for h in range(KVH):
                _cache_rows(mem, kc, layer, KVH, h, cap, hd, p, 1)[0] = bits(m[t, (H + h) * hd:(H + h + 1) * hd])
                _cache_rows(mem, vc, layer, KVH, h, cap, hd, p, 1)[0] = bits(m[t, (H + KVH + h) * hd:(H + KVH + h + 1) * hd])


@kernel("gemm_swiglu_bf16")
def _gemm_swiglu(mem, grid, block, smem, *args):
    _gemm_any(mem, grid, block, smem, *args, staging="swiglu")


@kernel("gemm_norm_bf16")
def _gemm_norm(mem, grid, block, smem, *args):
    _gemm_any(mem, grid, block, smem, *args, staging="norm")


@kernel("gemm_bf16")
def _gemm(mem, grid, block, smem, *args):
    _gemm_any(mem, grid, block, smem, *args)


def _gemm_any(mem, grid, block, smem, A, W, bias, C, ws, counters, row_ss, norm_w, M, N, K, kps, mode, eps,
              staging=None):
    assert mode in range(4), f"gemm mode {mode}: only GEMM_RESIDUAL | GEMM_ROW_SS"
    assert block == (128, 1, 1) and K % 8 == 0 and A % 16 == 0 and W % 16 == 0
    assert grid[0] * 64 >= N and grid[1] * 64 >= M and kps % 32 == 0
    assert grid[2] * kps >= K and (grid[2] - 1) * kps < K, "a split with no K range"
    if grid[2] > 1:
        mem.check(ws, 4 * grid[2] * M * N)
        assert (i32(mem, counters, grid[0] * grid[1]) == 0).all(), "split-K counters not at rest"
    if staging == "swiglu":  # A is gate|up [M, 2K]: silu(gate) * up
        gu = f32(mem, A, 2 * M * K).reshape(M, 2 * K)
        g, u = gu[:, :K], gu[:, K:]
        with np.errstate(over="ignore"):
            a = round_w((g / (1 + np.exp(-g)) * u).astype(np.float32))
    elif staging == "norm":  # rmsnorm(A) * norm_w, the mean square from row_ss's ceil(K/64) partials per row
        tiles = -(-K // 64)
        ss = f32(mem, row_ss, M * tiles).reshape(M, tiles).astype(np.float64).sum(axis=1)
        inv = (1.0 / np.sqrt(ss / K + eps)).astype(np.float32)
        a = round_w(f32(mem, A, M * K).reshape(M, K) * inv[:, None] * wt(mem, norm_w, K))
    else:
        a = round_w(f32(mem, A, M * K)).reshape(M, K)
    y = (a.astype(np.float64) @ wt(mem, W, N * K).reshape(N, K).T.astype(np.float64)).astype(np.float32)
    if bias:
        y += wt(mem, bias, N)
    c = f32(mem, C, M * N).reshape(M, N)
    c[:] = c + y if mode & 1 else y
    if mode & 2:  # each row's sum of squares per 64 columns of the new values
        tiles = grid[0]
        sq = np.zeros((M, tiles * 64), np.float64)
        sq[:, :N] = c.astype(np.float64) ** 2
        f32(mem, row_ss, M * tiles)[:] = sq.reshape(M, tiles, 64).sum(axis=2).reshape(-1)


@kernel("gemv")
def _gemv(mem, grid, block, smem, name, W, x, bias, norm_w, y, N, K, F, ks, eps):
    threads = block[0]
    assert threads % 32 == 0 and threads <= 256 and (threads // 32) % ks == 0 and ks in (1, 2, 4, 8)
    swiglu, norm = "swiglu" in name, "norm" in name
    groups = F if swiglu else math.ceil(N / 2)
    assert grid[0] * (threads // 32 // ks) >= groups, "grid does not cover every row group"
    assert smem >= 4 * K + 8 * (threads // 32) and K % 8 == 0 and W % 16 == 0 and x % 16 == 0
    assert not swiglu or N == 2 * F
    xv = f32(mem, x, K).copy()
    if norm:
        assert norm_w % 8 == 0
        xv = rms(xv, wt(mem, norm_w, K), eps)
    acc = (wt(mem, W, N * K).reshape(N, K).astype(np.float64) @ xv.astype(np.float64)).astype(np.float32)
    if bias:
        acc += wt(mem, bias, N)
    if swiglu:
        g, u = acc[:F], acc[F:]
        with np.errstate(over="ignore"):
            f32(mem, y, F)[:] = g / (1 + np.exp(-g)) * u
    elif "residual" in name:
        f32(mem, y, N)[:] += acc
    else:
        f32(mem, y, N)[:] = acc


def _attend(q, keys, values):
    """q [n, hd] (scaled), keys/values [L, hd] -> [n, hd]."""
    s = q.astype(np.float64) @ keys.T.astype(np.float64)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ values.astype(np.float64)).astype(np.float32)


@kernel("attention_prefill")
def _prefill(mem, grid, block, smem, D, qkv, positions, kc, vc, st, out, T, H, KVH, hd, cap, layer, scale, BQ):
    kc, vc, cap = _cache_from_state(mem, st, kc, vc, cap)
    G = H // KVH
    assert hd <= D and hd % 8 == 0 and (D == 32 or hd > D // 2), f"head_dim {hd} in the d{D} variant"
    assert BQ * G <= 16 and grid == (math.ceil(T / BQ), KVH, 1) and block[0] == 128
    assert smem >= 128 * hd + 4 * (16 * 32 + 32) + 128 * (hd + 2)
    stride = (H + 2 * KVH) * hd
    m = f32(mem, qkv, T * stride).reshape(T, stride)
    o = f32(mem, out, T * H * hd).reshape(T, H, hd)
    pos = i32(mem, positions, T)
    for t in range(T):
        L = min(int(pos[t]), cap - 1) + 1
        for kvh in range(KVH):
            keys = widen(_cache_rows(mem, kc, layer, KVH, kvh, cap, hd, 0, L))
            vals = widen(_cache_rows(mem, vc, layer, KVH, kvh, cap, hd, 0, L))
            q = m[t, kvh * G * hd:(kvh + 1) * G * hd].reshape(G, hd) * np.float32(scale)
            o[t, kvh * G:(kvh + 1) * G] = _attend(q, keys, vals)


@kernel("attention_decode")
def _decode(mem, grid, block, smem, D, qkv, pos_ptr, kc, vc, st, out, qw, kw, ws, counters, rope_cs, H, KVH, hd,
            cap, layer, rope_rows, scale, eps, flags):
    G = H // KVH
    assert hd <= D and hd % 8 == 0 and (D == 32 or hd > D // 2), f"head_dim {hd} in the d{D} variant"
    assert grid[1] == KVH and grid[2] == G and block[0] == 128  # a block per (split, query head)
    assert smem >= 4 * (7 * hd + 8 + 128) + 2 * (8192 // D) * (2 * D + 8)
    mem.check(ws, 4 * KVH * G * grid[0] * (2 + hd))
    assert (i32(mem, counters, KVH * G) == 0).all(), "decode counters not at rest"
    if st:
        s = state_view(mem, st)[0]
        pos, kc, vc, cap = int(s["pos"]), int(s["k_cache"]), int(s["v_cache"]), int(s["capacity"])
    else:
        pos = int(i32(mem, pos_ptr, 1)[0])
    if not 0 <= pos < cap:
        return
    stride = (H + 2 * KVH) * hd
    row = f32(mem, qkv, stride).copy()
    heads = row[: (H + KVH) * hd].reshape(H + KVH, hd)
    if flags & 2:
        heads[:H] = rms(heads[:H], wt(mem, qw, hd), eps)
        heads[H:] = rms(heads[H:], wt(mem, kw, hd), eps)
    if flags & 1:
        assert rope_cs and 0 <= pos < rope_rows, "RoPE in decode attention reads a rope table row"
        cs = f32(mem, rope_cs + 4 * pos * hd, hd).reshape(hd // 2, 2)
        heads = rotate_cs(heads, cs[:, 0], cs[:, 1])
    vnew = row[(H + KVH) * hd:].reshape(KVH, hd)
    o = f32(mem, out, H * hd).reshape(H, hd)
    for kvh in range(KVH):
        _cache_rows(mem, kc, layer, KVH, kvh, cap, hd, pos, 1)[0] = bits(heads[H + kvh])
        _cache_rows(mem, vc, layer, KVH, kvh, cap, hd, pos, 1)[0] = bits(vnew[kvh])
        keys = widen(_cache_rows(mem, kc, layer, KVH, kvh, cap, hd, 0, pos + 1))
        vals = widen(_cache_rows(mem, vc, layer, KVH, kvh, cap, hd, 0, pos + 1))
        o[kvh * G:(kvh + 1) * G] = _attend(heads[kvh * G:(kvh + 1) * G] * np.float32(scale), keys, vals)


def _truncating(s, V) -> bool:
    return s["temperature"] > 0 and ((0 < s["top_k"] < V) or s["top_p"] < 1)


def _finish(s, token, logits, M, z):
    s["token"] = token
    s["logprob"] = (logits[token] - M) - math.log(z)
    if s["flags"] & 1:
        s["pos"] += 1
        s["rng_step"] += 1


def _rng(s):
    return np.random.default_rng([int(s["seed_lo"]), int(s["seed_hi"]), int(s["rng_step"])])


@kernel("sample_reduce")
def _sample_reduce(mem, grid, block, smem, logits, V, st, part, counter):
    nb, rows = grid[0], grid[1]
    assert block[0] == 256 and nb <= 256
    mem.check(part, rows * (nb + 1) * SAMPLE_STATS_BYTES)
    assert (i32(mem, counter, rows) == 0).all(), "sampler counters not at rest"
    for r in range(rows):
        _sample_reduce_row(mem, nb, logits + 4 * r * V, V, st + DECODE_STATE.itemsize * r,
                           part + r * (nb + 1) * SAMPLE_STATS_BYTES)


def _sample_reduce_row(mem, nb, logits, V, st, part):
    s = state_view(mem, st)[0:1]
    lg = f32(mem, logits, V).astype(np.float64)
    M = lg.max()
    e = np.exp(lg - M)
    z, S = e.sum(), (e * (lg - M)).sum()
    top2 = np.partition(lg, -2)[-2] if V > 1 else -np.inf
    s["entropy"] = math.log(z) - S / z
    s["margin"] = (1 - math.exp(top2 - M)) / z
    f32(mem, part + nb * SAMPLE_STATS_BYTES, 2)[:] = (M, z)
    T = float(s["temperature"][0])
    if T <= 0:
        _finish(s, int(np.argmax(lg)), lg, M, z)
    elif not _truncating(s[0], V):
        _finish(s, int(np.argmax(lg / T + _rng(s[0]).gumbel(size=V))), lg, M, z)


@kernel("sample_truncated")
def _sample_truncated(mem, grid, block, smem, logits, V, st, final, stats_stride):
    assert grid[0] == 1 and grid[2] == 1 and block[0] == 1024
    for r in range(grid[1]):
        _sample_truncated_row(mem, logits + 4 * r * V, V, st + DECODE_STATE.itemsize * r,
                              final + r * stats_stride * SAMPLE_STATS_BYTES)


def _sample_truncated_row(mem, logits, V, st, final):
    s = state_view(mem, st)[0:1]
    if not _truncating(s[0], V):
        return
    lg = f32(mem, logits, V).astype(np.float64)
    M, z = (float(v) for v in f32(mem, final, 2))
    T = float(s["temperature"][0])
    if not np.isfinite(lg).any():  # every logit masked: token 0, as sample_reduce's argmax
        _finish(s, 0, lg, M, z)
        return
    kept = _filter_top_k_top_p(lg / T, int(s["top_k"][0]), float(s["top_p"][0]))
    p = np.exp(kept - kept.max())
    p /= p.sum()
    _finish(s, int(_rng(s[0]).choice(V, p=p)), lg, M, z)


@kernel("gather_rows")
def _gather_rows(mem, grid, block, smem, src, rows, dst, D, n_src):
    R = grid[0]
    for r, row in enumerate(i32(mem, rows, R)):
        if 0 <= row < n_src:
            f32(mem, dst + 4 * r * D, D)[:] = f32(mem, src + 4 * int(row) * D, D)


@kernel("attention_paged")
def _paged(mem, grid, block, smem, D, qkv, positions, tiles, tables, kc, vc, out, H, KVH, hd, slots, layer, bs,
           scale, BQ):
    G = H // KVH
    assert hd <= D and hd % 8 == 0 and (D == 32 or hd > D // 2), f"head_dim {hd} in the d{D} variant"
    assert BQ * G <= 16 and grid[1:] == (KVH, 1) and block[0] == 128
    assert smem >= 128 * hd + 4 * (16 * 32 + 32) + 128 * (hd + 2)
    tl = i32(mem, tiles, 3 * grid[0]).reshape(-1, 3)
    assert (tl[:, 1] >= 1).all() and (tl[:, 1] <= BQ).all(), "a tile of no rows or more than BQ"
    T = int((tl[:, 0] + tl[:, 1]).max())
    stride = (H + 2 * KVH) * hd
    m = f32(mem, qkv, T * stride).reshape(T, stride)
    o = f32(mem, out, T * H * hd).reshape(T, H, hd)
    pos = i32(mem, positions, T)
    for t0, n, toff in tl:
        for t in range(t0, t0 + n):
            L = int(pos[t]) + 1
            table = i32(mem, tables + 4 * int(toff), -(-L // bs)).astype(np.int64)
            at = table[np.arange(L) // bs] * bs + np.arange(L) % bs
            assert (at < slots).all(), "a block table entry past the pool"
            for kvh in range(KVH):
                rows = _cache_rows(mem, kc, layer, KVH, kvh, slots, hd, 0, slots)
                keys = widen(rows[at])
                vals = widen(_cache_rows(mem, vc, layer, KVH, kvh, slots, hd, 0, slots)[at])
                q = m[t, kvh * G * hd:(kvh + 1) * G * hd].reshape(G, hd) * np.float32(scale)
                o[t, kvh * G:(kvh + 1) * G] = _attend(q, keys, vals)

# ---- Qwen3.5's Gated DeltaNet and gated attention (kernels/linear_attention.cu) ---------------------
LA = NumpyLinearAttention()


def _spans_of(mem, spans, n):
    """The spans that have rows (a bucket graph's padding spans have none and touch nothing);
    no slot twice among them."""
    sp = i32(mem, spans, 3 * n).reshape(n, 3).astype(np.int64)
    live = sp[sp[:, 1] >= 1]
    assert (sp[:, 1] >= 0).all() and len(set(live[:, 2].tolist())) == len(live), f"bad spans {sp.tolist()}"
    return live


@kernel("gdn_conv")
def _gdn_conv(mem, grid, block, smem, x, w, state, spans, out, C, K, slot_stride):
    assert block == (128, 1, 1) and grid[0] * 128 >= C and 1 <= K <= 4
    sp = _spans_of(mem, spans, grid[1])
    if not len(sp):
        return
    assert grid[2] * 8 >= sp[:, 1].max(), "grid does not cover every span's rows"
    T = int((sp[:, 0] + sp[:, 1]).max())
    xs, o = f32(mem, x, T * C).reshape(T, C), f32(mem, out, T * C).reshape(T, C)
    weight = f32(mem, w, C * K).reshape(C, K)
    for row0, n, slot in sp:
        st = f32(mem, state + 4 * int(slot) * slot_stride, C * (K - 1)).reshape(C, K - 1)
        o[row0:row0 + n] = LA.causal_conv1d(xs[row0:row0 + n].copy(), st, weight)  # st advanced in place


@kernel("gdn_decay_beta")
def _gdn_decay_beta(mem, grid, block, smem, a, b, neg_a, dt_bias, g, beta, n, H):
    assert n % H == 0
    T = n // H
    gv, bv = LA.decay_and_beta(f32(mem, a, n).reshape(T, H), f32(mem, b, n).reshape(T, H), f32(mem, neg_a, H),
                               f32(mem, dt_bias, H))
    f32(mem, g, n)[:] = gv.reshape(-1)
    f32(mem, beta, n)[:] = bv.reshape(-1)


@kernel("gdn_recurrence")
def _gdn_recurrence(mem, grid, block, smem, qkv, g, beta, state, spans, out, k_heads, v_heads, dk, dv, scale,
                    slot_stride):
    assert grid[0] * 32 >= dv and grid[1] == v_heads and block == (32 * -(-dk // 32), 1, 1) and dk <= 256
    assert abs(scale - dk ** -0.5) <= 1e-7 * dk ** -0.5 and v_heads % k_heads == 0
    sp = _spans_of(mem, spans, grid[2])
    if not len(sp):
        return
    T, kd = int((sp[:, 0] + sp[:, 1]).max()), k_heads * dk
    stride = 2 * kd + v_heads * dv
    x = f32(mem, qkv, T * stride).reshape(T, stride)
    gv, bv = f32(mem, g, T * v_heads).reshape(T, v_heads), f32(mem, beta, T * v_heads).reshape(T, v_heads)
    o = f32(mem, out, T * v_heads * dv).reshape(T, v_heads, dv)
    for row0, n, slot in sp:
        st = f32(mem, state + 4 * int(slot) * slot_stride, v_heads * dk * dv).reshape(1, v_heads, dk, dv)
        for t in range(row0, row0 + n):  # the kernel's step, token by token (gated_delta_step)
            q, k = x[t:t + 1, :kd].reshape(1, k_heads, dk), x[t:t + 1, kd:2 * kd].reshape(1, k_heads, dk)
            v = x[t:t + 1, 2 * kd:].reshape(1, v_heads, dv)
            o[t] = LA.gated_delta_step(q, k, v, gv[t:t + 1], bv[t:t + 1], st)[0]


@kernel("gdn_gated_rmsnorm")
def _gdn_gated_rmsnorm(mem, grid, block, smem, x, z, w, out, rows, D, eps):
    assert block == (128, 1, 1) and grid[0] * 4 >= rows
    n = rows * D
    f32(mem, out, n)[:] = LA.gated_rmsnorm(f32(mem, x, n).reshape(rows, D), f32(mem, z, n).reshape(rows, D),
                                           f32(mem, w, D), eps).reshape(-1)


@kernel("partial_rope")
def _partial_rope(mem, grid, block, smem, qkv, positions, H, KVH, hd, rd, theta):
    T = grid[0]
    assert block == (128, 1, 1) and grid[1] * 4 >= H + KVH and rd % 2 == 0 and 0 < rd <= hd
    m = f32(mem, qkv, T * (H + 2 * KVH) * hd).reshape(T, (H + 2 * KVH) * hd)
    LA.partial_rope(m, i32(mem, positions, T), H, KVH, hd, rd, theta)


@kernel("output_gate")
def _output_gate(mem, grid, block, smem, attn, gate, out, n):
    f32(mem, out, n)[:] = LA.output_gate(f32(mem, attn, n), f32(mem, gate, n))

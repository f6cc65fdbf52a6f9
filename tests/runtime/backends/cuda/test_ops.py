"""Op-by-op parity of the CUDA kernels with the numpy reference backend, in each of conftest.py's
modes (a GPU, the driver double's kernel contracts, the kernels' own C on the CPU).

Weights are rounded to bf16 on the host first, so both backends multiply the same numbers
and the tolerances measure the kernels (fp32 accumulation order, bf16 K/V, bf16 GEMM inputs).
"""
from __future__ import annotations

import numpy as np
import pytest

from inloop.services.runtime.backends.cuda.driver import memset_d8

from .parity import assert_close, bf16

RNG = np.random.default_rng(1234)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def pair(cpu, gpu, w):
    """A weight on both backends (bf16-exact values)."""
    w = bf16(w)
    return cpu.upload(w), gpu.upload(w)


@pytest.mark.parametrize("D", [64, 60, 576])
def test_embedding(cpu, gpu, D):
    tc, tg = pair(cpu, gpu, rand(300, D))
    ids = np.array([0, 7, 299, 7, 150], np.int32)
    assert_close(gpu.to_host(gpu.embedding(tg, gpu.ids(ids))), cpu.embedding(tc, cpu.ids(ids)), 0, 0, "embedding")


@pytest.mark.parametrize("T,D", [(1, 64), (5, 576), (3, 896)])
def test_rmsnorm_and_add_rmsnorm(cpu, gpu, T, D):
    wc, wg = pair(cpu, gpu, 1 + 0.1 * rand(D))
    x, r = rand(T, D), rand(T, D)
    xg, rg = gpu.upload_activation(x), gpu.upload_activation(r)
    assert_close(gpu.to_host(gpu.rmsnorm(xg, wg, 1e-6)), cpu.rmsnorm(x, wc, 1e-6), 1e-5, 1e-5, "rmsnorm")
    hg, sg = gpu.add_rmsnorm(xg, rg, wg, 1e-5)
    hc, sc = cpu.add_rmsnorm(x, r, wc, 1e-5)
    assert_close(gpu.to_host(sg), sc, 0, 0, "residual sum")
    assert_close(gpu.to_host(hg), hc, 1e-5, 1e-5, "add_rmsnorm")


@pytest.mark.parametrize("T,N,K,bias", [
    (1, 960, 576, True),    # SmolLM2 qkv: one pass per thread
    (1, 576, 1536, False),  # down: split K over 2 warps
    (1, 896, 4864, False),  # Qwen2.5 down: 4 warps
    (1, 64, 18944, False),  # 8 warps, > 48 KB of shared memory (opt-in path)
    (1, 1001, 64, True),    # odd N: a half-empty last row group
    (7, 960, 576, True),    # tensor-core GEMM, split K
    (32, 3072, 576, False),
    (70, 50, 64, True),     # partial tiles in both dimensions
    (9, 64, 416, True),     # 5 K splits: the merge's last pass has one
    (130, 200, 1536, False),
])
def test_linear(cpu, gpu, T, N, K, bias):
    wc, wg = pair(cpu, gpu, rand(N, K, scale=K ** -0.5))
    bc, bg = pair(cpu, gpu, rand(N, scale=0.1)) if bias else (None, None)
    x = rand(T, K)
    got = gpu.to_host(gpu.linear(gpu.upload_activation(x), wg, bg))
    if T == 1:  # the GEMV keeps x in fp32: only the summation order differs
        assert_close(got, cpu.linear(x, wc, bc), 1e-4, 1e-4, "gemv")
    else:       # tensor cores take x as bf16
        assert_close(got, cpu.linear(bf16(x), wc, bc), 1e-4, 1e-4, "gemm vs bf16(x)")
        assert_close(got, cpu.linear(x, wc, bc), 2e-2, 2e-2, "gemm vs fp32 x")


def test_upload_converts_every_source_dtype_on_the_device(gpu):
    a = np.random.default_rng(0).standard_normal((33, 40)).astype(np.float32)
    h = a.astype(np.float16)
    bits = (bf16(a).view(np.uint32) >> 16).astype(np.uint16)
    # (source, storage) -> what the device holds; fp16 stays fp16 unless told otherwise
    assert np.array_equal(gpu.to_host(gpu.upload(a)), bf16(a))
    assert gpu.upload(h).dtype == "f16" and np.array_equal(gpu.to_host(gpu.upload(h)), h.astype(np.float32))
    assert np.array_equal(gpu.to_host(gpu.upload(h, storage="bf16")), bf16(h.astype(np.float32)))
    assert np.array_equal(gpu.to_host(gpu.upload(a, storage="f16")), h.astype(np.float32))
    assert np.array_equal(gpu.to_host(gpu.upload_raw(bits, "BF16", a.shape)), bf16(a))
    assert np.array_equal(gpu.to_host(gpu.upload_raw(bits, "BF16", a.shape, storage="f16")),
                          bf16(a).astype(np.float16).astype(np.float32))
    big = np.array([7e4, -7e4, 65519.0, 65520.0, 1e-8, 3e-5, np.inf], np.float32)  # overflow, subnormals
    assert np.array_equal(gpu.to_host(gpu.upload(big, storage="f16")), big.astype(np.float16).astype(np.float32))
    assert np.array_equal(gpu.to_host(gpu.upload(np.arange(5))), np.arange(5))
    with pytest.raises(ValueError, match="bf16"):
        gpu.upload(a, storage="f8")


def pair16(cpu, gpu, w):
    """A weight stored as fp16 on the GPU (the fp16-weight kernels), the same values on numpy."""
    h = np.asarray(w, np.float32).astype(np.float16)
    return cpu.upload(h.astype(np.float32)), gpu.upload(h)


@pytest.mark.parametrize("T,N,K", [(1, 960, 576), (1, 64, 18944), (7, 960, 576), (70, 50, 64)])
def test_fp16_weights_embedding_norms_and_projections(cpu, gpu, T, N, K):
    tc, tg = pair16(cpu, gpu, rand(300, K))
    ids = np.array([0, 7, 299, 7, 150], np.int32)
    assert_close(gpu.to_host(gpu.embedding(tg, gpu.ids(ids))), cpu.embedding(tc, cpu.ids(ids)), 0, 0, "fp16 embedding")
    nc, ng = pair16(cpu, gpu, 1 + 0.1 * rand(K))
    x, r = rand(T, K), rand(T, K)
    xg, rg = gpu.upload_activation(x), gpu.upload_activation(r)
    assert_close(gpu.to_host(gpu.rmsnorm(xg, ng, 1e-6)), cpu.rmsnorm(x, nc, 1e-6), 1e-5, 1e-5, "fp16 rmsnorm")
    hg, _ = gpu.add_rmsnorm(xg, rg, ng, 1e-5)
    assert_close(gpu.to_host(hg), cpu.add_rmsnorm(x, r, nc, 1e-5)[0], 1e-5, 1e-5, "fp16 add_rmsnorm")
    wc, wg = pair16(cpu, gpu, rand(N, K, scale=K ** -0.5))
    bc, bg = pair16(cpu, gpu, rand(N, scale=0.1))
    got = gpu.to_host(gpu.linear(xg, wg, bg))
    if T == 1:  # GEMV: x stays fp32
        assert_close(got, cpu.linear(x, wc, bc), 1e-4, 1e-4, "fp16 gemv")
    else:       # tensor cores take x rounded to fp16
        x16 = x.astype(np.float16).astype(np.float32)
        assert_close(got, cpu.linear(x16, wc, bc), 1e-4, 1e-4, "fp16 gemm vs fp16(x)")


@pytest.mark.parametrize("H,KVH,hd", [(4, 2, 24), (9, 3, 64), (16, 8, 128)])
def test_qk_norm_and_rope(cpu, gpu, H, KVH, hd):
    T = 5
    qkv = rand(T, (H + 2 * KVH) * hd)
    pos = np.array([0, 3, 17, 250, 1000], np.int32)
    qw_c, qw_g = pair(cpu, gpu, 1 + 0.1 * rand(hd))
    kw_c, kw_g = pair(cpu, gpu, 1 + 0.1 * rand(hd))
    ref = qkv.copy()
    cpu.qk_norm(ref, qw_c, kw_c, 1e-6, H, KVH, hd)
    g = gpu.upload_activation(qkv)
    gpu.qk_norm(g, qw_g, kw_g, 1e-6, H, KVH, hd)
    assert_close(gpu.to_host(g), ref, 1e-5, 1e-5, "qk_norm")
    cpu.rope(ref, cpu.ids(pos), H, KVH, hd, 1e6)
    gpu.rope(g, gpu.ids(pos), H, KVH, hd, 1e6)
    assert_close(gpu.to_host(g), ref, 1e-4, 1e-4, "rope")


@pytest.mark.parametrize("H,KVH,hd,qk", [(9, 3, 64, False), (4, 2, 24, True), (16, 8, 128, True)])
def test_rope_with_the_kv_store_fused_equals_rope_then_kv_store(gpu, H, KVH, hd, qk):
    """The prefill graph's one launch (ROPE_FLAG_STORE) against the two it replaces; a row at
    position -1 (a padded row) stores nothing."""
    T, cap, layer, theta, eps = 6, 40, 1, 1e4, 1e-6
    qkv = rand(T, (H + 2 * KVH) * hd)
    pos = gpu.ids(np.array([0, 3, 17, 39, -1, 5], np.int32))
    qn = gpu.upload(1 + 0.1 * rand(hd)) if qk else None
    kn = gpu.upload(1 + 0.1 * rand(hd)) if qk else None
    caches = [gpu.alloc_kv(2, KVH, cap, hd) for _ in range(2)]
    for c in caches:
        for t in (c.k, c.v):
            memset_d8(t.ptr, 0, t.nbytes, gpu.stream)
    a, b = gpu.upload_activation(qkv), gpu.upload_activation(qkv)
    gpu.ops.rope_qknorm(a, pos, H, KVH, hd, theta, q_norm=qn, k_norm=kn, eps=eps)
    gpu.ops.kv_store(a, pos, caches[0].k, caches[0].v, H, KVH, hd, cap, layer)
    gpu.ops.rope_qknorm(b, pos, H, KVH, hd, theta, q_norm=qn, k_norm=kn, eps=eps, store_layer=layer,
                        kc=caches[1].k, vc=caches[1].v, cap=cap)
    assert_close(gpu.to_host(b), gpu.to_host(a), 0, 0, "qkv after rope")
    for name in ("k", "v"):
        want, got = gpu.to_host(getattr(caches[0], name)), gpu.to_host(getattr(caches[1], name))
        assert_close(got, want, 0, 0, f"{name} cache")
        assert np.abs(got[layer]).sum() > 0 and not np.abs(got[0]).any()  # only `layer`, and something


def _qkv_bf16_kv(T, H, KVH, hd):
    """Random qkv whose k and v parts are bf16-exact, so both caches hold the same values."""
    qkv = rand(T, (H + 2 * KVH) * hd)
    qkv[:, H * hd:] = bf16(qkv[:, H * hd:])
    return qkv


@pytest.mark.parametrize("H,KVH,hd", [(9, 3, 64), (14, 2, 64), (4, 2, 24), (16, 8, 128), (8, 1, 256), (32, 2, 64)])
def test_attention_prefill_then_decode(cpu, gpu, H, KVH, hd):
    cap, layers = 64, 2
    cc, cg = cpu.alloc_kv(layers, KVH, cap, hd), gpu.alloc_kv(layers, KVH, cap, hd)
    for start, T in ((0, 9), (9, 5), (14, 1), (15, 1)):  # prefill, a second chunk, two decode steps
        qkv = _qkv_bf16_kv(T, H, KVH, hd)
        pos = np.arange(start, start + T, dtype=np.int32)
        if H // KVH > 16 and T > 1:
            continue  # (the prefill kernel takes up to 16 query heads per kv head)
        ref = cpu.attention(qkv, cc, 1, cpu.ids(pos), H, KVH, hd)
        got = gpu.to_host(gpu.attention(gpu.upload_activation(qkv), cg, 1, gpu.ids(pos), H, KVH, hd))
        assert_close(got, ref, 1e-4, 1e-4, f"attention T={T} at {start}")
    end = 16 if H // KVH <= 16 else 0
    assert_close(gpu.to_host(cg.k)[1, :, :end], cc.k[1, :, :end], 0, 0, "k cache")
    assert_close(gpu.to_host(cg.v)[1, :, :end], cc.v[1, :, :end], 0, 0, "v cache")


def test_long_context_decode_uses_several_splits(cpu, gpu):
    H, KVH, hd, cap = 9, 3, 64, 1024
    splits = gpu.ops.decode_splits(KVH, H // KVH, cap, hd)
    assert splits > 1
    cc, cg = cpu.alloc_kv(1, KVH, cap, hd), gpu.alloc_kv(1, KVH, cap, hd)
    qkv = _qkv_bf16_kv(700, H, KVH, hd)
    pos = np.arange(700, dtype=np.int32)
    ref = cpu.attention(qkv, cc, 0, cpu.ids(pos), H, KVH, hd)
    got = gpu.to_host(gpu.attention(gpu.upload_activation(qkv), cg, 0, gpu.ids(pos), H, KVH, hd))
    assert_close(got, ref, 1e-4, 1e-4, "prefill 700")
    for p in (700, 701, 955):  # 6, 6 and 8 active splits
        q1 = _qkv_bf16_kv(1, H, KVH, hd)
        ref = cpu.attention(q1, cc, 0, cpu.ids([p]), H, KVH, hd)
        got = gpu.to_host(gpu.attention(gpu.upload_activation(q1), cg, 0, gpu.ids([p]), H, KVH, hd))
        assert_close(got, ref, 1e-4, 1e-4, f"decode at {p}")


@pytest.mark.parametrize("qk", [False, True])
def test_rope_qknorm_reading_the_rope_table_equals_computing_the_angles(gpu, qk):
    """The prefill graph's rope_qknorm reads cos/sin from the table: the same bits as computing them."""
    H, KVH, hd, theta = 4, 2, 64, 1e4
    pos = np.array([0, 7, 100, 1000, 4095], np.int32)
    qkv = rand(pos.size, (H + 2 * KVH) * hd)
    qw, kw = (gpu.upload(1 + 0.1 * rand(hd)), gpu.upload(1 + 0.1 * rand(hd))) if qk else (None, None)
    computed, from_table = gpu.upload_activation(qkv), gpu.upload_activation(qkv)
    gpu.ops.rope_qknorm(computed, gpu.ids(pos), H, KVH, hd, theta, q_norm=qw, k_norm=kw, eps=1e-6)
    gpu.ops.rope_qknorm(from_table, gpu.ids(pos), H, KVH, hd, theta, q_norm=qw, k_norm=kw, eps=1e-6,
                        rope_table=gpu.ops.rope_table(hd, theta, 4096))
    assert_close(gpu.to_host(from_table), gpu.to_host(computed), 0, 0, "rope_qknorm, table vs computed")
    assert not np.array_equal(gpu.to_host(computed), qkv)  # it rotated


@pytest.mark.parametrize("hd,n_splits", [(32, 1), (128, 1), (128, 3), (256, 2)])
def test_decode_attention_takes_a_split_several_stages_at_a_time(cpu, gpu, hd, n_splits):
    """Few splits over a long context: each split stages its keys in shared memory a stage
    (8192 / head_dim keys) at a time, the next stage loading while this one is used; at head_dim
    32 a stage is 256 keys, two 32-key tiles for each of the four warps."""
    H, KVH, cap, pos = 4, 2, 320, 300
    cc, cg = cpu.alloc_kv(1, KVH, cap, hd), gpu.alloc_kv(1, KVH, cap, hd)
    prefix = _qkv_bf16_kv(pos, H, KVH, hd)
    cpu.attention(prefix, cc, 0, cpu.ids(np.arange(pos, dtype=np.int32)), H, KVH, hd)
    gpu.attention(gpu.upload_activation(prefix), cg, 0, gpu.ids(np.arange(pos, dtype=np.int32)), H, KVH, hd)
    q1 = _qkv_bf16_kv(1, H, KVH, hd)
    ref = cpu.attention(q1, cc, 0, cpu.ids([pos]), H, KVH, hd)
    out = gpu._empty((1, H * hd))
    gpu.ops.attention_decode(gpu.upload_activation(q1), out, H, KVH, hd, 0, n_splits, positions=gpu.ids([pos]),
                             kc=cg.k, vc=cg.v, cap=cap)
    assert_close(gpu.to_host(out), ref, 1e-4, 1e-4, f"decode at {pos}, {n_splits} splits")


@pytest.mark.parametrize("H,KVH,hd,qk", [(9, 3, 64, False), (4, 2, 24, True), (14, 2, 64, False), (16, 8, 128, True)])
def test_fused_decode_attention(cpu, gpu, H, KVH, hd, qk):
    """RoPE (+ q/k norm) and the k/v store inside the decode kernel, as the decode graph runs it."""
    cap, theta, eps = 256, 1e4, 1e-6
    cc, cg = cpu.alloc_kv(1, KVH, cap, hd), gpu.alloc_kv(1, KVH, cap, hd)
    prefix = _qkv_bf16_kv(40, H, KVH, hd)
    pos = np.arange(40, dtype=np.int32)
    cpu.attention(prefix, cc, 0, cpu.ids(pos), H, KVH, hd)
    gpu.attention(gpu.upload_activation(prefix), cg, 0, gpu.ids(pos), H, KVH, hd)
    qw_c, qw_g = pair(cpu, gpu, 1 + 0.1 * rand(hd)) if qk else (None, None)
    kw_c, kw_g = pair(cpu, gpu, 1 + 0.1 * rand(hd)) if qk else (None, None)
    qkv = rand(1, (H + 2 * KVH) * hd)
    ref_qkv = qkv.copy()
    if qk:
        cpu.qk_norm(ref_qkv, qw_c, kw_c, eps, H, KVH, hd)
    cpu.rope(ref_qkv, cpu.ids([40]), H, KVH, hd, theta)
    ref = cpu.attention(ref_qkv, cc, 0, cpu.ids([40]), H, KVH, hd)
    out = gpu._empty((1, H * hd))
    splits = gpu.ops.decode_splits(KVH, H // KVH, cap, hd)
    gpu.ops.attention_decode(gpu.upload_activation(qkv), out, H, KVH, hd, 0, splits,
                             positions=gpu.ids([40]), kc=cg.k, vc=cg.v, cap=cap, q_norm=qw_g, k_norm=kw_g,
                             eps=eps, rope_table=gpu.ops.rope_table(hd, theta, cap))
    assert_close(gpu.to_host(out), ref, 1e-2, 1e-2, "fused decode attention")
    assert_close(gpu.to_host(cg.k)[0, :, 40], bf16(cc.k[0, :, 40]), 1e-2, 1e-2, "new k (roped) in the cache")


@pytest.mark.parametrize("H,KVH,hd,qk", [(9, 3, 64, False), (16, 8, 128, True)])
def test_decode_attention_with_the_rope_table_equals_rope_then_attention(gpu, H, KVH, hd, qk):
    """The table's row at `pos` rotates exactly as the inline sincosf of rope_qknorm does."""
    cap, theta, eps, pos = 128, 1e5, 1e-6, 100
    caches = [gpu.alloc_kv(1, KVH, cap, hd) for _ in range(2)]
    prefix = _qkv_bf16_kv(pos, H, KVH, hd)
    for c in caches:
        gpu.attention(gpu.upload_activation(prefix), c, 0, gpu.ids(np.arange(pos, dtype=np.int32)), H, KVH, hd)
    qw, kw = (gpu.upload(1 + 0.1 * rand(hd)), gpu.upload(1 + 0.1 * rand(hd))) if qk else (None, None)
    qkv = rand(1, (H + 2 * KVH) * hd)
    splits = gpu.ops.decode_splits(KVH, H // KVH, cap, hd)
    fused, split = gpu._empty((1, H * hd)), gpu._empty((1, H * hd))
    table = gpu.ops.rope_table(hd, theta, cap)
    assert table[1] >= cap and table[0].numel >= table[1] * hd
    gpu.ops.attention_decode(gpu.upload_activation(qkv), fused, H, KVH, hd, 0, splits, positions=gpu.ids([pos]),
                             kc=caches[0].k, vc=caches[0].v, cap=cap, q_norm=qw, k_norm=kw, eps=eps, rope_table=table)
    roped = gpu.upload_activation(qkv)
    gpu.ops.rope_qknorm(roped, gpu.ids([pos]), H, KVH, hd, theta, q_norm=qw, k_norm=kw, eps=eps)
    gpu.ops.attention_decode(roped, split, H, KVH, hd, 0, splits, positions=gpu.ids([pos]), kc=caches[1].k,
                             vc=caches[1].v, cap=cap)
    assert_close(gpu.to_host(fused), gpu.to_host(split), 0, 0, "decode attention, rope table vs rope_qknorm")
    assert_close(gpu.to_host(caches[0].k), gpu.to_host(caches[1].k), 0, 0, "new k in the cache")
    assert gpu.ops.rope_table(hd, theta, cap // 2)[0] is table[0]  # built once


@pytest.mark.parametrize("M,D,N", [(7, 576, 960), (32, 200, 96), (70, 64, 130)])
def test_gemm_taking_rmsnorm_from_the_residual_gemms_row_sums_equals_rmsnorm_then_gemm(gpu, M, D, N):
    """The prefill's residual GEMM leaves each row's sum of squares per 64 columns; the next
    GEMM normalizes its input from them as it stages it (no rmsnorm launch)."""
    x, r0 = rand(M, D), rand(M, D)
    Wo = gpu.upload(rand(D, D, scale=D ** -0.5))
    W = gpu.upload(rand(N, D, scale=D ** -0.5))
    nw_g = gpu.upload(1 + 0.1 * rand(D))
    r = gpu.upload_activation(r0)
    row_ss = gpu._empty((M * -(-D // 64),))
    gpu.ops.gemm(gpu.upload_activation(x), Wo, r, mode="residual", row_ss=row_ss)
    r_host = gpu.to_host(r)
    sums = gpu.to_host(row_ss).reshape(M, -1).sum(axis=1)
    assert_close(sums, (r_host.astype(np.float64) ** 2).sum(axis=1), 1e-5, 1e-5, "row sums of squares")
    want, got = gpu._empty((M, N)), gpu._empty((M, N))
    gpu.ops.gemm(gpu.rmsnorm(r, nw_g, 1e-5), W, want)
    gpu.ops.gemm(r, W, got, norm=(nw_g, row_ss, 1e-5))
    assert_close(gpu.to_host(got), gpu.to_host(want), 1e-3, 1e-3, "gemm(rmsnorm(r)) from the row sums")


@pytest.mark.parametrize("M,F,N", [(7, 1536, 576), (32, 96, 200), (70, 64, 50)])
def test_gemm_taking_swiglu_of_its_input_equals_swiglu_then_gemm(gpu, M, F, N):
    """The prefill's down projection reads gate|up and applies silu(gate) * up as it stages A."""
    gu = gpu.upload_activation(rand(M, 2 * F, scale=3.0))
    W = gpu.upload(rand(N, F, scale=F ** -0.5))
    r0 = rand(M, N)
    want, got = gpu.upload_activation(r0), gpu.upload_activation(r0)
    gpu.ops.gemm(gpu.swiglu(gu), W, want, mode="residual")
    gpu.ops.gemm(gu, W, got, mode="residual", swiglu_input=True)
    assert_close(gpu.to_host(got), gpu.to_host(want), 1e-6, 1e-6, "gemm(swiglu(x)) fused")
    with pytest.raises(AssertionError):
        gpu.ops.gemm(gu, W, got, swiglu_input=False)  # gate|up is twice W's K


def test_swiglu(cpu, gpu):
    gu = rand(3, 2 * 1536, scale=4.0)
    assert_close(gpu.to_host(gpu.swiglu(gpu.upload_activation(gu))), cpu.swiglu(gu), 1e-5, 1e-6, "swiglu")


@pytest.mark.parametrize("K,N,bias", [(576, 960, False), (896, 9728, True), (64, 256, True), (4096, 96, True)])
def test_fused_gemv_modes(cpu, gpu, K, N, bias):
    """The decode graph's GEMV prologue (rmsnorm) and epilogues (residual add, swiglu), with and
    without a bias; K=4096 has more norm-weight chunks than a thread loads before the wait."""
    eps = 1e-5
    wc, wg = pair(cpu, gpu, rand(N, K, scale=K ** -0.5))
    nc, ng = pair(cpu, gpu, 1 + 0.1 * rand(K))
    bc, bg = pair(cpu, gpu, rand(N, scale=0.1)) if bias else (None, None)
    x = rand(1, K)
    xg = gpu.upload_activation(x)
    y = gpu._empty((1, N))
    gpu.ops.gemv(wg, xg, y, bias=bg, norm_w=ng, eps=eps)
    assert_close(gpu.to_host(y), cpu.linear(cpu.rmsnorm(x, nc, eps), wc, bc), 1e-4, 1e-4, "norm + gemv")
    act = gpu._empty((1, N // 2))
    gpu.ops.gemv(wg, xg, act, bias=bg, norm_w=ng, eps=eps, mode="swiglu")
    ref = cpu.swiglu(cpu.linear(cpu.rmsnorm(x, nc, eps), wc, bc))
    assert_close(gpu.to_host(act), ref, 1e-4, 1e-4, "norm + gemv + swiglu")
    wd_c, wd_g = pair(cpu, gpu, rand(K, N // 2, scale=(N // 2) ** -0.5))
    bd_c, bd_g = pair(cpu, gpu, rand(K, scale=0.1)) if bias else (None, None)
    r = rand(1, K)
    rg = gpu.upload_activation(r)
    gpu.ops.gemv(wd_g, act, rg, bias=bd_g, mode="residual")
    assert_close(gpu.to_host(rg), r + cpu.linear(gpu.to_host(act), wd_c, bd_c), 1e-4, 1e-4, "gemv residual add")

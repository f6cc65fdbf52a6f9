// RoPE (HF rotate-half) and qwen3's per-head RMSNorm for one head, done by one warp.
// Shared by rope.cu (the standalone ops) and attention.cu (fused into decode attention).
#pragma once
#include "common.cuh"

#define ROPE_FLAG_ROPE 1
#define ROPE_FLAG_NORM 2
#define ROPE_FLAG_STORE 4  // rope_qknorm also writes k (roped) and v to the KV cache

// HF: inv_freq = 1 / theta^(2i/d) and angle = pos * inv_freq, both fp32. The power is taken
// in double and rounded once: powf is not correctly rounded (CUDA's is within 2 ulp), and at
// position 1000 one ulp of inv_freq moves sin/cos by ~1e-4, so it must match the reference's
// correctly rounded fp32 value, not just come close.
__device__ __forceinline__ float rope_inv_freq(int i, int hd, float theta) {
    return 1.f / (float)pow((double)theta, (double)(2 * i) / (double)hd);
}

// The rotation frequencies of this lane's pairs i = lane + 32 k (k < NF; hd/2 <= 32 NF). They
// depend on the kernel's arguments alone, so kernels compute them before pdl_wait(): the
// double-precision power is then off the path that waits on the previous kernel.
template <int NF>
__device__ __forceinline__ void lane_inv_freqs(float (&inv_freq)[NF], int hd, float theta, int flags) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int k = 0; k < NF; ++k) {
        const int i = lane + 32 * k;
        inv_freq[k] = (flags & ROPE_FLAG_ROPE) && i < (hd >> 1) ? rope_inv_freq(i, hd, theta) : 0.f;
    }
}

// This lane's (cos, sin) of pos * inv_freq for its pairs i = lane + 32 k: the same sincosf of
// the same fp32 product as a rope table row (rope_table), so either path rotates identically.
template <int NF>
__device__ __forceinline__ void lane_rope_cs(float2 (&cs)[NF], int pos, const float (&inv_freq)[NF]) {
#pragma unroll
    for (int k = 0; k < NF; ++k) sincosf((float)pos * inv_freq[k], &cs[k].y, &cs[k].x);
}

// This lane's (cos, sin) pairs from row `pos` of a rope table (rope.cu rope_table), whose rows
// hold the same values lane_rope_cs computes. Without ROPE_FLAG_ROPE, or past the table (a
// padded prefill row, whose output is unused), the identity rotation.
template <int NF>
__device__ __forceinline__ void lane_table_cs(float2 (&cs)[NF], const float2* __restrict__ table, int pos,
                                              int rows, int hd, int flags) {
    const int lane = threadIdx.x & 31, half = hd >> 1;
    const bool ok = (flags & ROPE_FLAG_ROPE) && pos >= 0 && pos < rows;
#pragma unroll
    for (int k = 0; k < NF; ++k) {
        const int i = lane + 32 * k;
        cs[k] = ok && i < half ? table[(size_t)pos * half + i] : make_float2(1.f, 0.f);
    }
}

// dst[0..hd) = scale * rope(norm(src)), with this lane's (cos, sin) pairs (lane_rope_cs or a
// rope table row). src may equal dst: each lane writes only the pair (i, i+hd/2) it has just
// read, and the norm's reads finish at the warp_sum before any write.
template <int NF>
__device__ __forceinline__ void warp_norm_rope_cs(const float* src, float* dst, const w16_t* __restrict__ norm_w,
                                                  int hd, const float2 (&cs)[NF], float eps, int flags, float scale) {
    const int lane = threadIdx.x & 31, half = hd >> 1;
    float r = 1.f;
    if (flags & ROPE_FLAG_NORM) {
        float ss = 0.f;
        for (int i = lane; i < hd; i += 32) ss += src[i] * src[i];
        r = rsqrtf(warp_sum(ss) / (float)hd + eps);
    }
#pragma unroll
    for (int k = 0; k < NF; ++k) {
        const int i = lane + 32 * k;
        if (i >= half) break;
        float a = src[i], b = src[i + half];
        if (flags & ROPE_FLAG_NORM) {
            a *= r * w_to_f32(norm_w[i]);
            b *= r * w_to_f32(norm_w[i + half]);
        }
        if (flags & ROPE_FLAG_ROPE) {  // explicit fmaf: every kernel rounds the rotation alike
            const float c = cs[k].x, s = cs[k].y;  // (left to --fmad, each may contract a*c - b*s its own way)
            const float a2 = fmaf(a, c, -(b * s));
            b = fmaf(b, c, a * s);
            a = a2;
        }
        dst[i] = a * scale;
        dst[i + half] = b * scale;
    }
    __syncwarp();
}

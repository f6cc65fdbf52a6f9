// RoPE (HF rotate-half) and qwen3's per-head RMSNorm for one head, done by one warp.
// Shared by rope.cu (the standalone ops) and attention.cu (fused into decode attention).
#pragma once
#include "common.cuh"

#define ROPE_FLAG_ROPE 1
#define ROPE_FLAG_NORM 2

// HF: inv_freq = 1 / theta^(2i/d) and angle = pos * inv_freq, both fp32. The power is taken
// in double and rounded once: powf is not correctly rounded (CUDA's is within 2 ulp), and at
// position 1000 one ulp of inv_freq moves sin/cos by ~1e-4, so it must match the reference's
// correctly rounded fp32 value, not just come close.
__device__ __forceinline__ float rope_inv_freq(int i, int hd, float theta) {
    return 1.f / (float)pow((double)theta, (double)(2 * i) / (double)hd);
}

// dst[0..hd) = scale * rope(norm(src)). src may equal dst: each lane writes only the pair
// (i, i+hd/2) it has just read, and the norm's reads finish at the warp_sum before any write.
__device__ __forceinline__ void warp_norm_rope(const float* src, float* dst, const w16_t* __restrict__ norm_w,
                                               int pos, int hd, float theta, float eps, int flags, float scale) {
    const int lane = threadIdx.x & 31, half = hd >> 1;
    float r = 1.f;
    if (flags & ROPE_FLAG_NORM) {
        float ss = 0.f;
        for (int i = lane; i < hd; i += 32) ss += src[i] * src[i];
        r = rsqrtf(warp_sum(ss) / (float)hd + eps);
    }
    for (int i = lane; i < half; i += 32) {
        float a = src[i], b = src[i + half];
        if (flags & ROPE_FLAG_NORM) {
            a *= r * w_to_f32(norm_w[i]);
            b *= r * w_to_f32(norm_w[i + half]);
        }
        if (flags & ROPE_FLAG_ROPE) {
            float s, c;
            sincosf((float)pos * rope_inv_freq(i, hd, theta), &s, &c);
            const float a2 = a * c - b * s;
            b = b * c + a * s;
            a = a2;
        }
        dst[i] = a * scale;
        dst[i + half] = b * scale;
    }
    __syncwarp();
}

// RMSNorm, alone and fused with the residual add. One block per token row, fp32 in/out,
// 16-bit weight; y = x * rsqrt(mean(x^2) + eps) * w, the HF formula in fp32.
#include "common.cuh"

#define NORM_PRE 4  // weights per thread loaded before the PDL wait (all of them for D <= 4 * 256)

// grid (T), block 256.
extern "C" __global__ void WNAME(rmsnorm)(const float* __restrict__ x, const w16_t* __restrict__ w,
                                   float* __restrict__ out, int D, float eps) {
    __shared__ float scratch[32];
    float wp[NORM_PRE];  // this thread's first weights, loaded before the wait (weights only)
#pragma unroll
    for (int q = 0; q < NORM_PRE; ++q) {
        const int i = threadIdx.x + q * blockDim.x;
        wp[q] = i < D ? w_to_f32(w[i]) : 0.f;
    }
    pdl_launch_dependents();
    pdl_wait();
    const float* xr = x + (size_t)blockIdx.x * D;
    float* o = out + (size_t)blockIdx.x * D;
    float ss = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
    const float scale = rsqrtf(block_sum(ss, scratch) / (float)D + eps);
#pragma unroll
    for (int q = 0; q < NORM_PRE; ++q) {
        const int i = threadIdx.x + q * blockDim.x;
        if (i < D) o[i] = xr[i] * scale * wp[q];
    }
    for (int i = threadIdx.x + NORM_PRE * blockDim.x; i < D; i += blockDim.x) o[i] = xr[i] * scale * w_to_f32(w[i]);
}

// s = x + residual (written to sum_out), out = rmsnorm(s) * w. grid (T), block 256.
extern "C" __global__ void WNAME(add_rmsnorm)(const float* __restrict__ x, const float* __restrict__ residual,
                                       const w16_t* __restrict__ w, float* __restrict__ out,
                                       float* __restrict__ sum_out, int D, float eps) {
    __shared__ float scratch[32];
    pdl_launch_dependents();
    pdl_wait();
    const size_t row = (size_t)blockIdx.x * D;
    float ss = 0.f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        const float s = x[row + i] + residual[row + i];
        sum_out[row + i] = s;
        ss += s * s;
    }
    const float scale = rsqrtf(block_sum(ss, scratch) / (float)D + eps);
    for (int i = threadIdx.x; i < D; i += blockDim.x)  // reads back only this thread's own writes
        out[row + i] = sum_out[row + i] * scale * w_to_f32(w[i]);
}

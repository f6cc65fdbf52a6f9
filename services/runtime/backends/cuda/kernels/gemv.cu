// Decode-time projections: y = W x (+ b) for one token, W bf16 or fp16 [N, K], x fp32 [K].
//
// At batch 1 a projection is a stream over W, and at these sizes (0.3-56 MB) the step is
// bound by latency, not bandwidth. So: 16-byte loads, every thread issues R*U of them before
// the first FMA, a row group of KS warps splits K (deterministic smem reduction, no atomics),
// and the first batch of weight loads (with the bias and norm weights) is issued BEFORE
// griddepcontrol.wait, so under programmatic dependent launch the weight fetch overlaps the
// previous kernel's tail; MODE 1 fetches its residual rows right after the wait, not at the end.
//
// Fused prologue/epilogue so a decoder layer needs only four GEMVs and one attention kernel:
//   NORM      x <- rmsnorm(x) * norm_w, computed by every block from the fp32 residual stream
//   MODE 0    y[r]  = acc + b[r]
//   MODE 1    y[r] += acc + b[r]                      (y is the residual stream: o_proj, down;
//                                                    never combined with NORM, x must not alias y)
//   MODE 2    y[g]  = silu(acc_g + b[g]) * (acc_u + b[g+F]), rows g and g+F   (gate_up)
#include "common.cuh"

#define GEMV_R 2   // rows per row group (MODE 2: the gate row and its up row)
#define GEMV_U 4   // 16-byte chunks per row in flight per thread per iteration
#define GEMV_XB 4  // float4s of x per thread loaded before the first is stored
#define GEMV_NW 2  // norm-weight chunks (4 values) per thread loaded before the wait (all for K <= 8 * blockDim)

template <int MODE, bool NORM>
__device__ __forceinline__ void gemv_body(const w16_t* __restrict__ W, const float* __restrict__ x,
                                          const w16_t* __restrict__ bias, const w16_t* __restrict__ norm_w,
                                          float* __restrict__ y, int N, int K, int F, int ks_count, float eps) {
    extern __shared__ float4 smem4[];
    float* xs = reinterpret_cast<float*>(smem4);   // [K] the (normalized) input
    float* red = xs + K;                           // [warps][R] split-K partials
    __shared__ float scratch[32];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int groups_per_block = (blockDim.x >> 5) / ks_count;
    const int group = blockIdx.x * groups_per_block + warp / ks_count;
    const int ks = warp % ks_count;
    const int tg = ks * 32 + lane, gt = ks_count * 32;   // thread's index / count in its group
    const int KC = K >> 3;                                // 8-element chunks per row
    const int n_groups = MODE == 2 ? F : (N + GEMV_R - 1) / GEMV_R;
    const bool group_ok = group < n_groups;

    int rows[GEMV_R];
    bool row_ok[GEMV_R];
#pragma unroll
    for (int j = 0; j < GEMV_R; ++j) {
        rows[j] = MODE == 2 ? group + j * F : group * GEMV_R + j;
        row_ok[j] = group_ok && rows[j] < N;
    }

    // First batch of weight loads: independent of every earlier kernel.
    uint4 w[GEMV_R][GEMV_U];
#pragma unroll
    for (int u = 0; u < GEMV_U; ++u) {
        const int c = tg + u * gt;
#pragma unroll
        for (int j = 0; j < GEMV_R; ++j)
            w[j][u] = (row_ok[j] && c < KC) ? ld_stream(reinterpret_cast<const uint4*>(W + (size_t)rows[j] * K) + c)
                                            : make_uint4(0, 0, 0, 0);
    }
    // The other weights this thread needs, also before the wait, so that after it only the
    // input (and, for MODE 1, the residual rows) costs a memory round trip: this row group's
    // bias, and the first GEMV_NW chunks of the norm weight this thread applies below.
    const int K4 = K >> 2;
    const bool writer = ks == 0 && lane == 0;  // the thread that finishes the group's rows
    float bias_v[GEMV_R];
#pragma unroll
    for (int j = 0; j < GEMV_R; ++j) bias_v[j] = bias && writer && row_ok[j] ? w_to_f32(bias[rows[j]]) : 0.f;
    uint2 nw_pre[GEMV_NW];
#pragma unroll
    for (int q = 0; q < GEMV_NW; ++q) {
        const int i = threadIdx.x + q * blockDim.x;
        nw_pre[q] = NORM && i < K4 ? *reinterpret_cast<const uint2*>(norm_w + 4 * i) : make_uint2(0, 0);
    }
    pdl_launch_dependents();
    pdl_wait();

    float y_old[GEMV_R];  // MODE 1: the residual rows, fetched now rather than at the end
#pragma unroll
    for (int j = 0; j < GEMV_R; ++j) y_old[j] = MODE == 1 && writer && row_ok[j] ? y[rows[j]] : 0.f;

    // Stage x (and normalize it) in shared memory, GEMV_XB loads per thread in flight at once.
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float ss = 0.f;
    for (int i0 = threadIdx.x; i0 < K4; i0 += GEMV_XB * blockDim.x) {
        float4 v[GEMV_XB];
#pragma unroll
        for (int b = 0; b < GEMV_XB; ++b) {
            const int i = i0 + b * blockDim.x;
            v[b] = i < K4 ? x4[i] : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int b = 0; b < GEMV_XB; ++b) {
            const int i = i0 + b * blockDim.x;
            if (i >= K4) break;
            if (NORM) ss += v[b].x * v[b].x + v[b].y * v[b].y + v[b].z * v[b].z + v[b].w * v[b].w;
            smem4[i] = v[b];
        }
    }
    if (NORM) {
        const float scale = rsqrtf(block_sum(ss, scratch) / (float)K + eps);
        auto apply = [&](int i, uint2 nw) {  // same indices this thread wrote
            float4 v = smem4[i];
            v.x *= scale * wlo(nw.x); v.y *= scale * whi(nw.x);
            v.z *= scale * wlo(nw.y); v.w *= scale * whi(nw.y);
            smem4[i] = v;
        };
#pragma unroll
        for (int q = 0; q < GEMV_NW; ++q) {
            const int i = threadIdx.x + q * blockDim.x;
            if (i < K4) apply(i, nw_pre[q]);
        }
        for (int i = threadIdx.x + GEMV_NW * blockDim.x; i < K4; i += blockDim.x)
            apply(i, *reinterpret_cast<const uint2*>(norm_w + 4 * i));
    }
    __syncthreads();

    float acc[GEMV_R];
#pragma unroll
    for (int j = 0; j < GEMV_R; ++j) acc[j] = 0.f;
    for (int base = 0;; base += GEMV_U * gt) {
#pragma unroll
        for (int u = 0; u < GEMV_U; ++u) {
            const int c = base + tg + u * gt;
            if (c < KC) {
                const float4 xa = smem4[2 * c], xb = smem4[2 * c + 1];
                const float xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
                for (int j = 0; j < GEMV_R; ++j) acc[j] += dot8_w(w[j][u], xv);
            }
        }
        const int next = base + GEMV_U * gt;
        if (next >= KC) break;
#pragma unroll
        for (int u = 0; u < GEMV_U; ++u) {
            const int c = next + tg + u * gt;
#pragma unroll
            for (int j = 0; j < GEMV_R; ++j)
                w[j][u] = (row_ok[j] && c < KC) ? ld_stream(reinterpret_cast<const uint4*>(W + (size_t)rows[j] * K) + c)
                                                : make_uint4(0, 0, 0, 0);
        }
    }

#pragma unroll
    for (int j = 0; j < GEMV_R; ++j) acc[j] = warp_sum(acc[j]);
    if (ks_count > 1) {  // fixed-order sum over the group's warps: deterministic
        if (lane < GEMV_R) {
#pragma unroll
            for (int j = 0; j < GEMV_R; ++j)
                if (lane == j) red[warp * GEMV_R + j] = acc[j];
        }
        __syncthreads();
        if (ks == 0) {
            const int first = warp;  // warp with ks == 0 is the group's first warp
#pragma unroll
            for (int j = 0; j < GEMV_R; ++j) {
                float s = 0.f;
                for (int q = 0; q < ks_count; ++q) s += red[(first + q) * GEMV_R + j];
                acc[j] = s;
            }
        }
    }
    if (!writer || !group_ok) return;

    if (MODE == 2) {
        y[group] = silu(acc[0] + bias_v[0]) * (acc[1] + bias_v[1]);
    } else {
#pragma unroll
        for (int j = 0; j < GEMV_R; ++j) {
            if (!row_ok[j]) continue;
            const float v = acc[j] + bias_v[j];
            y[rows[j]] = MODE == 1 ? y_old[j] + v : v;
        }
    }
}

#define GEMV_KERNEL(NAME, MODE, NORM)                                                              \
    extern "C" __global__ void __launch_bounds__(256) WNAME(NAME)(                                 \
        const w16_t* __restrict__ W, const float* __restrict__ x, const w16_t* __restrict__ bias,     \
        const w16_t* __restrict__ norm_w, float* __restrict__ y, int N, int K, int F, int ks_count, \
        float eps) {                                                                               \
        gemv_body<MODE, NORM>(W, x, bias, norm_w, y, N, K, F, ks_count, eps);                      \
    }

GEMV_KERNEL(gemv_store, 0, false)
GEMV_KERNEL(gemv_norm_store, 0, true)
GEMV_KERNEL(gemv_residual, 1, false)
GEMV_KERNEL(gemv_swiglu, 2, false)
GEMV_KERNEL(gemv_norm_swiglu, 2, true)

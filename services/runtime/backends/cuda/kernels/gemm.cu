// Prefill projections on tensor cores: C[M, N] = A[M, K] @ W[N, K]^T (+ b), with
// mma.sync.m16n8k16 bf16 (fp16 for fp16 weights) -> fp32, inline PTX (no mma.h, which the pip
// wheels lack).
//
// A is the fp32 activation, rounded to the weights' type as it is staged in shared memory.
// Tiles: 64x64 per block, 32x32 per warp, BK 32, two shared-memory buffers with the next
// tile's global loads in registers while the current one is multiplied.
// A short prompt gives few tiles (N/64), so K is split over gridDim.z: each split writes its
// partial tile to a workspace and the last split to arrive (atomic ticket) sums all of them in
// split order, so the result does not depend on arrival order.
#include "common.cuh"

#define BM 64
#define BN 64
#define BK 32
#define GEMM_RESIDUAL 1
#define GEMM_A_SWIGLU 2
#define LDS (BK + 8)  // bf16 row stride: 80 bytes, so the fragment loads below are conflict-free

// grid (ceil(N/64), ceil(M/64), splits), block 128. K % 8 == 0; k_per_split % 32 == 0.
// mode bit 0 (GEMM_RESIDUAL): C += AW^T + b (residual stream), else C = AW^T + b.
// gemm_swiglu_bf16 (launched with mode bit 1, GEMM_A_SWIGLU): A is gate|up [M, 2K] and the
// product takes silu(gate) * up, computed as A is staged (the prefill's down projection: no
// separate swiglu launch).
// ws: splits*M*N floats and counters: one int per (x, y) tile, zero at rest (splits > 1 only).
// Two entry points: gemm_bf16, and gemm_swiglu_bf16 for the down projection.
// SWIGLU is a template argument rather than a branch in the K loop, so neither kernel's loop
// carries the other's staging code (the silu path is a third of the file's machine code, and
// a batch-1 launch fetches its code cold).
template <bool SWIGLU>
__device__ __forceinline__ void gemm_body(const float* __restrict__ A, const w16_t* __restrict__ W,
                                          const w16_t* __restrict__ bias, float* __restrict__ C,
                                          float* __restrict__ ws, int* __restrict__ counters, int M, int N, int K,
                                          int k_per_split, int mode, w16_t (*As)[BM * LDS], w16_t (*Bs)[BN * LDS],
                                          int& s_last) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int gid = lane >> 2, tig = lane & 3, wm = warp >> 1, wn = warp & 1;
    const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM, split = blockIdx.z, splits = gridDim.z;
    const int k_begin = split * k_per_split, k_end = min(K, k_begin + k_per_split);

    float4 a_reg[4];
    uint4 b_reg[2];
    auto load_b = [&](int k0) {  // weights: independent of earlier kernels
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int idx = tid + 128 * i, r = idx >> 2, c = idx & 3, n = n0 + r, k = k0 + c * 8;
            b_reg[i] = (n < N && k < k_end) ? ld_stream(reinterpret_cast<const uint4*>(W + (size_t)n * K + k))
                                            : make_uint4(0, 0, 0, 0);
        }
    };
    constexpr bool a_swiglu = SWIGLU;
    auto load_a = [&](int k0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int idx = tid + 128 * i, r = idx >> 3, c = idx & 7, m = m0 + r, k = k0 + c * 4;
            if (!(m < M && k < k_end)) {
                a_reg[i] = make_float4(0.f, 0.f, 0.f, 0.f);
            } else if (a_swiglu) {  // A[m, k] = silu(gate[m, k]) * up[m, k], rows of gate | up
                const float4 g = *reinterpret_cast<const float4*>(A + (size_t)m * 2 * K + k);
                const float4 u = *reinterpret_cast<const float4*>(A + (size_t)m * 2 * K + K + k);
                a_reg[i] = make_float4(silu(g.x) * u.x, silu(g.y) * u.y, silu(g.z) * u.z, silu(g.w) * u.w);
            } else {
                a_reg[i] = *reinterpret_cast<const float4*>(A + (size_t)m * K + k);
            }
        }
    };
    auto store_tiles = [&](int buf) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int idx = tid + 128 * i, r = idx >> 3, c = idx & 7;
            *reinterpret_cast<uint2*>(&As[buf][r * LDS + c * 4]) =
                make_uint2(pack_w16x2(a_reg[i].x, a_reg[i].y), pack_w16x2(a_reg[i].z, a_reg[i].w));
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int idx = tid + 128 * i, r = idx >> 2, c = idx & 3;
            *reinterpret_cast<uint4*>(&Bs[buf][r * LDS + c * 8]) = b_reg[i];
        }
    };

    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;

    load_b(k_begin);
    pdl_launch_dependents();
    pdl_wait();
    load_a(k_begin);
    int buf = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        store_tiles(buf);
        __syncthreads();  // (two buffers: also orders this write after the reads two steps back)
        if (k0 + BK < k_end) {
            load_b(k0 + BK);
            load_a(k0 + BK);
        }
        const w16_t* as = As[buf];
        const w16_t* bs = Bs[buf];
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            u32 a[2][4], b[4][2];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                const int r = wm * 32 + mi * 16 + gid, k = kk + tig * 2;
                a[mi][0] = *reinterpret_cast<const u32*>(&as[r * LDS + k]);
                a[mi][1] = *reinterpret_cast<const u32*>(&as[(r + 8) * LDS + k]);
                a[mi][2] = *reinterpret_cast<const u32*>(&as[r * LDS + k + 8]);
                a[mi][3] = *reinterpret_cast<const u32*>(&as[(r + 8) * LDS + k + 8]);
            }
#pragma unroll
            for (int ni = 0; ni < 4; ++ni) {
                const int n = wn * 32 + ni * 8 + gid, k = kk + tig * 2;
                b[ni][0] = *reinterpret_cast<const u32*>(&bs[n * LDS + k]);
                b[ni][1] = *reinterpret_cast<const u32*>(&bs[n * LDS + k + 8]);
            }
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni)
                    mma_w16_16816(acc[mi][ni], a[mi][0], a[mi][1], a[mi][2], a[mi][3], b[ni][0], b[ni][1]);
        }
        buf ^= 1;
    }

    // Accumulator element e of tile (mi, ni): row gid (+8 for e >= 2), column tig*2 (+1 for odd e).
    auto each_in_bounds = [&](auto&& f) {  // f(m, n, accumulator element) for every element inside C
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int ni = 0; ni < 4; ++ni)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int m = m0 + wm * 32 + mi * 16 + gid + (e >> 1) * 8;
                    const int n = n0 + wn * 32 + ni * 8 + tig * 2 + (e & 1);
                    if (m < M && n < N) f(m, n, acc[mi][ni][e]);
                }
    };
    if (splits > 1) {
        each_in_bounds([&](int m, int n, float v) { ws[((size_t)split * M + m) * N + n] = v; });
        __threadfence();
        __syncthreads();
        int* counter = counters + blockIdx.y * gridDim.x + blockIdx.x;
        if (tid == 0) s_last = atomicAdd(counter, 1) == splits - 1;
        __syncthreads();
        if (!s_last) return;
        __threadfence();
        if (tid == 0) *counter = 0;
        // Sum the splits in split order (deterministic). Split-outer, two splits a pass: each
        // pass issues the loads of all of this thread's elements of both before adding any, so
        // the reduction waits on ceil(splits / 2) round trips, not (elements x splits).
        each_in_bounds([&](int, int, float& a) { a = 0.f; });
        for (int s = 0; s < splits; s += 2) {
            const float* p0 = ws + (size_t)s * M * N;
            const float* p1 = s + 1 < splits ? p0 + (size_t)M * N : nullptr;
            each_in_bounds([&](int m, int n, float& a) {
                const size_t o = (size_t)m * N + n;
                a += ld_cg_f32(p0 + o);
                if (p1) a += ld_cg_f32(p1 + o);
            });
        }
    }
    each_in_bounds([&](int m, int n, float v) {
        if (bias) v += w_to_f32(bias[n]);
        if (mode & GEMM_RESIDUAL) C[(size_t)m * N + n] += v;
        else C[(size_t)m * N + n] = v;
    });
}

#define GEMM_KERNEL(NAME, SWIGLU)                                                                    \
    extern "C" __global__ void __launch_bounds__(128) WNAME(NAME)(                                   \
        const float* __restrict__ A, const w16_t* __restrict__ W, const w16_t* __restrict__ bias,       \
        float* __restrict__ C, float* __restrict__ ws, int* __restrict__ counters, int M, int N, int K, \
        int k_per_split, int mode) {                                                                 \
        __shared__ __align__(16) w16_t As[2][BM * LDS];                                              \
        __shared__ __align__(16) w16_t Bs[2][BN * LDS];                                              \
        __shared__ int s_last;                                                                       \
        gemm_body<SWIGLU>(A, W, bias, C, ws, counters, M, N, K, k_per_split, mode, As, Bs, s_last);   \
    }

GEMM_KERNEL(gemm_bf16, false)
GEMM_KERNEL(gemm_swiglu_bf16, true)

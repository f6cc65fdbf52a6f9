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
#define GEMM_ROW_SS 2   // the epilogue writes each row's sum of squares over the block's columns
#define LDS (BK + 8)  // bf16 row stride: 80 bytes, so the fragment loads below are conflict-free

// grid (ceil(N/64), ceil(M/64), splits), block 128. K % 8 == 0; k_per_split % 32 == 0.
// mode bit 0 (GEMM_RESIDUAL): C += AW^T + b (residual stream), else C = AW^T + b.
// mode bit 1 (GEMM_ROW_SS): the final values' sums of squares per row over this block's 64
// columns go to row_ss[m * gridDim.x + blockIdx.x] (the prefill's residual GEMMs, o and down).
// gemm_swiglu_bf16: A is gate|up [M, 2K] and the product takes silu(gate) * up, computed as A
// is staged (the prefill's down projection: no separate swiglu launch).
// gemm_norm_bf16: A is the residual stream and is staged as A * rsqrt(mean square + eps) *
// norm_w, the mean square summed from row_ss's ceil(K/64) partials in order (written by the
// residual GEMM before it): the rmsnorm launch goes.
// ws: splits*M*N floats and counters: one int per (x, y) tile, zero at rest (splits > 1 only).
// Three entry points: gemm_bf16, gemm_swiglu_bf16 (the down projection) and gemm_norm_bf16 (qkv
// and gate|up). SWIGLU and NORM are template arguments rather than branches in the K loop, so
// no kernel's loop carries another's staging code (the silu path is a third of the file's
// machine code, and a batch-1 launch fetches its code cold).
struct GemmSmem {
    w16_t (*As)[BM * LDS];
    w16_t (*Bs)[BN * LDS];
    float* row;  // [2][BM]: GEMM_ROW_SS's per-warp-column partials, or NORM's 1/rms per row
    int* last;
};

template <bool SWIGLU, bool NORM>
__device__ __forceinline__ void gemm_body(const float* __restrict__ A, const w16_t* __restrict__ W,
                                          const w16_t* __restrict__ bias, float* __restrict__ C,
                                          float* __restrict__ ws, int* __restrict__ counters,
                                          float* __restrict__ row_ss, const w16_t* __restrict__ norm_w, int M, int N,
                                          int K, int k_per_split, int mode, float eps, GemmSmem sm) {
    w16_t (*As)[BM * LDS] = sm.As;
    w16_t (*Bs)[BN * LDS] = sm.Bs;
    int& s_last = *sm.last;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int gid = lane >> 2, tig = lane & 3, wm = warp >> 1, wn = warp & 1;
    const int n0 = blockIdx.x * BN, m0 = blockIdx.y * BM, split = blockIdx.z, splits = gridDim.z;
    const int k_begin = split * k_per_split, k_end = min(K, k_begin + k_per_split);

    float4 a_reg[4];
    uint2 nw_reg[4];  // NORM: the norm weights of a_reg's columns
    uint4 b_reg[2];
    auto load_b = [&](int k0) {  // weights: independent of earlier kernels
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int idx = tid + 128 * i, r = idx >> 2, c = idx & 3, n = n0 + r, k = k0 + c * 8;
            b_reg[i] = (n < N && k < k_end) ? ld_stream(reinterpret_cast<const uint4*>(W + (size_t)n * K + k))
                                            : make_uint4(0, 0, 0, 0);
        }
    };
    auto load_a = [&](int k0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int idx = tid + 128 * i, r = idx >> 3, c = idx & 7, m = m0 + r, k = k0 + c * 4;
            if (!(m < M && k < k_end)) {
                a_reg[i] = make_float4(0.f, 0.f, 0.f, 0.f);
            } else if (SWIGLU) {  // A[m, k] = silu(gate[m, k]) * up[m, k], rows of gate | up
                const float4 g = *reinterpret_cast<const float4*>(A + (size_t)m * 2 * K + k);
                const float4 u = *reinterpret_cast<const float4*>(A + (size_t)m * 2 * K + K + k);
                a_reg[i] = make_float4(silu(g.x) * u.x, silu(g.y) * u.y, silu(g.z) * u.z, silu(g.w) * u.w);
            } else {
                a_reg[i] = *reinterpret_cast<const float4*>(A + (size_t)m * K + k);
            }
            if (NORM) nw_reg[i] = m < M && k < k_end ? *reinterpret_cast<const uint2*>(norm_w + k) : make_uint2(0, 0);
        }
    };
    auto store_tiles = [&](int buf) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int idx = tid + 128 * i, r = idx >> 3, c = idx & 7;
            float4 a = a_reg[i];
            if (NORM) {  // as the rmsnorm kernel rounds it: (x * scale) * w
                const float sc = sm.row[r];
                a.x = a.x * sc * wlo(nw_reg[i].x);
                a.y = a.y * sc * whi(nw_reg[i].x);
                a.z = a.z * sc * wlo(nw_reg[i].y);
                a.w = a.w * sc * whi(nw_reg[i].y);
            }
            *reinterpret_cast<uint2*>(&As[buf][r * LDS + c * 4]) =
                make_uint2(pack_w16x2(a.x, a.y), pack_w16x2(a.z, a.w));
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
    if (NORM) {  // 1/rms of this block's rows: the residual GEMM's partials summed in column order
        const int tiles = (K + BN - 1) / BN;
        if (tid < BM) {
            const int m = m0 + tid;
            float ss = 0.f;
            if (m < M)
                for (int i = 0; i < tiles; ++i) ss += row_ss[(size_t)m * tiles + i];
            sm.row[tid] = rsqrtf(ss / (float)K + eps);
        }
        __syncthreads();  // before store_tiles reads them
    }
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
    each_in_bounds([&](int m, int n, float& v) {
        if (bias) v += w_to_f32(bias[n]);
        if (mode & GEMM_RESIDUAL) v += C[(size_t)m * N + n];
        C[(size_t)m * N + n] = v;  // v (the accumulator) now holds the final value
    });
    if (!(mode & GEMM_ROW_SS)) return;
    // Sum of squares of the final values per row over this block's 64 columns, in a fixed order:
    // this thread's 8 columns of each of its 4 rows, the quad's 4 lanes (one warp's 32
    // columns), then the two warps of a row band (wn 0, then 1).
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float ss = 0.f;
#pragma unroll
            for (int ni = 0; ni < 4; ++ni)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int n = n0 + wn * 32 + ni * 8 + tig * 2 + e;
                    const float v = n < N ? acc[mi][ni][h * 2 + e] : 0.f;
                    ss += v * v;
                }
            ss += __shfl_xor_sync(FULL_MASK, ss, 1);
            ss += __shfl_xor_sync(FULL_MASK, ss, 2);
            if (tig == 0) sm.row[wn * BM + wm * 32 + mi * 16 + h * 8 + gid] = ss;
        }
    __syncthreads();
    if (tid < BM && m0 + tid < M) row_ss[(size_t)(m0 + tid) * gridDim.x + blockIdx.x] = sm.row[tid] + sm.row[BM + tid];
}

#define GEMM_KERNEL(NAME, SWIGLU, NORM)                                                              \
    extern "C" __global__ void __launch_bounds__(128, 1) WNAME(NAME)(                                  \
        const float* __restrict__ A, const w16_t* __restrict__ W, const w16_t* __restrict__ bias,         \
        float* __restrict__ C, float* __restrict__ ws, int* __restrict__ counters,                        \
        float* __restrict__ row_ss, const w16_t* __restrict__ norm_w, int M, int N, int K,                \
        int k_per_split, int mode, float eps) {                                                          \
        __shared__ __align__(16) w16_t As[2][BM * LDS];                                                \
        __shared__ __align__(16) w16_t Bs[2][BN * LDS];                                                \
        __shared__ float s_row[2 * BM];                                                                \
        __shared__ int s_last;                                                                         \
        gemm_body<SWIGLU, NORM>(A, W, bias, C, ws, counters, row_ss, norm_w, M, N, K, k_per_split, mode, \
                                eps, GemmSmem{As, Bs, s_row, &s_last});                                 \
    }

GEMM_KERNEL(gemm_bf16, false, false)
GEMM_KERNEL(gemm_swiglu_bf16, true, false)
GEMM_KERNEL(gemm_norm_bf16, false, true)

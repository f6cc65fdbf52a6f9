// Causal GQA attention over the bf16 KV cache [layers, KVH, cap, hd].
//
//   kv_store          prefill: write the T new k/v rows at their positions
//   attention_prefill flash-style: a block owns (a few queries) x (the query heads of one kv
//                     head), streams 32-key tiles of K/V through shared memory once for all of
//                     them, and keeps an online softmax per (query, head) in registers
//   attention_paged   the same over the batching core's block pool: each block's queries are
//                     rows of ONE sequence (a host-built tile list), its keys found through
//                     that sequence's block table (the k/v rows are stored by kv_store with
//                     slots for positions)
//   (decode: attention_decode.cu)
//
// Batch invariance: an item's (query row, head) result is the same sequence of 32-key tile
// updates, tiles at multiples of 32 from position 0, whatever else shares its block or launch,
// so a row's output does not depend on the batch it runs in or on how the rows are tiled.
// Scores and softmax are fp32; q stays fp32 (it never touches memory as bf16).
#include "attention.cuh"

// grid (T), block 128.
extern "C" __global__ void kv_store(const float* __restrict__ qkv, const int* __restrict__ positions,
                                    bf16_t* kc, bf16_t* vc, const DecodeState* __restrict__ st,
                                    int H, int KVH, int hd, int cap, int layer) {
    pdl_launch_dependents();
    pdl_wait();
    cache_from_state(st, kc, vc, cap);
    const int t = blockIdx.x, p = positions[t];
    if (p < 0 || p >= cap) return;
    const int stride = (H + 2 * KVH) * hd;
    const float* k = qkv + (size_t)t * stride + (size_t)H * hd;
    const float* v = k + (size_t)KVH * hd;
    for (int i = threadIdx.x; i < KVH * hd; i += blockDim.x) {
        const int h = i / hd, d = i - h * hd;
        const size_t dst = (((size_t)layer * KVH + h) * cap + p) * hd + d;
        kc[dst] = f32_to_bf16(k[i]);
        vc[dst] = f32_to_bf16(v[i]);
    }
}

// ---- prefill ------------------------------------------------------------------------------
// Where key j of the block's sequence lives in the cache (in rows of hd elements): position j
// of a per-sequence cache, or the slot its block table gives in the pool.
struct ContiguousKeys {
    __device__ __forceinline__ size_t row(int j) const { return (size_t)j; }
};
struct PagedKeys {
    const int* table;  // the sequence's block numbers
    int block_size;
    __device__ __forceinline__ size_t row(int j) const {
        const int b = j / block_size;
        return (size_t)table[b] * block_size + (j - b * block_size);
    }
};

// Rows [t0, t_end) of the block (at most BQ, one sequence's); `Keys` places that sequence's keys.
// Block 128, BQ*G <= 16 items (a query row and head); warp w serves items w, w+4, w+8, w+12.
// Dynamic smem: 128*hd + 128*(hd+2) + 4*(16*34) bytes (ops.py).
//
// Each item's running max, partial sums and accumulator live in shared memory, not registers,
// so the loop over a warp's items is not unrolled: one copy of q.k and p.v in the code instead
// of four (the code is fetched cold at each launch; see the cuda README).
template <int DPL, typename Keys>
__device__ __forceinline__ void attention_rows(const float* __restrict__ qkv, const int* __restrict__ positions,
                                               const bf16_t* kc, const bf16_t* vc, float* __restrict__ out,
                                               int t0, int t_end, int H, int KVH, int hd, int cap, int layer,
                                               float scale, int BQ, Keys keys) {
    extern __shared__ float4 smem4[];
    __shared__ int s_maxpos;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int G = H / KVH, kvh = blockIdx.y, n_items = BQ * G;
    const int stride = (H + 2 * KVH) * hd, ldk = hd + 2;  // padded bf16 rows: conflict-free lane-per-key reads
    float* Qs = reinterpret_cast<float*>(smem4);          // [16][hd], pre-scaled
    float* Acc = Qs + 16 * hd;                             // [16][hd] each item's p.v accumulator
    float* Lp = Acc + 16 * hd;                             // [16][32] each item's per-lane sums of p
    float* Mx = Lp + 16 * 32;                              // [16] each item's running max
    int* Pos = reinterpret_cast<int*>(Mx + 16);            // [16] each item's position, -1 if none
    bf16_t* Ks = reinterpret_cast<bf16_t*>(Pos + 16);      // [KT][ldk]
    bf16_t* Vs = Ks + KT * ldk;                            // [KT][ldk]

    for (int idx = threadIdx.x; idx < n_items * hd; idx += blockDim.x) {
        const int item = idx / hd, d = idx - item * hd, t = t0 + item / G, g = item % G;
        Qs[idx] = t < t_end ? qkv[(size_t)t * stride + (size_t)(kvh * G + g) * hd + d] * scale : 0.f;
        Acc[idx] = 0.f;
    }
    for (int idx = threadIdx.x; idx < 16 * 32; idx += blockDim.x) Lp[idx] = 0.f;
    if (threadIdx.x < 16) {
        const int item = threadIdx.x, t = t0 + item / G;
        Pos[item] = item < n_items && t < t_end ? min(positions[t], cap - 1) : -1;
        Mx[item] = NEG_INF;
    }
    if (threadIdx.x == 0) {
        int mp = 0;
        for (int t = t0; t < t_end; ++t) mp = max(mp, positions[t]);
        s_maxpos = min(mp, cap - 1);
    }
    __syncthreads();
    const int max_pos = s_maxpos;
    const bf16_t* kbase = kc + ((size_t)layer * KVH + kvh) * cap * hd;
    const bf16_t* vbase = vc + ((size_t)layer * KVH + kvh) * cap * hd;
    const int cpr = hd >> 3;  // 16-byte chunks per row
    constexpr int STAGE_B = DPL < 4 ? DPL : 4;

#pragma unroll 1
    for (int k0 = 0; k0 <= max_pos; k0 += KT) {
        __syncthreads();  // the previous tile is consumed
        // STAGE_B chunks of K and of V per thread in flight before the first is stored: a whole
        // 32-key tile (DPL chunks per thread) at once up to hd 128.
        for (int i0 = threadIdx.x; i0 < KT * cpr; i0 += STAGE_B * blockDim.x) {
            uint4 kv[STAGE_B], vv[STAGE_B];
#pragma unroll
            for (int b = 0; b < STAGE_B; ++b) {
                const int idx = i0 + b * blockDim.x, r = idx / cpr, c = idx - r * cpr, j = k0 + r;
                kv[b] = vv[b] = make_uint4(0, 0, 0, 0);
                if (idx < KT * cpr && j <= max_pos) {
                    const size_t at = keys.row(j) * hd;
                    kv[b] = reinterpret_cast<const uint4*>(kbase + at)[c];
                    vv[b] = reinterpret_cast<const uint4*>(vbase + at)[c];
                }
            }
#pragma unroll
            for (int b = 0; b < STAGE_B; ++b) {
                const int idx = i0 + b * blockDim.x, r = idx / cpr, c = idx - r * cpr;
                if (idx >= KT * cpr) break;
                u32* kd = reinterpret_cast<u32*>(Ks + r * ldk + c * 8);
                u32* vd = reinterpret_cast<u32*>(Vs + r * ldk + c * 8);
                kd[0] = kv[b].x; kd[1] = kv[b].y; kd[2] = kv[b].z; kd[3] = kv[b].w;
                vd[0] = vv[b].x; vd[1] = vv[b].y; vd[2] = vv[b].z; vd[3] = vv[b].w;
            }
        }
        __syncthreads();
#pragma unroll 1
        for (int item = warp; item < 16; item += ATT_WARPS) {
            const int my_pos = Pos[item];
            if (my_pos < 0 || k0 > my_pos) continue;  // warp-uniform
            const float* q = Qs + item * hd;
            const int j = k0 + lane;
            float s = NEG_INF;
            if (j <= my_pos) {
                const u32* kr = reinterpret_cast<const u32*>(Ks + lane * ldk);
                s = 0.f;
                for (int d2 = 0; d2 < (hd >> 1); ++d2) {
                    const u32 w = kr[d2];
                    s = fmaf(q[2 * d2], bf16lo(w), s);
                    s = fmaf(q[2 * d2 + 1], bf16hi(w), s);
                }
            }
            const float m_old = Mx[item];
            const float m_new = fmaxf(m_old, warp_max(s));  // finite: lane 0's key is valid
            const float alpha = expf(m_old - m_new);
            const float p = s == NEG_INF ? 0.f : expf(s - m_new);
            Lp[item * 32 + lane] = Lp[item * 32 + lane] * alpha + p;
            float acc[DPL];
            float* a = Acc + item * hd;
#pragma unroll
            for (int dd = 0; dd < DPL; ++dd) acc[dd] = lane + 32 * dd < hd ? a[lane + 32 * dd] * alpha : 0.f;
            const int n_valid = min(KT, my_pos - k0 + 1);
            for (int jj = 0; jj < n_valid; ++jj) {
                const float pj = __shfl_sync(FULL_MASK, p, jj);
                const bf16_t* vr = Vs + jj * ldk;
#pragma unroll
                for (int dd = 0; dd < DPL; ++dd) {
                    const int d = lane + 32 * dd;
                    if (d < hd) acc[dd] = fmaf(pj, bf16_to_f32(vr[d]), acc[dd]);
                }
            }
#pragma unroll
            for (int dd = 0; dd < DPL; ++dd)
                if (lane + 32 * dd < hd) a[lane + 32 * dd] = acc[dd];
            __syncwarp();  // every lane has read Mx[item] before lane 0 moves it
            if (lane == 0) Mx[item] = m_new;
        }
    }
    __syncwarp();
#pragma unroll 1
    for (int item = warp; item < n_items; item += ATT_WARPS) {
        if (Pos[item] < 0) continue;
        const int t = t0 + item / G, h = kvh * G + item % G;
        const float inv = 1.f / warp_sum(Lp[item * 32 + lane]);
#pragma unroll
        for (int dd = 0; dd < DPL; ++dd) {
            const int d = lane + 32 * dd;
            if (d < hd) out[(size_t)t * H * hd + (size_t)h * hd + d] = Acc[item * hd + d] * inv;
        }
    }
}

// grid (ceil(T/BQ), KVH): one sequence's rows, the cache from `st` (see kv_store) or kc/vc/cap.
#define PREFILL_KERNEL(D, DPL)                                                                               \
    extern "C" __global__ void __launch_bounds__(128) attention_prefill_d##D(                               \
        const float* __restrict__ qkv, const int* __restrict__ positions, bf16_t* kc, bf16_t* vc,             \
        const DecodeState* __restrict__ st, float* __restrict__ out, int T, int H, int KVH, int hd, int cap,  \
        int layer, float scale, int BQ) {                                                                    \
        pdl_launch_dependents();                                                                             \
        pdl_wait();                                                                                          \
        cache_from_state(st, kc, vc, cap);                                                                   \
        const int t0 = blockIdx.x * BQ;                                                                      \
        attention_rows<DPL>(qkv, positions, kc, vc, out, t0, min(T, t0 + BQ), H, KVH, hd, cap, layer, scale,  \
                            BQ, ContiguousKeys{});                                                           \
    }

// grid (tiles, KVH): tile i is (first row, rows <= BQ, offset of its sequence's block table in
// `tables`), every row of a tile from the same sequence; the pool is [layers, KVH, slots, hd].
#define PAGED_KERNEL(D, DPL)                                                                                 \
    extern "C" __global__ void __launch_bounds__(128) attention_paged_d##D(                                 \
        const float* __restrict__ qkv, const int* __restrict__ positions, const int* __restrict__ tiles,       \
        const int* __restrict__ tables, const bf16_t* kc, const bf16_t* vc, float* __restrict__ out, int H,    \
        int KVH, int hd, int slots, int layer, int block_size, float scale, int BQ) {                         \
        pdl_launch_dependents();                                                                             \
        pdl_wait();                                                                                          \
        const int* tile = tiles + 3 * blockIdx.x;                                                            \
        const int t0 = tile[0];                                                                              \
        attention_rows<DPL>(qkv, positions, kc, vc, out, t0, t0 + tile[1], H, KVH, hd, slots, layer, scale,  \
                            BQ, PagedKeys{tables + tile[2], block_size});                                    \
    }

PREFILL_KERNEL(32, 1)
PREFILL_KERNEL(64, 2)
PREFILL_KERNEL(128, 4)
PREFILL_KERNEL(256, 8)
PAGED_KERNEL(32, 1)
PAGED_KERNEL(64, 2)
PAGED_KERNEL(128, 4)
PAGED_KERNEL(256, 8)

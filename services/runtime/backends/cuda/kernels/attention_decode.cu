// Decode attention for one token, fused: (q/k norm +) RoPE of q and of the new k (its cos/sin
// read from a rope table row: rope.cu rope_table), the k/v store, and attention split over the
// sequence. The position (and, in a decode graph, the cache pointers and capacity) are read
// from device memory, so one captured graph serves every step. Splits combine through a
// workspace: the last block to finish (atomic ticket) merges them in split order. Scores and
// softmax are fp32; q stays fp32.
#include "attention.cuh"

// ---- decode -------------------------------------------------------------------------------
// grid (n_splits, KVH, G), block 128: a block serves query head blockIdx.z of kv head
// blockIdx.y over one split of the keys, ATT_STAGE(D) keys at a time: the whole stage's K and V
// rows are loaded at once (16 16-byte loads per thread) into shared memory, so a stage costs
// one memory round trip; its 32-key tiles are shared out over the four warps (a lane per key
// for q.k, a lane per dimension for p.v), and the warps' partial softmaxes merge at the end.
// Dynamic smem: decode_smem_bytes(hd) (ops.py mirrors it). ws: KVH*G*n_splits*(2 + hd) floats;
// counters: KVH*G ints, zero at rest. With `st` non-null the position, the cache pointers and
// the capacity come from it (a decode graph: one graph serves every sequence); else from
// pos_ptr / kc / vc / cap.
//
// At batch 1 the kernel is bound by latency: the chain of memory round trips (the state, then
// the stage, then the split merge's), the serial work of each warp, and its code, fetched cold
// at every launch (the weights stream through L2 between two layers). So every warp takes its
// share of the keys, and no loop is unrolled beyond the loads that must be in flight together.
#define ATT_STAGE_ELEMS 8192  // K (and V) elements staged per round: ATT_STAGE(D) keys of D dims
#define ATT_STAGE(D) (ATT_STAGE_ELEMS / (D))
#define ATT_KPAD 8            // bf16 of padding per staged key row: 16-byte lane reads hit distinct banks

template <int D>
__device__ __forceinline__ void attention_decode_body(
    const float* __restrict__ qkv, const int* __restrict__ pos_ptr, bf16_t* kc, bf16_t* vc,
    const DecodeState* __restrict__ st, float* __restrict__ out, const w16_t* __restrict__ q_norm_w,
    const w16_t* __restrict__ k_norm_w, float* __restrict__ ws, int* __restrict__ counters,
    const float2* __restrict__ rope_cs, int H, int KVH, int hd, int cap, int layer, int rope_rows, float scale,
    float eps, int flags) {
    constexpr int DPL = D / 32, NF = (DPL + 1) / 2, STAGE = ATT_STAGE(D);
    constexpr int LOADS = 2 * ATT_STAGE_ELEMS / 8 / 128;  // 16-byte loads per thread per stage (K and V)
    extern __shared__ float4 smem4[];
    __shared__ int s_last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int ldk = D + ATT_KPAD;                      // staged key row stride (bf16)
    float* Qs = reinterpret_cast<float*>(smem4);       // [hd] the query head, normed + roped + scaled
    float* Knf = Qs + hd;                              // [hd] new k, fp32
    float* Vnf = Knf + hd;                             // [hd] new v, fp32
    float* Wacc = Vnf + hd;                            // [4][hd] each warp's p.v accumulator
    float* Wm = Wacc + ATT_WARPS * hd;                 // [4] each warp's running max
    float* Wl = Wm + ATT_WARPS;                        // [4] each warp's sum of p
    float* Ps = Wl + ATT_WARPS;                        // [4][32] each warp's tile of probabilities
    bf16_t* Ks = reinterpret_cast<bf16_t*>(Ps + ATT_WARPS * KT);  // [STAGE][D + KPAD]
    bf16_t* Vs = Ks + STAGE * ldk;                     // [STAGE][D]

    const int n_splits = gridDim.x, split = blockIdx.x, kvh = blockIdx.y;
    const int G = H / KVH, head = kvh * G + blockIdx.z;
    // Before pdl_wait(), overlapping the qkv projection: the position, the cache pointers, the
    // first stage of K/V rows and the RoPE row. None of it is written by this step's earlier
    // kernels: the DecodeState changes only in the previous step's sampler and rows < pos were
    // written by earlier steps, all finished before this step's graph launch began (stream
    // order); with pos_ptr, the positions come from a copy ordered before the launch.
    cache_from_state(st, kc, vc, cap);
    const int pos = st ? st->pos : *pos_ptr;
    if (pos < 0 || pos >= cap) return;  // the host keeps pos < cap
    const int len = pos + 1;
    int chunk = (len + n_splits - 1) / n_splits;
    chunk = max(STAGE, (chunk + KT - 1) / KT * KT);
    const int active = (len + chunk - 1) / chunk;
    if (split >= active) return;  // block-uniform; split 0 is always active
    const size_t head_base = ((size_t)layer * KVH + kvh) * cap * hd;
    const int start = split * chunk, end = min(len, start + chunk), nc = hd >> 3;
    // A stage: K and V rows [s0, s0 + STAGE), D columns each, every load issued before any is
    // used. A thread keeps one 16-byte column and takes every RSTEP-th row (LOADS/2 of each).
    // Rows before `pos` are complete; the row at `pos` is this step's (written below).
    constexpr int RSTEP = 128 / (D / 8);
    const int col = threadIdx.x % (D / 8), row0 = threadIdx.x / (D / 8);
    uint4 rk[LOADS / 2], rv[LOADS / 2];
    auto stage_load = [&](int s0) {
        const size_t at = head_base + (size_t)(s0 + row0) * hd + col * 8;
#pragma unroll
        for (int u = 0; u < LOADS / 2; ++u) {
            const int j = s0 + row0 + u * RSTEP;
            const bool ok = col < nc && j < end && j != pos;
            rk[u] = ok ? *reinterpret_cast<const uint4*>(kc + at + (size_t)u * RSTEP * hd) : make_uint4(0, 0, 0, 0);
            rv[u] = ok ? *reinterpret_cast<const uint4*>(vc + at + (size_t)u * RSTEP * hd) : make_uint4(0, 0, 0, 0);
        }
    };
    stage_load(start);
    // This lane's (cos, sin) pairs i = lane + 32 k from the table's row at `pos`: hd/2 <= 32 NF.
    float2 cs[NF];
    lane_table_cs(cs, rope_cs, pos, rope_rows, hd, flags);
    pdl_launch_dependents();
    pdl_wait();
    // The block's query head and its kv head's new k and v (this step's qkv projection).
    const int stride_k = H * hd, stride_v = (H + KVH) * hd;
    for (int idx = threadIdx.x; idx < 3 * hd; idx += blockDim.x) {  // q, k, v: Qs, Knf, Vnf are contiguous
        const int item = idx / hd, d = idx - item * hd;
        const size_t c = item == 0 ? (size_t)head * hd : (size_t)(item == 1 ? stride_k : stride_v) + (size_t)kvh * hd;
        Qs[idx] = qkv[c + d];
    }
    __syncthreads();
    if (warp < 2)  // in place: warp 0 the query head (scaled), warp 1 the new k
        warp_norm_rope_cs(warp == 0 ? Qs : Knf, warp == 0 ? Qs : Knf, warp == 0 ? q_norm_w : k_norm_w, hd, cs, eps,
                          flags, warp == 0 ? scale : 1.f);

    const float* q = Qs;
    float* P = Ps + warp * KT;
    float m = NEG_INF, l = 0.f, acc[DPL];
#pragma unroll
    for (int dd = 0; dd < DPL; ++dd) acc[dd] = 0.f;
#pragma unroll 1
    for (int s0 = start; s0 < end; s0 += STAGE) {
#pragma unroll
        for (int u = 0; u < LOADS / 2; ++u) {
            *reinterpret_cast<uint4*>(Ks + (row0 + u * RSTEP) * ldk + col * 8) = rk[u];
            *reinterpret_cast<uint4*>(Vs + (row0 + u * RSTEP) * D + col * 8) = rv[u];
        }
        __syncthreads();
        // This step's k and v, as stored: into the cache (one writer) and into the stage holding pos.
        const bool writer = s0 == start && split == 0 && blockIdx.z == 0;
        if (writer || (pos >= s0 && pos < s0 + STAGE)) {
            for (int d = threadIdx.x; d < hd; d += blockDim.x) {
                const bf16_t kb = f32_to_bf16(Knf[d]), vb = f32_to_bf16(Vnf[d]);
                if (writer) {
                    kc[head_base + (size_t)pos * hd + d] = kb;
                    vc[head_base + (size_t)pos * hd + d] = vb;
                }
                if (pos >= s0 && pos < s0 + STAGE) {
                    Ks[(pos - s0) * ldk + d] = kb;
                    Vs[(pos - s0) * D + d] = vb;
                }
            }
            __syncthreads();
        }
        if (s0 + STAGE < end) stage_load(s0 + STAGE);  // long contexts: the next stage is in flight meanwhile
        const int s_end = min(end, s0 + STAGE);
#pragma unroll 1
        for (int k0 = s0 + warp * KT; k0 < s_end; k0 += ATT_WARPS * KT) {  // this warp's tiles
            const int j = k0 + lane;
            float s = NEG_INF;
            if (j < s_end) {
                const uint4* kr = reinterpret_cast<const uint4*>(Ks + (j - s0) * ldk);
                s = 0.f;
#pragma unroll 4
                for (int c = 0; c < D / 8; ++c)  // a fixed trip count: no remainder loop in the code
                    if (c < nc) s += dot8(kr[c], q + c * 8);
            }
            const float m_new = fmaxf(m, warp_max(s));  // finite: lane 0's key is valid
            const float alpha = expf(m - m_new);
            const float p = j < s_end ? expf(s - m_new) : 0.f;
            l = l * alpha + p;
#pragma unroll
            for (int dd = 0; dd < DPL; ++dd) acc[dd] *= alpha;
            m = m_new;
            P[lane] = p;
            __syncwarp();
            const bf16_t* vt = Vs + (k0 - s0) * D;
            // Keys in order, all KT of the tile: past s_end p is 0 and the staged rows are 0.
#pragma unroll 8
            for (int jj = 0; jj < KT; ++jj) {
                const float pj = P[jj];
#pragma unroll
                for (int dd = 0; dd < DPL; ++dd) {
                    const int d = lane + 32 * dd;
                    if (d < hd) acc[dd] = fmaf(pj, bf16_to_f32(vt[jj * D + d]), acc[dd]);
                }
            }
            __syncwarp();
        }
        __syncthreads();  // the stage is consumed before the next one overwrites it
    }

    // The four warps' partial softmaxes, merged in warp order (a warp that saw no key has
    // m = -inf, l = 0), into the output or this split's record in ws: m, l, acc[hd].
    {
        const float lw = warp_sum(l);
        if (lane == 0) { Wm[warp] = m; Wl[warp] = lw; }
#pragma unroll
        for (int dd = 0; dd < DPL; ++dd)
            if (lane + 32 * dd < hd) Wacc[warp * hd + lane + 32 * dd] = acc[dd];
    }
    __syncthreads();
    const int rec = 2 + hd;
    float* my_rec = ws + ((size_t)head * n_splits + split) * rec;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float M = NEG_INF;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) M = fmaxf(M, Wm[w]);
        float L = 0.f, O = 0.f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; ++w) {
            const float a = Wm[w] == NEG_INF ? 0.f : expf(Wm[w] - M);
            L += a * Wl[w];
            O += a * Wacc[w * hd + d];
        }
        if (active == 1) {
            out[(size_t)head * hd + d] = O / L;
        } else {
            if (d == 0) { my_rec[0] = M; my_rec[1] = L; }
            my_rec[2 + d] = O;
        }
    }
    if (active == 1) return;

    // Last block to arrive merges every split's record (fixed order: deterministic).
    __threadfence();
    __syncthreads();
    int* counter = counters + head;
    if (threadIdx.x == 0) s_last = atomicAdd(counter, 1) == active - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    // MB splits' records are loaded before the first is used, so the merge waits on two round
    // trips per MB splits rather than three per split; the sums still run in split order.
    constexpr int MB = 4;
    const float* recs = ws + (size_t)head * n_splits * rec;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float M = NEG_INF;
#pragma unroll 1
        for (int s0 = 0; s0 < active; s0 += MB) {
            float mv[MB];
#pragma unroll
            for (int b = 0; b < MB; ++b) mv[b] = s0 + b < active ? ld_cg_f32(recs + (size_t)(s0 + b) * rec) : NEG_INF;
#pragma unroll
            for (int b = 0; b < MB; ++b) M = fmaxf(M, mv[b]);
        }
        float L = 0.f, O = 0.f;
#pragma unroll 1
        for (int s0 = 0; s0 < active; s0 += MB) {
            float mv[MB], lv[MB], ov[MB];
#pragma unroll
            for (int b = 0; b < MB; ++b) {
                const float* rp = recs + (size_t)(s0 + b < active ? s0 + b : 0) * rec;
                mv[b] = ld_cg_f32(rp);
                lv[b] = ld_cg_f32(rp + 1);
                ov[b] = ld_cg_f32(rp + 2 + d);
            }
#pragma unroll
            for (int b = 0; b < MB; ++b) {
                if (s0 + b >= active) break;
                const float a = expf(mv[b] - M);  // every active split saw >= 1 key: finite
                L += a * lv[b];
                O += a * ov[b];
            }
        }
        out[(size_t)head * hd + d] = O / L;
    }
    if (threadIdx.x == 0) *counter = 0;  // ready for the next layer / step
}

#define DECODE_KERNEL(D)                                                                                \
    extern "C" __global__ void __launch_bounds__(128) WNAME(attention_decode_d##D)(                         \
        const float* __restrict__ qkv, const int* __restrict__ pos_ptr, bf16_t* kc, bf16_t* vc,               \
        const DecodeState* __restrict__ st, float* __restrict__ out, const w16_t* __restrict__ q_norm_w,      \
        const w16_t* __restrict__ k_norm_w, float* __restrict__ ws, int* __restrict__ counters,              \
        const float2* __restrict__ rope_cs, int H, int KVH, int hd, int cap, int layer, int rope_rows,        \
        float scale, float eps, int flags) {                                                                  \
        attention_decode_body<D>(qkv, pos_ptr, kc, vc, st, out, q_norm_w, k_norm_w, ws, counters, rope_cs,  \
                                   H, KVH, hd, cap, layer, rope_rows, scale, eps, flags);                    \
    }

DECODE_KERNEL(32)
DECODE_KERNEL(64)
DECODE_KERNEL(128)
DECODE_KERNEL(256)

// Decode attention for one token, fused: (q/k norm +) RoPE of q and of the new k, the k/v
// store, and attention split over the sequence. The position (and, in a decode graph, the
// cache pointers and capacity) are read from device memory, so one captured graph serves
// every step. Splits combine through a workspace: the last block to finish (atomic ticket)
// merges them in split order. Scores and softmax are fp32; q stays fp32.
#include "attention.cuh"

// ---- decode -------------------------------------------------------------------------------
// grid (n_splits, KVH, ceil(G/ATT_MAXG)), block 128: warp w serves query head g0 + w of kv head
// blockIdx.y over the split's keys, 32 at a time (a lane per key for q.k, a lane per dimension
// for p.v). Dynamic smem: 4*(ATT_MAXG*hd + 3*hd) bytes.
// ws: KVH*gridDim.z*n_splits*(2*ATT_MAXG + ATT_MAXG*hd) floats; counters: KVH*gridDim.z ints,
// zero at rest. With `st` non-null the position, the cache pointers and the capacity come from
// it (a decode graph: one graph serves every sequence); else from pos_ptr / kc / vc / cap.
//
// At batch 1 this kernel is latency bound and its code is fetched cold on every launch (the
// weights stream through L2 between two layers), so its length is time: no loop over heads is
// unrolled (a warp has one head), and only the loads that must be in flight together are.
template <int DPL>
__device__ __forceinline__ void attention_decode_body(
    const float* __restrict__ qkv, const int* __restrict__ pos_ptr, bf16_t* kc, bf16_t* vc,
    const DecodeState* __restrict__ st, float* __restrict__ out, const w16_t* __restrict__ q_norm_w,
    const w16_t* __restrict__ k_norm_w, float* __restrict__ ws, int* __restrict__ counters, int H, int KVH, int hd,
    int cap, int layer, float scale, float theta, float eps, int flags) {
    extern __shared__ float4 smem4[];
    __shared__ int s_last;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float* Qs = reinterpret_cast<float*>(smem4);  // [MAXG][hd], normed + roped + scaled
    float* Knf = Qs + ATT_MAXG * hd;              // [hd] new k, fp32
    float* Vnf = Knf + hd;                        // [hd] new v, fp32
    bf16_t* Knb = reinterpret_cast<bf16_t*>(Vnf + hd);  // [hd] new k as stored (16B aligned)
    bf16_t* Vnb = Knb + hd;

    float inv_freq[(DPL + 1) / 2];  // this lane's RoPE frequencies: hd <= 32 DPL, so hd/2 <= 32 (DPL+1)/2
    lane_inv_freqs(inv_freq, hd, theta, flags);
    pdl_launch_dependents();
    pdl_wait();
    const int n_splits = gridDim.x, split = blockIdx.x, kvh = blockIdx.y;
    const int G = H / KVH, g0 = blockIdx.z * ATT_MAXG, Gb = min(ATT_MAXG, G - g0);
    const int stride_k = H * hd, stride_v = (H + KVH) * hd;
    cache_from_state(st, kc, vc, cap);
    const int pos = st ? st->pos : *pos_ptr;
    // The block's q heads and its kv head's new k and v, staged raw before `pos` is used, so
    // these loads are in flight together with the state's instead of after them.
    for (int idx = threadIdx.x; idx < (Gb + 2) * hd; idx += blockDim.x) {
        const int item = idx / hd, d = idx - item * hd;
        const size_t col = item < Gb ? (size_t)(kvh * G + g0 + item) * hd
                                     : (size_t)(item == Gb ? stride_k : stride_v) + (size_t)kvh * hd;
        (item < Gb ? Qs + item * hd : item == Gb ? Knf : Vnf)[d] = qkv[col + d];
    }
    if (pos < 0 || pos >= cap) return;  // the host keeps pos < cap
    const int len = pos + 1;
    int chunk = (len + n_splits - 1) / n_splits;
    chunk = max(ATT_SPLIT_KEYS, (chunk + KT - 1) / KT * KT);
    const int active = (len + chunk - 1) / chunk;
    if (split >= active) return;  // block-uniform; split 0 is always active
    constexpr int KB = 4 * DPL < 8 ? 4 * DPL : 8;  // 16-byte chunks of a key row in flight (hd <= 32*DPL)
    constexpr int VB = 32 / DPL < 4 ? 4 : 32 / DPL;  // value rows in flight: 32 registers of them
    const size_t head_base = ((size_t)layer * KVH + kvh) * cap * hd;
    const bf16_t* kbase = kc + head_base;
    const bf16_t* vbase = vc + head_base;
    const int start = split * chunk, end = min(len, start + chunk), nc = hd >> 3;
    // The first tile's key (one per lane; every warp reads the same keys) is fetched now, so its
    // latency overlaps the norm and RoPE below. Rows before `pos` are complete; the row at `pos`
    // is this step's and is read from shared memory (no block reads a row another is writing).
    const int j_first = start + lane;
    const bool pre_ok = j_first < end && j_first != pos;
    uint4 kpre[KB];
#pragma unroll
    for (int b = 0; b < KB; ++b)
        kpre[b] = pre_ok && b < nc ? reinterpret_cast<const uint4*>(kbase + (size_t)j_first * hd)[b]
                                   : make_uint4(0, 0, 0, 0);
    __syncthreads();  // the staged rows
    for (int item = warp; item <= Gb; item += ATT_WARPS) {  // in place: q heads (scaled), then the new k
        float* row = item < Gb ? Qs + item * hd : Knf;
        warp_norm_rope(row, row, item < Gb ? q_norm_w : k_norm_w, pos, hd, inv_freq, eps, flags,
                       item < Gb ? scale : 1.f);
    }
    __syncthreads();
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        Knb[d] = f32_to_bf16(Knf[d]);
        Vnb[d] = f32_to_bf16(Vnf[d]);
        if (split == 0 && blockIdx.z == 0) {  // the one writer of this step's k/v
            kc[head_base + (size_t)pos * hd + d] = Knb[d];
            vc[head_base + (size_t)pos * hd + d] = Vnb[d];
        }
    }
    __syncthreads();

    const int rec = 2 * ATT_MAXG + ATT_MAXG * hd;  // one split's record in ws: m[G] l[G] acc[G][hd]
    float* my_rec = ws + ((size_t)(kvh * gridDim.z + blockIdx.z) * n_splits + split) * rec;
    if (warp < Gb) {  // warp-uniform: this warp's head
        const float* q = Qs + warp * hd;
        float m = NEG_INF, l = 0.f, acc[DPL];
#pragma unroll
        for (int dd = 0; dd < DPL; ++dd) acc[dd] = 0.f;
        bool first = true;
#pragma unroll 1
        for (int k0 = start; k0 < end; k0 += KT, first = false) {
            const int j = k0 + lane;
            float s = NEG_INF;
            if (j < end) {
                // The key at `pos` is this step's, read from shared memory. KB chunks of the row
                // are loaded before the first is used (the first tile's were fetched above).
                const uint4* kr = reinterpret_cast<const uint4*>(j == pos ? Knb : kbase + (size_t)j * hd);
                s = 0.f;
#pragma unroll 1
                for (int c0 = 0; c0 < nc; c0 += KB) {
                    const bool fetched = first && c0 == 0 && j != pos;
                    uint4 w[KB];
#pragma unroll
                    for (int b = 0; b < KB; ++b)
                        w[b] = fetched ? kpre[b] : c0 + b < nc ? kr[c0 + b] : make_uint4(0, 0, 0, 0);
#pragma unroll
                    for (int b = 0; b < KB; ++b)
                        if (c0 + b < nc) s += dot8(w[b], q + (c0 + b) * 8);
                }
            }
            const float m_new = fmaxf(m, warp_max(s));  // finite: lane 0's key is valid
            const float alpha = expf(m - m_new);
            const float p = j < end ? expf(s - m_new) : 0.f;
            l = l * alpha + p;
#pragma unroll
            for (int dd = 0; dd < DPL; ++dd) acc[dd] *= alpha;
            m = m_new;
            // P.V: VB value rows are loaded before the first is used (one dependent load per key
            // would put 32 memory latencies in a row); keys are still added in order.
            const int n_valid = min(KT, end - k0);
#pragma unroll 1
            for (int j0 = 0; j0 < n_valid; j0 += VB) {
                float v[VB][DPL];
#pragma unroll
                for (int b = 0; b < VB; ++b) {
                    const int jp = k0 + j0 + b;
                    const bool ok = j0 + b < n_valid;
                    const bf16_t* vr = jp == pos ? Vnb : vbase + (size_t)(ok ? jp : k0) * hd;
#pragma unroll
                    for (int dd = 0; dd < DPL; ++dd) {
                        const int d = lane + 32 * dd;
                        v[b][dd] = ok && d < hd ? bf16_to_f32(vr[d]) : 0.f;
                    }
                }
#pragma unroll
                for (int b = 0; b < VB; ++b) {
                    if (j0 + b >= n_valid) break;  // warp-uniform
                    const float pj = __shfl_sync(FULL_MASK, p, j0 + b);
#pragma unroll
                    for (int dd = 0; dd < DPL; ++dd) acc[dd] = fmaf(pj, v[b][dd], acc[dd]);
                }
            }
        }
        const float L = warp_sum(l);
        if (active == 1) {
            float* o = out + (size_t)(kvh * G + g0 + warp) * hd;
#pragma unroll
            for (int dd = 0; dd < DPL; ++dd)
                if (lane + 32 * dd < hd) o[lane + 32 * dd] = acc[dd] / L;
        } else {
            if (lane == 0) {
                my_rec[warp] = m;
                my_rec[ATT_MAXG + warp] = L;
            }
#pragma unroll
            for (int dd = 0; dd < DPL; ++dd)
                if (lane + 32 * dd < hd) my_rec[2 * ATT_MAXG + warp * hd + lane + 32 * dd] = acc[dd];
        }
    }
    if (active == 1) return;

    // Last block to arrive merges every split's record (fixed order: deterministic).
    __threadfence();
    __syncthreads();
    int* counter = counters + kvh * gridDim.z + blockIdx.z;
    if (threadIdx.x == 0) s_last = atomicAdd(counter, 1) == active - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    // MB splits' records are loaded before the first is used, so the merge waits on two round
    // trips per MB splits rather than three per split; the sums still run in split order.
    constexpr int MB = 4;
    const float* recs = ws + (size_t)(kvh * gridDim.z + blockIdx.z) * n_splits * rec;
    for (int idx = threadIdx.x; idx < Gb * hd; idx += blockDim.x) {
        const int g = idx / hd, d = idx - g * hd;
        float M = NEG_INF;
#pragma unroll 1
        for (int s0 = 0; s0 < active; s0 += MB) {
            float mv[MB];
#pragma unroll
            for (int b = 0; b < MB; ++b)
                mv[b] = s0 + b < active ? ld_cg_f32(recs + (size_t)(s0 + b) * rec + g) : NEG_INF;
#pragma unroll
            for (int b = 0; b < MB; ++b) M = fmaxf(M, mv[b]);
        }
        float L = 0.f, O = 0.f;
#pragma unroll 1
        for (int s0 = 0; s0 < active; s0 += MB) {
            float mv[MB], lv[MB], ov[MB];
#pragma unroll
            for (int b = 0; b < MB; ++b) {
                const float* r = recs + (size_t)(s0 + b < active ? s0 + b : 0) * rec;
                mv[b] = ld_cg_f32(r + g);
                lv[b] = ld_cg_f32(r + ATT_MAXG + g);
                ov[b] = ld_cg_f32(r + 2 * ATT_MAXG + g * hd + d);
            }
#pragma unroll
            for (int b = 0; b < MB; ++b) {
                if (s0 + b >= active) break;
                const float a = expf(mv[b] - M);  // every active split saw >= 1 key: finite
                L += a * lv[b];
                O += a * ov[b];
            }
        }
        out[(size_t)(kvh * G + g0 + g) * hd + d] = O / L;
    }
    if (threadIdx.x == 0) *counter = 0;  // ready for the next layer / step
}

#define DECODE_KERNEL(D, DPL)                                                                                \
    extern "C" __global__ void __launch_bounds__(128) WNAME(attention_decode_d##D)(                         \
        const float* __restrict__ qkv, const int* __restrict__ pos_ptr, bf16_t* kc, bf16_t* vc,               \
        const DecodeState* __restrict__ st, float* __restrict__ out, const w16_t* __restrict__ q_norm_w,      \
        const w16_t* __restrict__ k_norm_w, float* __restrict__ ws, int* __restrict__ counters, int H,       \
        int KVH, int hd, int cap, int layer, float scale, float theta, float eps, int flags) {                \
        attention_decode_body<DPL>(qkv, pos_ptr, kc, vc, st, out, q_norm_w, k_norm_w, ws, counters, H, KVH,   \
                                   hd, cap, layer, scale, theta, eps, flags);                                \
    }

DECODE_KERNEL(32, 1)
DECODE_KERNEL(64, 2)
DECODE_KERNEL(128, 4)
DECODE_KERNEL(256, 8)

// Sampling on the GPU, with the uncertainty statistics of the same step.
//
//   sample_reduce     many blocks, one pass over the logits: max, partition function Z,
//                     S = sum e^(l-M) (l-M) (-> entropy = log Z - S/Z), top-1/top-2, and the
//                     Gumbel-max draw argmax(l/T + g_i) that samples softmax(l/T) exactly.
//                     Partials merge in the last block (atomic ticket, fixed order). It finishes
//                     greedy and plain-temperature steps by itself.
//   sample_truncated  one block, only when top-k or top-p is on: radix-selects the top-k
//                     threshold and then the top-p threshold (byte by byte from the most
//                     significant, histograms in shared memory), then Gumbel-max over the rest.
// Parameters and the RNG counter are read from DecodeState in device memory; the RNG is a
// counter-based hash of (seed, step, token id), so a step is reproducible and graph-safe.
// Several rows at once (the batching core's step): blockIdx.y is the row, with its own
// logits row, DecodeState, partial records and ticket, so each row's pass is the one-row pass.
#include "common.cuh"

#define SAMPLE_BATCH 8  // logits loaded per thread before sample_reduce uses the first

struct SampleStats {  // 8 words; mirrored in ops.py (SAMPLE_STATS_BYTES)
    float m, z, s, top1, top2, gkey;
    int top1_idx, gidx;
};
static_assert(sizeof(SampleStats) == 32, "SAMPLE_STATS_BYTES in state.py");

__device__ __forceinline__ u64 splitmix64(u64 x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
__device__ __forceinline__ float gumbel(u64 seed, u32 step, u32 i) {
    const u64 h = splitmix64(seed ^ splitmix64(((u64)step << 32) | i));
    const float u = ((float)(h >> 40) + 0.5f) * (1.f / 16777216.f);  // in (0, 1)
    return -logf(-logf(u));
}
__device__ __forceinline__ bool better(float v, int i, float w, int j) { return v > w || (v == w && i < j); }
__device__ __forceinline__ u32 order_key(float f) {  // monotone: larger float -> larger key
    const u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ void stats_init(SampleStats& a) {
    a.m = NEG_INF; a.z = 0.f; a.s = 0.f; a.top1 = NEG_INF; a.top2 = NEG_INF; a.gkey = NEG_INF;
    a.top1_idx = 0x7fffffff; a.gidx = 0x7fffffff;
}
__device__ __forceinline__ void stats_add(SampleStats& a, float l, int i, float gk) {
    if (!(l > NEG_INF)) return;  // -inf (masked) and NaN
    if (l > a.m) {
        if (a.z > 0.f) {
            const float f = expf(a.m - l);
            a.s = f * (a.s + (a.m - l) * a.z);
            a.z = a.z * f + 1.f;
        } else {
            a.s = 0.f;
            a.z = 1.f;
        }
        a.m = l;
    } else {
        const float e = expf(l - a.m);
        a.z += e;
        a.s += e * (l - a.m);
    }
    if (better(l, i, a.top1, a.top1_idx)) { a.top2 = a.top1; a.top1 = l; a.top1_idx = i; }
    else if (l > a.top2) a.top2 = l;
    if (better(gk, i, a.gkey, a.gidx)) { a.gkey = gk; a.gidx = i; }
}
__device__ __forceinline__ void stats_merge(SampleStats& a, const SampleStats& b) {
    const float M = fmaxf(a.m, b.m);
    if (M > NEG_INF) {
        const float fa = a.z > 0.f ? expf(a.m - M) : 0.f, fb = b.z > 0.f ? expf(b.m - M) : 0.f;
        const float sa = a.z > 0.f ? fa * (a.s + (a.m - M) * a.z) : 0.f;
        const float sb = b.z > 0.f ? fb * (b.s + (b.m - M) * b.z) : 0.f;
        a.z = a.z * fa + b.z * fb;
        a.s = sa + sb;
        a.m = M;
    }
    if (better(b.top1, b.top1_idx, a.top1, a.top1_idx)) {
        a.top2 = fmaxf(a.top1, b.top2);
        a.top1 = b.top1;
        a.top1_idx = b.top1_idx;
    } else {
        a.top2 = fmaxf(a.top2, b.top1);
    }
    if (better(b.gkey, b.gidx, a.gkey, a.gidx)) { a.gkey = b.gkey; a.gidx = b.gidx; }
}
__device__ __forceinline__ SampleStats stats_shfl_xor(const SampleStats& a, int o) {
    SampleStats b;
    b.m = __shfl_xor_sync(FULL_MASK, a.m, o);
    b.z = __shfl_xor_sync(FULL_MASK, a.z, o);
    b.s = __shfl_xor_sync(FULL_MASK, a.s, o);
    b.top1 = __shfl_xor_sync(FULL_MASK, a.top1, o);
    b.top2 = __shfl_xor_sync(FULL_MASK, a.top2, o);
    b.gkey = __shfl_xor_sync(FULL_MASK, a.gkey, o);
    b.top1_idx = __shfl_xor_sync(FULL_MASK, a.top1_idx, o);
    b.gidx = __shfl_xor_sync(FULL_MASK, a.gidx, o);
    return b;
}
// Butterfly over the warp: stats_merge gives both partners the same result (its max and
// top-2 are order-free, its sums commutative), so every lane ends with the warp's stats.
// Not unrolled, and below called from loops, so the merge is in the code once: at batch 1
// each launch fetches its code cold (the weights stream through L2 between launches), so
// the code executed costs time.
__device__ __forceinline__ void stats_warp_reduce(SampleStats& a) {
#pragma unroll 1
    for (int o = 16; o > 0; o >>= 1) {
        const SampleStats b = stats_shfl_xor(a, o);
        stats_merge(a, b);
    }
}
// The whole block's stats, in thread 0: warps by shuffles, then the warps' results by warp 0
// (one barrier instead of one per tree level). sh holds >= 32 records. Both levels run the
// same stats_warp_reduce from one loop.
__device__ __forceinline__ SampleStats stats_block_reduce(SampleStats a, SampleStats* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll 1
    for (int level = 0;; ++level) {
        stats_warp_reduce(a);
        if (level == 1) break;
        if (lane == 0) sh[warp] = a;
        __syncthreads();
        if (warp != 0) break;
        if (lane < nw) a = sh[lane];
        else stats_init(a);
    }
    return a;
}
__device__ __forceinline__ bool truncating(const DecodeState* st, int V) {
    return st->temperature > 0.f && ((st->top_k > 0 && st->top_k < V) || st->top_p < 1.f);
}
__device__ __forceinline__ void finish(DecodeState* st, int token, float logit, float M, float z) {
    st->token = token;
    st->logprob = (logit - M) - logf(z);
    if (st->flags & 1) { st->pos += 1; st->rng_step += 1; }
}

// grid (NB <= 256, rows), block 256. part: NB + 1 records per row (the last one receives the
// merged stats); st, counter: one per row.
extern "C" __global__ void __launch_bounds__(256) sample_reduce(const float* __restrict__ logits, int V,
                                                                DecodeState* st, SampleStats* part, int* counter) {
    __shared__ SampleStats sh[32];
    __shared__ int s_last;
    logits += (size_t)blockIdx.y * V;
    st += blockIdx.y;
    part += (size_t)blockIdx.y * (gridDim.x + 1);
    counter += blockIdx.y;
    pdl_launch_dependents();
    pdl_wait();
    const float T = st->temperature;
    const bool gumbel_here = T > 0.f && !truncating(st, V);
    const u64 seed = ((u64)st->seed_hi << 32) | st->seed_lo;
    const u32 step = st->rng_step;
    SampleStats a;
    stats_init(a);
    // SAMPLE_BATCH logits in flight per thread before the first is used (one dependent load
    // per logit would queue their latencies); still added in index order, by one stats_add
    // that the batch shifts through (unrolled, the adds were most of the kernel's code).
    const int stride = gridDim.x * blockDim.x;
    for (int base = blockIdx.x * blockDim.x + threadIdx.x; base < V; base += SAMPLE_BATCH * stride) {
        float l[SAMPLE_BATCH];
#pragma unroll
        for (int b = 0; b < SAMPLE_BATCH; ++b) {
            const int i = base + b * stride;
            l[b] = i < V ? logits[i] : 0.f;
        }
#pragma unroll 1
        for (int b = 0, i = base; b < SAMPLE_BATCH && i < V; ++b, i += stride) {
            float gk = NEG_INF;
            if (gumbel_here) gk = l[0] / T + gumbel(seed, step, (u32)i);  // greedy skips the hash
            stats_add(a, l[0], i, gk);
#pragma unroll
            for (int c = 0; c + 1 < SAMPLE_BATCH; ++c) l[c] = l[c + 1];
        }
    }
    // Two rounds of one block reduction (a loop, so its code is fetched once): this block's
    // threads, then, in the last block to finish, every block's record.
#pragma unroll 1
    for (int round = 0;; ++round) {
        a = stats_block_reduce(a, sh);
        if (round == 1) break;
        if (threadIdx.x == 0) part[blockIdx.x] = a;
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0) s_last = atomicAdd(counter, 1) == (int)gridDim.x - 1;
        __syncthreads();
        if (!s_last) return;
        __threadfence();
        stats_init(a);
        if ((int)threadIdx.x < (int)gridDim.x) {  // other blocks' records: read past L1
            const volatile SampleStats* p = part + threadIdx.x;
            a.m = p->m; a.z = p->z; a.s = p->s; a.top1 = p->top1; a.top2 = p->top2; a.gkey = p->gkey;
            a.top1_idx = p->top1_idx; a.gidx = p->gidx;
        }
        __syncthreads();  // sh is reused: the first reduction's reads are done
    }
    if (threadIdx.x != 0) return;
    const SampleStats& f = a;
    part[gridDim.x] = f;
    *counter = 0;
    st->entropy = logf(f.z) - f.s / f.z;
    st->margin = (1.f - expf(f.top2 - f.m)) / f.z;  // p1 = e^(top1-M)/Z = 1/Z
    if (T > 0.f && !gumbel_here) return;  // sample_truncated draws the token
    int token = gumbel_here ? f.gidx : f.top1_idx;  // else greedy (T <= 0)
    if (token >= V) token = 0;  // no finite logit (all masked): index 0, as numpy's argmax; no read past V
    finish(st, token, gumbel_here ? logits[token] : f.top1, f.m, f.z);
}

// Radix select over order keys, one byte per pass from the top. Without by_mass it finds the
// k-th largest key among keys >= floor; with it, it finds the top-p cut: the smallest key whose
// strictly-greater mass stays below `target` (ties at the cut are all kept). Not inlined: with
// top-k and top-p both on, the two cuts run one copy of the code.
__device__ __attribute__((noinline)) u32 radix_cut(const float* __restrict__ logits, int V, u32 floor_key, int k,
                                                   float target, bool by_mass, float M, float T, unsigned* hist,
                                                   float* hmass, u32* s_prefix, float* s_above, int* s_k) {
    u32 prefix = 0, mask = 0;
    if (threadIdx.x == 0) { *s_above = 0.f; *s_k = k; }
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) { hist[b] = 0; hmass[b] = 0.f; }
        __syncthreads();
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            const float l = logits[i];
            const u32 key = order_key(l);
            if (key < floor_key || (key & mask) != prefix) continue;
            const int b = (key >> shift) & 255;
            if (by_mass) atomicAdd(&hmass[b], expf((l - M) / T));
            else atomicAdd(&hist[b], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int chosen = -1, last_nonempty = 0;
            if (by_mass) {
                float cum = *s_above;
                for (int b = 255; b >= 0; --b) {
                    if (hmass[b] > 0.f) last_nonempty = b;
                    if (hmass[b] > 0.f && cum + hmass[b] >= target) { chosen = b; break; }
                    cum += hmass[b];
                }
                if (chosen < 0) {  // rounding left target above the total: cut at the lowest bin
                    chosen = last_nonempty;
                    cum -= hmass[chosen];
                }
                *s_above = cum;
            } else {
                unsigned cum = 0;
                for (int b = 255; b >= 0; --b) {
                    if (hist[b] > 0) last_nonempty = b;
                    if (hist[b] > 0 && cum + hist[b] >= (unsigned)*s_k) { chosen = b; break; }
                    cum += hist[b];
                }
                if (chosen < 0) chosen = last_nonempty;
                *s_k -= (int)cum;
            }
            *s_prefix = prefix | ((u32)chosen << shift);
        }
        __syncthreads();
        prefix = *s_prefix;
        mask |= 255u << shift;
        __syncthreads();
    }
    return prefix;
}

// grid (1, rows), block 1024. final_stats: row 0's merged record written by sample_reduce, the
// next row's `stats_stride` records on.
extern "C" __global__ void __launch_bounds__(1024) sample_truncated(const float* __restrict__ logits, int V,
                                                                   DecodeState* st, const SampleStats* final_stats,
                                                                   int stats_stride) {
    __shared__ unsigned hist[256];
    __shared__ float hmass[256];
    __shared__ u32 s_prefix;
    __shared__ float s_above, scratch[32];
    __shared__ int s_k;
    __shared__ float s_best[32];
    __shared__ int s_best_i[32];
    logits += (size_t)blockIdx.y * V;
    st += blockIdx.y;
    final_stats += (size_t)blockIdx.y * stats_stride;
    pdl_launch_dependents();
    pdl_wait();
    if (!truncating(st, V)) return;
    const float T = st->temperature, M = final_stats->m, z = final_stats->z;
    const int top_k = st->top_k;
    const float top_p = st->top_p;
    u32 floor_key = 0;
    if (top_k > 0 && top_k < V)
        floor_key = radix_cut(logits, V, 0, top_k, 0.f, false, M, T, hist, hmass, &s_prefix, &s_above, &s_k);
    if (top_p < 1.f) {
        float zt = 0.f;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            const float l = logits[i];
            if (order_key(l) >= floor_key && l > NEG_INF) zt += expf((l - M) / T);
        }
        zt = block_sum(zt, scratch);
        floor_key = radix_cut(logits, V, floor_key, 0, top_p * zt, true, M, T, hist, hmass, &s_prefix, &s_above, &s_k);
    }
    const u64 seed = ((u64)st->seed_hi << 32) | st->seed_lo;
    const u32 step = st->rng_step;
    float best = NEG_INF;
    int best_i = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float l = logits[i];
        if (order_key(l) < floor_key || !(l > NEG_INF)) continue;
        const float gk = l / T + gumbel(seed, step, (u32)i);
        if (better(gk, i, best, best_i)) { best = gk; best_i = i; }
    }
    // Warps by shuffles, then warp 0 over the warps' bests with the same loop: better() is a
    // total order here (no key is NaN), so the winner does not depend on the merge order.
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll 1
    for (int level = 0;; ++level) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ob = __shfl_xor_sync(FULL_MASK, best, o);
            const int oi = __shfl_xor_sync(FULL_MASK, best_i, o);
            if (better(ob, oi, best, best_i)) { best = ob; best_i = oi; }
        }
        if (level == 1) break;
        if (lane == 0) { s_best[warp] = best; s_best_i[warp] = best_i; }
        __syncthreads();
        if (warp != 0) return;
        best = lane < nw ? s_best[lane] : NEG_INF;
        best_i = lane < nw ? s_best_i[lane] : 0x7fffffff;
    }
    if (threadIdx.x != 0) return;
    if (best_i >= V) best_i = 0;  // no finite logit (all masked): index 0, as sample_reduce
    finish(st, best_i, logits[best_i], M, z);
}

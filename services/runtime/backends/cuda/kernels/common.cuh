// Shared helpers for every kernel file. Self-contained on purpose: no CUDA headers, so
// NVRTC needs nothing but libnvrtc (the pip wheels ship cuda_bf16.h but not crt/mma.h).
//
// Storage: weights are bf16, or fp16 where the model is fp16 (raw 16-bit words, `w16_t`);
// the KV cache is bf16 (`bf16_t`); activations are fp32 (batch 1 makes them tiny, and fp32
// keeps parity with the numpy reference); all accumulation is fp32.
#pragma once

typedef unsigned short bf16_t;
typedef unsigned int u32;
typedef unsigned long long u64;

#define WARP 32
#define FULL_MASK 0xffffffffu
#define NEG_INF (__int_as_float(0xff800000))

// ---- bf16 <-> fp32 --------------------------------------------------------------------
__device__ __forceinline__ float bf16_to_f32(bf16_t h) { return __uint_as_float(((u32)h) << 16); }
__device__ __forceinline__ float bf16lo(u32 w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16hi(u32 w) { return __uint_as_float(w & 0xffff0000u); }

#include "ptx.cuh"

// ---- weights: bf16, or fp16 where the model is fp16 ---------------------------------------
// Files whose kernels read weights are compiled twice (compiler.WEIGHT_FILES); the
// fp16 build defines INLOOP_WEIGHTS_F16 and names those kernels with the suffix _f16 (WNAME).
// Weight reads go through w_to_f32 / wlo / whi, never bf16_to_f32 (which stays for the cache).
typedef unsigned short w16_t;
#if INLOOP_WEIGHTS_F16
#define WNAME(n) n##_f16
__device__ __forceinline__ float w_to_f32(w16_t h) { return f16_to_f32(h); }
__device__ __forceinline__ float wlo(u32 w) { return f16_to_f32((unsigned short)(w & 0xffffu)); }
__device__ __forceinline__ float whi(u32 w) { return f16_to_f32((unsigned short)(w >> 16)); }
#define pack_w16x2 pack_f16x2      // GEMM A operand, rounded to the weights' type
#define mma_w16_16816 mma_f16_16816
#else
#define WNAME(n) n
__device__ __forceinline__ float w_to_f32(w16_t h) { return bf16_to_f32(h); }
__device__ __forceinline__ float wlo(u32 w) { return bf16lo(w); }
__device__ __forceinline__ float whi(u32 w) { return bf16hi(w); }
#define pack_w16x2 pack_bf16x2
#define mma_w16_16816 mma_bf16_16816
#endif

// 8 16-bit values in a uint4 (one 16-byte load), widened by LO/HI, dotted with 8 fp32 values.
template <float (*LO)(u32), float (*HI)(u32)>
__device__ __forceinline__ float dot8_of(uint4 w, const float* x) {
    float s = LO(w.x) * x[0];
    s = fmaf(HI(w.x), x[1], s);
    s = fmaf(LO(w.y), x[2], s);
    s = fmaf(HI(w.y), x[3], s);
    s = fmaf(LO(w.z), x[4], s);
    s = fmaf(HI(w.z), x[5], s);
    s = fmaf(LO(w.w), x[6], s);
    s = fmaf(HI(w.w), x[7], s);
    return s;
}
__device__ __forceinline__ float dot8(uint4 w, const float* x) { return dot8_of<bf16lo, bf16hi>(w, x); }  // KV cache
__device__ __forceinline__ float dot8_w(uint4 w, const float* x) { return dot8_of<wlo, whi>(w, x); }     // weights

// ---- reductions -----------------------------------------------------------------------
struct SumOp { __device__ __forceinline__ float operator()(float a, float b) const { return a + b; } };
struct MaxOp { __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); } };

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, SumOp()); }
__device__ __forceinline__ float warp_max(float v) { return warp_reduce(v, MaxOp()); }

// Block-wide reduction; every thread gets the result. `scratch` holds >= 32 floats and may be
// reused right after the call returns (the trailing barrier protects it).
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, float* scratch, float identity, Op op) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_reduce(v, op);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nw ? scratch[lane] : identity;
    t = warp_reduce(t, op);
    __syncthreads();
    return t;
}
__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce(v, scratch, 0.f, SumOp()); }
__device__ __forceinline__ float block_max(float v, float* scratch) {
    return block_reduce(v, scratch, NEG_INF, MaxOp());
}

__device__ __forceinline__ float silu(float g) { return g / (1.f + expf(-g)); }

// The per-sequence decode state that one captured graph reads every step. Mirrored on the
// host by services/runtime/backends/cuda/state.py (same fields, same offsets: keep in sync).
struct DecodeState {
    int token;          //  0 in: the token to embed; out: the sampled token
    int pos;            //  4 position of `token`; the sampler advances it when flags & 1
    u32 rng_step;       //  8 counter of the sampling RNG; advanced with pos
    int top_k;          // 12 0 = off
    float temperature;  // 16 0 = greedy
    float top_p;        // 20 1 = off
    u32 seed_lo;        // 24
    u32 seed_hi;        // 28
    float logprob;      // 32 out: stats of the sampled token (temperature-1 distribution)
    float entropy;      // 36
    float margin;       // 40 p(top1) - p(top2)
    int flags;          // 44 bit 0: advance pos and rng_step after sampling
    u64 k_cache;        // 48 the sequence's KV cache (bf16 [layers, KVH, capacity, hd])
    u64 v_cache;        // 56
    int capacity;       // 64
    int rows;           // 68 prefill graph: valid rows of the padded batch (logits of the last)
    int pad[2];         // 72 -> sizeof 80
};
// The host mirror (state.py) asserts the same numbers; tests compare the two lists.
// NVRTC 13.0 (the one that matches a 13.0 driver) has no __builtin_offsetof, so the field
// offsets are checked where the host compiler builds this header (the source emulator);
// NVRTC checks the size.
#ifndef __CUDACC_RTC__
static_assert(__builtin_offsetof(DecodeState, token) == 0, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, pos) == 4, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, rng_step) == 8, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, top_k) == 12, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, temperature) == 16, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, top_p) == 20, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, seed_lo) == 24, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, seed_hi) == 28, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, logprob) == 32, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, entropy) == 36, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, margin) == 40, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, flags) == 44, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, k_cache) == 48, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, v_cache) == 56, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, capacity) == 64, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, rows) == 68, "DecodeState layout");
static_assert(__builtin_offsetof(DecodeState, pad) == 72, "DecodeState layout");
#endif
static_assert(sizeof(DecodeState) == 80, "DecodeState layout");

// The KV cache (pointers, capacity) comes from `st` when given (a graph serves every
// sequence), else from the kernel's arguments.
__device__ __forceinline__ void cache_from_state(const DecodeState* st, bf16_t*& kc, bf16_t*& vc, int& cap) {
    if (st) {
        kc = reinterpret_cast<bf16_t*>(st->k_cache);
        vc = reinterpret_cast<bf16_t*>(st->v_cache);
        cap = st->capacity;
    }
}

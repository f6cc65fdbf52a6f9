// Shared by attention.cu (kv store, prefill) and attention_decode.cu.
#pragma once
#include "rope.cuh"

#define ATT_WARPS 4
#define ATT_MAXG 8        // query heads per decode block (more heads -> more blocks in z)
#define PREFILL_ITEMS 4   // (query, head) items per warp in prefill: 16 per block
#define KT 32             // keys per tile: one per lane

__device__ __forceinline__ float ld_cg(const float* p) {  // bypass L1: written by other blocks
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}


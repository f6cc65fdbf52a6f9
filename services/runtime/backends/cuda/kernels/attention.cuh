// Shared by attention.cu (kv store, prefill) and attention_decode.cu.
#pragma once
#include "rope.cuh"

#define ATT_WARPS 4
#define PREFILL_ITEMS 4   // (query, head) items per warp in prefill: 16 per block
#define KT 32             // keys per tile: one per lane



// Shared by attention.cu (kv store, prefill) and attention_decode.cu.
#pragma once
#include "rope.cuh"

#define ATT_WARPS 4
#define ATT_MAXG 4        // query heads per decode block, a warp each (more heads -> more blocks in z)
#define ATT_SPLIT_KEYS 64 // fewest keys a decode split takes: below that the merge costs more than it saves
#define PREFILL_ITEMS 4   // (query, head) items per warp in prefill: 16 per block
#define KT 32             // keys per tile: one per lane



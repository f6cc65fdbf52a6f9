// Shared by attention.cu (kv store, prefill) and attention_decode.cu.
#pragma once
#include "rope.cuh"

#define ATT_WARPS 4
#define KT 32             // keys per tile: one per lane



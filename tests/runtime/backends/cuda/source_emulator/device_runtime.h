// What kernels call of the device runtime: barriers, shuffles, atomics (runtime.h).
#pragma once

#include "scheduler.h"

// ---- device runtime ---------------------------------------------------------------------------
inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_collective(emu::W_SYNC, mask, nullptr, 0); }
inline void __threadfence() {}

template <class T>
inline T shfl_impl(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 8, "shuffle of a wide type");
    uint64_t in[2] = {0, (uint64_t)(src & 31)};
    std::memcpy(&in[0], &v, sizeof(T));
    const uint64_t* out = emu::warp_collective(emu::W_SHFL, mask, in, 2);
    T r;
    std::memcpy(&r, &out[0], sizeof(T));
    return r;
}
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return shfl_impl(mask, v, (emu::linear_tid() & 31 & ~(width - 1)) + (src % width));
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int o, int width = 32) {
    (void)width;
    return shfl_impl(mask, v, (emu::linear_tid() & 31) ^ o);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    const int lane = emu::linear_tid() & 31;
    const int src = (lane % width) + (int)d < width ? lane + (int)d : lane;
    return shfl_impl(mask, v, src);
}

inline int atomicAdd(int* p, int v) { int o = *p; *p = o + v; return o; }
inline unsigned atomicAdd(unsigned* p, unsigned v) { unsigned o = *p; *p = o + v; return o; }
inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
inline int atomicMax(int* p, int v) { int o = *p; *p = o > v ? o : v; return o; }
inline unsigned atomicMax(unsigned* p, unsigned v) { unsigned o = *p; *p = o > v ? o : v; return o; }
inline int atomicExch(int* p, int v) { int o = *p; *p = v; return o; }


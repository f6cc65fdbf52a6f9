// kernels/ptx.cuh in C++ (runtime.h): defines INLOOP_PTX_CUH first, so ptx.cuh adds nothing.
#pragma once

#include "scheduler.h"

// ---- kernels/ptx.cuh, in C++ ---------------------------------------------------------------------
#define INLOOP_PTX_CUH
typedef unsigned short bf16_t;
typedef unsigned int u32;

inline bf16_t f32_to_bf16(float f) {  // cvt.rn.bf16.f32: round to nearest even, NaN stays NaN
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}
inline u32 pack_bf16x2(float lo, float hi) { return (u32)f32_to_bf16(lo) | ((u32)f32_to_bf16(hi) << 16); }
inline float f16_to_f32(unsigned short h) { return emu::f16_bits_to_f32(h); }  // cvt.f32.f16 (exact)
inline unsigned short f32_to_f16(float f) {  // cvt.rn.f16.f32: nearest even, overflow to inf
    const u32 u = __float_as_uint(f), sign = (u >> 16) & 0x8000u;
    const u32 a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);  // NaN
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to >= 65520: inf
    if (a < 0x38800000u) {  // below 2^-14: subnormal (or zero), in units of 2^-24
        const float v = __uint_as_float(a) * 16777216.f;  // exact: a power-of-two scale
        return (unsigned short)(sign | (u32)std::nearbyint(v));  // default rounding: nearest even
    }
    const u32 r = a + 0xfffu + ((a >> 13) & 1u);  // round the 13 dropped bits to nearest even
    return (unsigned short)(sign | ((r - 0x38000000u) >> 13));
}
inline u32 pack_f16x2(float lo, float hi) { return (u32)f32_to_f16(lo) | ((u32)f32_to_f16(hi) << 16); }
inline uint4 ld_stream(const uint4* p) {
    if (reinterpret_cast<uintptr_t>(p) & 15) emu::fail("ld_stream: address not 16-byte aligned");
    return *p;
}
inline float ld_cg_f32(const float* p) {
    if (reinterpret_cast<uintptr_t>(p) & 3) emu::fail("ld_cg_f32: address not 4-byte aligned");
    return *p;
}
inline void mma_16816(emu::WarpKind kind, float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    uint64_t in[10] = {a0, a1, a2, a3, b0, b1, __float_as_uint(c[0]), __float_as_uint(c[1]),
                        __float_as_uint(c[2]), __float_as_uint(c[3])};
    const uint64_t* out = emu::warp_collective(kind, 0xffffffffu, in, 10);
    for (int i = 0; i < 4; ++i) c[i] = __uint_as_float((u32)out[i]);
}
inline void mma_bf16_16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    mma_16816(emu::W_MMA, c, a0, a1, a2, a3, b0, b1);
}
inline void mma_f16_16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    mma_16816(emu::W_MMA_F16, c, a0, a1, a2, a3, b0, b1);
}
// One block runs at a time here, each launch after the previous one finished, so the wait has
// nothing to wait for; what it guards is checked instead (pdl_hazards.h): memory that earlier
// kernels of the chain wrote is closed to a block's threads until they reach it. The clobbers
// keep g++ from moving a load across it, as the GPU's asm volatile does.
inline void pdl_wait() {
    asm volatile("" ::: "memory");
    emu::pdl_wait_point();
    asm volatile("" ::: "memory");
}
inline void pdl_launch_dependents() {}

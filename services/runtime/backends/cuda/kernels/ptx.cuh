// Every inline PTX statement of the kernels, and nothing else: bf16/f16 conversions, the two
// cache-hinted loads, the tensor-core MMAs and programmatic dependent launch's two controls.
// Kept in one file so that the CPU emulator of the kernel sources
// (tests/runtime/backends/cuda/source_emulator) can stand in for exactly these functions; it
// defines INLOOP_PTX_CUH first, so this file then adds nothing.
#ifndef INLOOP_PTX_CUH
#define INLOOP_PTX_CUH

__device__ __forceinline__ bf16_t f32_to_bf16(float f) {  // round to nearest even (sm_80+)
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {  // lo -> bits 0..15
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ unsigned short f32_to_f16(float f) {  // round to nearest even
    unsigned short r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}
__device__ __forceinline__ u32 pack_f16x2(float lo, float hi) {  // lo -> bits 0..15
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// Weights are read once per step: stream them past L1 (they would only evict activations).
__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}

// Bypass L1: for partials that other blocks of the same launch wrote.
__device__ __forceinline__ float ld_cg_f32(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

// One warp: D[16x8] += A[16x16] (row-major, bf16) * B[16x8] (column-major, bf16), fp32.
// Fragments per lane (gid = lane / 4, tig = lane % 4), two bf16 per register, lower column
// in the low half: a0 (row gid, k tig*2), a1 (row gid+8), a2 (k + 8), a3 (row gid+8, k + 8);
// b0 (k tig*2, n gid), b1 (k + 8); c[0..1] (row gid, n tig*2 +0/1), c[2..3] (row gid+8).
__device__ __forceinline__ void mma_bf16_16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// The same with fp16 A and B (same fragment layout).
__device__ __forceinline__ void mma_f16_16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// ---- programmatic dependent launch (sm_90+) -----------------------------------------------
// Every kernel calls pdl_wait() before it touches memory an earlier kernel writes (and before
// it writes anything an earlier kernel reads); only weights may be read before it. Launched
// without the PDL attribute, or before sm_90, both are no-ops.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#endif  // INLOOP_PTX_CUH

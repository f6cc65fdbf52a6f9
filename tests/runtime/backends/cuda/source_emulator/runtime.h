// CUDA C on the CPU: enough of the language and the device runtime to run the project's own
// kernels (services/runtime/backends/cuda/kernels) unmodified, for tests on machines without
// a GPU. build.py pre-includes this header into each kernel file and compiles it with g++.
//
// Execution model. A launch runs its blocks one after another; the threads of a block are
// fibers on one OS thread (a six-register stack switch on x86-64, ucontext elsewhere), switched only where CUDA threads synchronize:
// __syncthreads, the warp collectives (shuffles, __syncwarp, mma.sync). Between those points
// a thread runs alone, so memory ops and atomics are trivially atomic, and a kernel that
// relies on lock-step warps without a collective (a race on the GPU) sees other threads'
// writes late or early here too.
//
// Strict where the GPU is undefined: a __syncthreads that not every thread of the block
// reaches (some returned, some wait at a warp collective), a warp collective with a full mask
// in a warp with missing lanes, lanes of one warp at different collectives, and (through the
// UBSan checks build.py turns on, with the handlers below) misaligned vector loads, indexes
// out of static arrays, signed overflow and bad shifts. Any of these ends the launch with a
// message naming the block, thread and source line; the Python side raises it.
//
// The PTX of kernels/ptx.cuh is replaced by C++ here, from the PTX ISA's definitions, not
// from the kernels' use of it (mma.sync's fragment layout in particular).
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// ---- language -------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static  // one block runs at a time, so a static is that block's shared memory

struct uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned x, y; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(8))) float2 { float x, y; };
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline float2 make_float2(float x, float y) { return {x, y}; }

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

// ---- math and bit casts -----------------------------------------------------------------------
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int i; std::memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float rsqrtf(float x) { return 1.f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <class T> inline T min(T a, T b) { return b < a ? b : a; }
template <class T> inline T max(T a, T b) { return a < b ? b : a; }
inline long long min(long long a, int b) { return b < a ? b : a; }
inline long long max(long long a, int b) { return a < b ? b : a; }
// expf, logf, fmaf, fmaxf, sincosf, ...: the C library's, as on the GPU (math.h, glibc).

namespace emu {

// ---- fibers, barriers, warp collectives -----------------------------------------------------
enum State { RUNNABLE, AT_BARRIER, AT_WARP, DONE };
enum WarpKind { W_NONE, W_SHFL, W_SYNC, W_MMA, W_MMA_F16 };

// ---- context switch: the scheduler and the fibers hand the CPU to each other -------------
#if defined(__x86_64__)
// swapcontext also saves the signal mask (a system call, ~170 ns); the System V callee-saved
// registers are all a cooperative switch needs (~5 ns), which makes the tests ~3x faster.
extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .hidden emu_switch
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");
struct Context { void* sp = nullptr; };
#else
struct Context { ucontext_t uc; };
#endif

struct Fiber {
    Context ctx;
    State state;
    uint3 tid;
};

struct Warp {
    int live = 0, arrived = 0;
    WarpKind kind = W_NONE;
    uint64_t in[32][10];   // each lane's operands of the pending collective
    uint64_t out[32][4];   // each lane's results of the last completed one
};

struct Launch {  // mirrored by build.py (ctypes)
    unsigned grid[3], block[3];
    unsigned smem;
};

struct Runner {
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    char* stacks = nullptr;  // malloc'd, never touched beyond what the fibers use
    size_t stacks_for = 0;
    std::vector<unsigned char> dyn_smem;
    Context sched;
    int cur = 0, n = 0, live = 0, at_barrier = 0;
    bool reverse = false;        // this block's scheduling order (see run_block)
    unsigned long launches = 0;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
    std::string error;
    static constexpr size_t kStack = 128 * 1024;
};
inline Runner R;

inline std::string where() {
    char b[160];
    std::snprintf(b, sizeof b, "block (%u,%u,%u) thread (%u,%u,%u)", blockIdx.x, blockIdx.y, blockIdx.z,
                  threadIdx.x, threadIdx.y, threadIdx.z);
    return b;
}

inline void to_scheduler() {
#if defined(__x86_64__)
    emu_switch(&R.fibers[R.cur].ctx.sp, R.sched.sp);
#else
    swapcontext(&R.fibers[R.cur].ctx.uc, &R.sched.uc);
#endif
}
inline void to_fiber(int i) {
#if defined(__x86_64__)
    emu_switch(&R.sched.sp, R.fibers[i].ctx.sp);
#else
    swapcontext(&R.sched.uc, &R.fibers[i].ctx.uc);
#endif
}

// Record the first error and leave this fiber for good; the scheduler abandons the launch.
inline void fail(const std::string& msg) {
    if (R.error.empty()) R.error = msg + " (" + where() + ")";
    R.fibers[R.cur].state = DONE;
    to_scheduler();
    std::abort();  // never resumed
}

inline void yield() { to_scheduler(); }

inline int linear_tid() { return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x; }

inline void release_barrier() {
    if (R.live < R.n) {
        R.error = "__syncthreads reached after " + std::to_string(R.n - R.live) +
                  " thread(s) of the block returned (undefined on the GPU)";
        return;
    }
    for (auto& f : R.fibers)
        if (f.state == AT_BARRIER) f.state = RUNNABLE;
    R.at_barrier = 0;
}

inline void complete_warp(int w);

inline void syncthreads() {
    R.fibers[R.cur].state = AT_BARRIER;
    if (++R.at_barrier == R.live) {
        R.fibers[R.cur].state = RUNNABLE;
        release_barrier();
        if (!R.error.empty()) fail(R.error);
        return;
    }
    yield();
}

// Lane `lane` of its warp arrives at a collective with its operands; returns its results once
// every live lane of the warp has arrived at the same collective.
inline const uint64_t* warp_collective(WarpKind kind, unsigned mask, const uint64_t* in, int nin) {
    const int t = linear_tid(), w = t >> 5, lane = t & 31;
    Warp& W = R.warps[w];
    if (mask != 0xffffffffu) fail("warp collective with a partial mask: the emulator supports full masks only");
    if (W.live != 32) fail("warp collective with a full mask in a warp of " + std::to_string(W.live) + " live lanes");
    if (W.arrived > 0 && W.kind != kind) fail("lanes of one warp at different warp collectives (divergence)");
    W.kind = kind;
    std::memcpy(W.in[lane], in, sizeof(uint64_t) * nin);
    R.fibers[R.cur].state = AT_WARP;
    if (++W.arrived == W.live) {
        complete_warp(w);
        R.fibers[R.cur].state = RUNNABLE;
    } else {
        yield();
    }
    return W.out[lane];
}

inline float bf16_bits_to_f32(unsigned h) { return __uint_as_float((h & 0xffffu) << 16); }
inline float f16_bits_to_f32(unsigned h) {  // exact (every fp16 value is a float)
    const unsigned sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
    if (exp == 0) {
        const float v = std::ldexp((float)man, -24);
        return sign ? -v : v;
    }
    if (exp == 31) return __uint_as_float(sign | 0x7f800000u | (man << 13));
    return __uint_as_float(sign | ((exp + 112) << 23) | (man << 13));
}

inline void complete_warp(int w) {
    Warp& W = R.warps[w];
    if (W.kind == W_SHFL) {
        for (int l = 0; l < 32; ++l) W.out[l][0] = W.in[W.in[l][1] & 31][0];
    } else if (W.kind == W_MMA || W.kind == W_MMA_F16) {
        auto elem = W.kind == W_MMA ? bf16_bits_to_f32 : f16_bits_to_f32;
        // mma.m16n8k16 .row.col bf16 (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating
        // point type"): groupID = lane >> 2, threadID_in_group = lane % 4. A element i of 8
        // (two per register, lower index in the low half): row groupID (+8 for i in 2,3,6,7),
        // column tig*2 + (i & 1) (+8 for i >= 4). B element i of 4: row (k) tig*2 + (i & 1)
        // (+8 for i >= 2), column groupID. C/D element i of 4: row groupID (+8 for i >= 2),
        // column tig*2 + (i & 1).
        float A[16][16], B[16][8], C[16][8];
        for (int l = 0; l < 32; ++l) {
            const int g = l >> 2, tig = l & 3;
            for (int i = 0; i < 8; ++i) {
                const unsigned reg = (unsigned)W.in[l][i >> 1];
                const int row = g + ((i == 2 || i == 3 || i == 6 || i == 7) ? 8 : 0);
                const int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
                A[row][col] = elem((i & 1) ? reg >> 16 : reg);
            }
            for (int i = 0; i < 4; ++i) {
                const unsigned reg = (unsigned)W.in[l][4 + (i >> 1)];
                B[tig * 2 + (i & 1) + (i >= 2 ? 8 : 0)][g] = elem((i & 1) ? reg >> 16 : reg);
            }
            for (int i = 0; i < 4; ++i) {
                unsigned bits = (unsigned)W.in[l][6 + i];
                C[g + (i >= 2 ? 8 : 0)][tig * 2 + (i & 1)] = __uint_as_float(bits);
            }
        }
        for (int l = 0; l < 32; ++l) {
            const int g = l >> 2, tig = l & 3;
            for (int i = 0; i < 4; ++i) {
                const int row = g + (i >= 2 ? 8 : 0), col = tig * 2 + (i & 1);
                double s = C[row][col];
                for (int k = 0; k < 16; ++k) s += (double)A[row][k] * (double)B[k][col];
                W.out[l][i] = __float_as_uint((float)s);
            }
        }
    }
    for (int l = 0; l < 32; ++l) {
        Fiber& f = R.fibers[w * 32 + l];
        if (f.state == AT_WARP) f.state = RUNNABLE;
    }
    W.arrived = 0;
    W.kind = W_NONE;
}

inline void thread_exit() {
    const int w = linear_tid() >> 5;
    R.fibers[R.cur].state = DONE;
    --R.live;
    Warp& W = R.warps[w];
    --W.live;
    if (W.arrived > 0 && R.error.empty())
        R.error = "a lane returned while other lanes of its warp wait at a warp collective (" + where() + ")";
    if (R.at_barrier > 0 && R.error.empty())
        R.error = "a thread returned while others wait at __syncthreads (" + where() + ")";
}

inline void fiber_main() {
    R.body(R.body_arg);
    thread_exit();
#if defined(__x86_64__)
    to_scheduler();  // a finished fiber is never switched to again
    std::abort();
#endif
    // (ucontext: returning resumes uc_link, the scheduler)
}

inline void init_fiber(Fiber& f, char* stack) {
#if defined(__x86_64__)
    // What emu_switch pops: six callee-saved registers, then the return address fiber_main,
    // entered like a call (rsp % 16 == 8), above it a null "return address" it never uses.
    auto top = reinterpret_cast<uintptr_t>(stack + Runner::kStack) & ~uintptr_t(15);
    auto* sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;
    *--sp = reinterpret_cast<void*>(&fiber_main);
    for (int r = 0; r < 6; ++r) *--sp = nullptr;
    f.ctx.sp = sp;
#else
    getcontext(&f.ctx.uc);
    f.ctx.uc.uc_stack.ss_sp = stack;
    f.ctx.uc.uc_stack.ss_size = Runner::kStack;
    f.ctx.uc.uc_link = &R.sched.uc;
    makecontext(&f.ctx.uc, (void (*)())fiber_main, 0);
#endif
}

inline bool run_block(const Launch& L) {
    const unsigned bx = L.block[0], by = L.block[1], bz = L.block[2];
    R.n = (int)(bx * by * bz);
    R.live = R.n;
    R.at_barrier = 0;
    R.fibers.resize(R.n);
    R.warps.assign((R.n + 31) / 32, Warp());
    for (int w = 0; w < (int)R.warps.size(); ++w) R.warps[w].live = std::min(32, R.n - 32 * w);
    if (R.stacks_for < (size_t)R.n) {
        std::free(R.stacks);
        R.stacks = static_cast<char*>(std::malloc((size_t)R.n * Runner::kStack));
        R.stacks_for = (size_t)R.n;
    }
    std::memset(R.dyn_smem.data(), 0xff, R.dyn_smem.size());  // NaN: reading unwritten shared memory shows
    for (int i = 0; i < R.n; ++i) {
        Fiber& f = R.fibers[i];
        f.tid = {(unsigned)i % bx, ((unsigned)i / bx) % by, (unsigned)i / (bx * by)};
        f.state = RUNNABLE;
        init_fiber(f, R.stacks + (size_t)i * Runner::kStack);
    }
    // Threads run in index order in half of the blocks and in reverse in the other half (and
    // alternate per launch): a read of another warp's write with no barrier between them
    // then sees stale data in one of the two orders, as it may on the GPU.
    while (R.live > 0) {
        bool ran = false;
        for (int k = 0; k < R.n; ++k) {
            const int i = R.reverse ? R.n - 1 - k : k;
            if (R.fibers[i].state != RUNNABLE) continue;
            R.cur = i;
            threadIdx = R.fibers[i].tid;
            to_fiber(i);
            ran = true;
            if (!R.error.empty()) return false;
        }
        if (!ran) {
            int at_bar = 0, at_warp = 0;
            for (auto& f : R.fibers) at_bar += f.state == AT_BARRIER, at_warp += f.state == AT_WARP;
            R.error = "deadlock: " + std::to_string(at_bar) + " thread(s) at __syncthreads, " +
                      std::to_string(at_warp) + " at a warp collective, none can go on (block (" +
                      std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," +
                      std::to_string(blockIdx.z) + "))";
            return false;
        }
    }
    return true;
}

inline int run_grid(const Launch& L, void (*body)(void*), void* arg) {
    ++R.launches;
    R.error.clear();
    R.body = body;
    R.body_arg = arg;
    gridDim = {L.grid[0], L.grid[1], L.grid[2]};
    blockDim = {L.block[0], L.block[1], L.block[2]};
    R.dyn_smem.assign(L.smem + 16, 0xff);
    for (unsigned z = 0; z < L.grid[2]; ++z)
        for (unsigned y = 0; y < L.grid[1]; ++y)
            for (unsigned x = 0; x < L.grid[0]; ++x) {
                blockIdx = {x, y, z};
                R.reverse = ((R.launches + x + y + z) & 1) != 0;
                if (!run_block(L)) return 1;
            }
    return 0;
}

inline void* dynamic_smem() {
    auto p = reinterpret_cast<uintptr_t>(R.dyn_smem.data());
    return reinterpret_cast<void*>((p + 15) & ~uintptr_t(15));
}

// Call kernel `f` with its arguments unpacked from the driver's `void**` convention.
template <class... A, size_t... I>
inline void call_packed(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
}
template <class... A>
struct Bound {
    void (*f)(A...);
    void** params;
    static void run(void* self) {
        auto* b = static_cast<Bound*>(self);
        call_packed(b->f, b->params, std::index_sequence_for<A...>{});
    }
};
template <class... A>
inline int launch(const Launch* L, void (*f)(A...), void** params) {
    Bound<A...> b{f, params};
    return run_grid(*L, &Bound<A...>::run, &b);
}

}  // namespace emu

extern "C" __attribute__((visibility("default"))) const char* emu_last_error() { return emu::R.error.c_str(); }

#define INLOOP_EMU_EXPORT(k)                                     \
    extern "C" __attribute__((visibility("default"))) int emu_launch_##k(const emu::Launch* L, void** params) { return emu::launch(L, k, params); }

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

// ---- UBSan handlers (build.py compiles with -fsanitize=... and links no sanitizer runtime) ----
namespace emu {
struct SourceLocation {
    const char* file;
    u32 line, column;
};
inline void ub(const char* what, const void* data) {
    const auto* loc = static_cast<const SourceLocation*>(data);
    char b[512];
    std::snprintf(b, sizeof b, "%s at %s:%u:%u", what, loc->file, loc->line, loc->column);
    fail(b);
}
}  // namespace emu
#define EMU_UB(name, what) \
    extern "C" void name(void* data, uintptr_t, uintptr_t) { emu::ub(what, data); }
EMU_UB(__ubsan_handle_type_mismatch_v1, "misaligned or null access")
EMU_UB(__ubsan_handle_out_of_bounds, "index out of bounds of a fixed-size array")
EMU_UB(__ubsan_handle_add_overflow, "signed integer overflow in +")
EMU_UB(__ubsan_handle_sub_overflow, "signed integer overflow in -")
EMU_UB(__ubsan_handle_mul_overflow, "signed integer overflow in *")
EMU_UB(__ubsan_handle_negate_overflow, "signed integer overflow in unary -")
EMU_UB(__ubsan_handle_divrem_overflow, "integer division by zero or overflow")
EMU_UB(__ubsan_handle_shift_out_of_bounds, "shift out of bounds")
EMU_UB(__ubsan_handle_pointer_overflow, "pointer arithmetic overflow")
EMU_UB(__ubsan_handle_builtin_unreachable, "__builtin_unreachable reached")
EMU_UB(__ubsan_handle_vla_bound_not_positive, "variable-length array bound not positive")
EMU_UB(__ubsan_handle_load_invalid_value, "load of an invalid bool or enum value")

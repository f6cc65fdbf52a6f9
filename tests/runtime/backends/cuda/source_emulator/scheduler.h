// The threads of a block as fibers, barriers, warp collectives and the launch (runtime.h).
#pragma once

#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "language.h"
#include "pdl_hazards.h"

namespace emu {

// ---- fibers, barriers, warp collectives -----------------------------------------------------
enum State { RUNNABLE, AT_BARRIER, AT_WARP, AT_PDL_WAIT, DONE };
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
    hazards_block_begin((blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x,
                        gridDim.x * gridDim.y * gridDim.z, R.launches);
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
        if (!ran && HZ.before_wait) {  // the rest wait on the earlier kernels: they have finished
            bool parked = false;
            for (auto& f : R.fibers)
                if (f.state == AT_PDL_WAIT) f.state = RUNNABLE, parked = true;
            if (parked) {
                hazards_block_waited();
                continue;
            }
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
    hazards_block_waited();  // every thread returned (some without waiting)
    return true;
}

// The k-th block to run of `total`. A GPU runs blocks in no set order, so neither may a kernel
// assume one (that the block finishing last is the highest, that lower blocks are done):
// launches take turns running them ascending, descending, and in a strided permutation.
inline unsigned long block_order(unsigned long k, unsigned long total) {
    switch (R.launches % 3) {
        case 0: return k;
        case 1: return total - 1 - k;
        default: {
            unsigned long a = 7;  // a stride coprime with total visits every block once
            while (std::gcd(a, total) != 1) a += 2;
            return (k * a + R.launches) % total;
        }
    }
}

inline int run_grid(const Launch& L, void (*body)(void*), void* arg) {
    ++R.launches;
    R.error.clear();
    R.body = body;
    R.body_arg = arg;
    gridDim = {L.grid[0], L.grid[1], L.grid[2]};
    blockDim = {L.block[0], L.block[1], L.block[2]};
    R.dyn_smem.assign(L.smem + 16, 0xff);
    hazards_launch_begin();
    bool ok = true;
    const unsigned long total = (unsigned long)L.grid[0] * L.grid[1] * L.grid[2];
    for (unsigned long k = 0; ok && k < total; ++k) {
        const unsigned long b = block_order(k, total);
        const unsigned x = b % L.grid[0], y = (b / L.grid[0]) % L.grid[1], z = b / ((unsigned long)L.grid[0] * L.grid[1]);
        blockIdx = {x, y, z};
        R.reverse = ((R.launches + x + y + z) & 1) != 0;
        ok = run_block(L);
    }
    hazards_launch_end();
    if (ok && HZ.other_thread) {
        R.error = "another thread touched device memory during the launch (the hazard check needs it alone)";
        ok = false;
    }
    if (ok && HZ.breach) {
        char b[240];
        std::snprintf(b, sizeof b, HZ.breach_write
                      ? "wrote %#llx before griddepcontrol.wait: an earlier kernel of this PDL chain may still "
                        "read or write it (the first such access)"
                      : "touched %#llx before griddepcontrol.wait: bytes an earlier kernel of this PDL chain "
                        "wrote (the first such access)", (unsigned long long)HZ.breach);
        R.error = b;
        ok = false;
    }
    return ok ? 0 : 1;
}

// griddepcontrol.wait: while the hazard check holds the block before the wait (pdl_hazards.h),
// a thread parks here until every thread of the block has reached its wait or returned.
inline void pdl_wait_point() {
    if (!HZ.before_wait) return;
    R.fibers[R.cur].state = AT_PDL_WAIT;
    yield();
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


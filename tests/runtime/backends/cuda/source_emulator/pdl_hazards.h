// What griddepcontrol.wait guards, checked (runtime.h; driven by fake_driver.py).
//
// Under programmatic dependent launch a kernel may start while the kernels before it in the
// stream still run: each calls griddepcontrol.launch_dependents before its own wait, so every
// kernel since the last ordinary launch (or copy) may still be running. Code before
// griddepcontrol.wait must therefore not touch memory those kernels write, and writes
// nothing (they may still read it). On a GPU a breach corrupts data now and then; here it
// stops the launch.
//
// How. The device allocations are mapped read-only during a launch, so the first write to a
// page faults once: the page is copied, made writable, and after the launch the copy and the
// page give the bytes the kernel changed (handed to the driver double, which keeps them for
// the rest of the chain). While a block's threads are all before their wait, the pages holding
// bytes that earlier kernels of the chain changed are mapped with no access; a fault there in
// an aligned 16-byte chunk holding such bytes is the breach (changed bytes may start inside a
// word; the kernels' loads are aligned and at most 16 bytes). Other bytes of the page are let
// through: the page opens for one instruction under the trap flag, then closes again. A write
// fault before the wait is a breach too (the first write to each page of the launch faults:
// a block that writes before its wait is caught where it is the first to write the page).
// x86-64 Linux only (the trap flag); elsewhere `emu_hazards_supported` says no.
#pragma once

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

namespace emu {

struct Span { uintptr_t lo, hi; };  // [lo, hi)

struct Hazards {
    bool on = false;              // tracking this launch (the driver double asked for it)
    bool pdl = false;             // ... and it was launched with programmatic stream serialization
    bool before_wait = false;     // the running block's threads are all before griddepcontrol.wait
    std::vector<Span> tracked;    // the device allocations, page-aligned
    std::vector<Span> stale;      // bytes earlier kernels of the chain wrote (sorted, disjoint)
    std::vector<uintptr_t> stale_pages;  // the pages holding them
    std::vector<Span> stale_runs;  // the same pages as runs of adjacent ones (one mprotect each)
    std::unordered_map<uintptr_t, std::vector<unsigned char>> before;  // page -> its bytes before this launch wrote it
    std::vector<Span> written;    // after the launch: the bytes it changed
    std::vector<uintptr_t> stepping;  // stale pages opened for one instruction
    uintptr_t breach = 0;         // the first address touched too early (0: none)
    bool breach_write = false;    // ... by a write (not to bytes the chain wrote)
    bool other_thread = false;    // a thread other than the launch's touched a tracked page
    pthread_t thread{};
    struct sigaction old_segv{}, old_trap{};
    size_t page = 4096;
};
inline Hazards HZ;

inline bool in_spans(const std::vector<Span>& s, uintptr_t lo, uintptr_t hi) {  // [lo, hi) meets s
    auto it = std::upper_bound(s.begin(), s.end(), lo, [](uintptr_t a, const Span& b) { return a < b.hi; });
    return it != s.end() && it->lo < hi;
}
inline bool is_tracked(uintptr_t page) { return in_spans(HZ.tracked, page, page + 1); }
inline bool is_stale_page(uintptr_t page) {
    return std::binary_search(HZ.stale_pages.begin(), HZ.stale_pages.end(), page);
}
inline int open_prot(uintptr_t page) {  // a tracked page's protection outside the wait window
    return HZ.before.count(page) ? PROT_READ | PROT_WRITE : PROT_READ;
}

#if defined(__x86_64__) && defined(__linux__)
inline constexpr bool kHazardsSupported = true;
inline void set_trap_flag(void* uc, bool on) {  // EFLAGS.TF: a debug trap after the next instruction
    auto& fl = static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_EFL];
    fl = on ? (fl | 0x100) : (fl & ~0x100LL);
}
#else
inline constexpr bool kHazardsSupported = false;
inline void set_trap_flag(void*, bool) {}
#endif

inline void restore_handlers() {
    sigaction(SIGSEGV, &HZ.old_segv, nullptr);
    sigaction(SIGTRAP, &HZ.old_trap, nullptr);
}

// A fault that is not ours (a wild pointer) goes back to the handler that was there before
// (Python's faulthandler under pytest): the instruction faults again and that one reports it.
inline void on_segv(int, siginfo_t* si, void* uc) {
    const auto a = reinterpret_cast<uintptr_t>(si->si_addr), page = a & ~(uintptr_t)(HZ.page - 1);
    if (!HZ.on || !is_tracked(page)) {
        restore_handlers();
        return;
    }
    if (!pthread_equal(pthread_self(), HZ.thread)) {  // not the launch's thread: open everything, say so
        HZ.other_thread = true;
        for (const Span& s : HZ.tracked) mprotect(reinterpret_cast<void*>(s.lo), s.hi - s.lo, PROT_READ | PROT_WRITE);
        return;
    }
    const bool opened = std::find(HZ.stepping.begin(), HZ.stepping.end(), page) != HZ.stepping.end();
    if (HZ.before_wait && is_stale_page(page) && !opened) {
        const uintptr_t chunk = a & ~(uintptr_t)15;  // the aligned 16 bytes holding the access
        if (HZ.breach == 0 && in_spans(HZ.stale, chunk, chunk + 16)) HZ.breach = a;
        mprotect(reinterpret_cast<void*>(page), HZ.page, open_prot(page));
        HZ.stepping.push_back(page);
        set_trap_flag(uc, true);  // close it again after this one instruction
        return;
    }
    // every fault from here on is a write (the page is read-only)
    if (HZ.before_wait && HZ.breach == 0) HZ.breach = a, HZ.breach_write = true;
    if (!HZ.before.count(page)) {  // the launch's first write to this page
        const auto* p = reinterpret_cast<const unsigned char*>(page);
        HZ.before.emplace(page, std::vector<unsigned char>(p, p + HZ.page));
    }
    mprotect(reinterpret_cast<void*>(page), HZ.page, PROT_READ | PROT_WRITE);
}

inline void on_trap(int, siginfo_t*, void* uc) {
    if (!HZ.on || HZ.stepping.empty()) {  // not ours
        restore_handlers();
        return;
    }
    for (uintptr_t p : HZ.stepping) mprotect(reinterpret_cast<void*>(p), HZ.page, HZ.before_wait ? PROT_NONE : open_prot(p));
    HZ.stepping.clear();
    set_trap_flag(uc, false);
}

inline void protect_all(int prot) {
    for (const Span& s : HZ.tracked) mprotect(reinterpret_cast<void*>(s.lo), s.hi - s.lo, prot);
}

inline void hazards_launch_begin() {
    if (!HZ.on) return;
    HZ.page = (size_t)sysconf(_SC_PAGESIZE);
    HZ.thread = pthread_self();
    HZ.before.clear();
    HZ.written.clear();
    HZ.breach = 0;
    HZ.breach_write = false;
    HZ.stepping.clear();
    HZ.stepping.reserve(16);  // the handler appends: no allocation there as a rule
    HZ.other_thread = false;
    HZ.stale_pages.clear();
    for (const Span& s : HZ.stale)
        for (uintptr_t p = s.lo & ~(uintptr_t)(HZ.page - 1); p < s.hi; p += HZ.page) HZ.stale_pages.push_back(p);
    std::sort(HZ.stale_pages.begin(), HZ.stale_pages.end());
    HZ.stale_pages.erase(std::unique(HZ.stale_pages.begin(), HZ.stale_pages.end()), HZ.stale_pages.end());
    HZ.stale_runs.clear();
    for (uintptr_t p : HZ.stale_pages) {
        if (!HZ.stale_runs.empty() && HZ.stale_runs.back().hi == p) HZ.stale_runs.back().hi += HZ.page;
        else HZ.stale_runs.push_back({p, p + HZ.page});
    }
    struct sigaction sa{};
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sa.sa_sigaction = on_segv;
    sigaction(SIGSEGV, &sa, &HZ.old_segv);
    sa.sa_sigaction = on_trap;
    sigaction(SIGTRAP, &sa, &HZ.old_trap);
    protect_all(PROT_READ);
}

// A block's threads start before their wait; the stale pages close until they all reach it.
// Grids of more than 64 blocks are sampled (two system calls per run of pages per block add
// up): the first and last 8 blocks and every k-th of the rest, from an offset that moves with
// each launch, about 64 in all.
inline void hazards_block_begin(unsigned block, unsigned blocks, unsigned long launch) {
    if (!HZ.on || !HZ.pdl) return;
    const unsigned k = (blocks + 47) / 48;
    if (blocks > 64 && block >= 8 && block + 8 < blocks && (block + launch) % k != 0) return;
    HZ.before_wait = true;
    for (const Span& r : HZ.stale_runs) mprotect(reinterpret_cast<void*>(r.lo), r.hi - r.lo, PROT_NONE);
}

inline void hazards_block_waited() {  // every thread is at its wait (or done)
    if (!HZ.before_wait) return;
    HZ.before_wait = false;
    // read-only: a page this launch wrote faults once more on its next write (and is opened)
    for (const Span& r : HZ.stale_runs) mprotect(reinterpret_cast<void*>(r.lo), r.hi - r.lo, PROT_READ);
}

inline void hazards_launch_end() {
    if (!HZ.on) return;
    HZ.before_wait = false;
    protect_all(PROT_READ | PROT_WRITE);
    restore_handlers();
    std::vector<uintptr_t> pages;
    for (const auto& kv : HZ.before) pages.push_back(kv.first);
    std::sort(pages.begin(), pages.end());
    for (uintptr_t page : pages) {
        const auto& old = HZ.before[page];
        const auto* now = reinterpret_cast<const unsigned char*>(page);
        for (size_t i = 0; i < HZ.page;) {
            if (old[i] == now[i]) { ++i; continue; }
            size_t j = i;
            while (j < HZ.page && old[j] != now[j]) ++j;
            // whole aligned 16-byte chunks, the breach test's unit (a float's changed bytes
            // need not include its first), merged with the span before
            const uintptr_t lo = (page + i) & ~(uintptr_t)15, hi = (page + j + 15) & ~(uintptr_t)15;
            if (!HZ.written.empty() && HZ.written.back().hi >= lo) HZ.written.back().hi = std::max(HZ.written.back().hi, hi);
            else HZ.written.push_back({lo, hi});
            i = j;
        }
    }
}

}  // namespace emu

// ---- the driver double's side (build.py) ------------------------------------------------------
extern "C" __attribute__((visibility("default"))) int emu_hazards_supported() { return emu::kHazardsSupported; }

// Track the next launch: `tracked` the device allocations (page-aligned [lo, hi) pairs), `stale`
// the bytes earlier kernels of its chain wrote (disjoint pairs), `pdl` whether it is launched
// with programmatic stream serialization (else its wait returns at once: nothing to check).
// n_tracked < 0: off.
extern "C" __attribute__((visibility("default"))) void emu_hazards_set(const uint64_t* tracked, int n_tracked,
                                                                       const uint64_t* stale, int n_stale, int pdl) {
    emu::HZ.on = emu::kHazardsSupported && n_tracked >= 0;
    emu::HZ.pdl = pdl != 0;
    emu::HZ.tracked.clear();
    emu::HZ.stale.clear();
    for (int i = 0; i < n_tracked; ++i) emu::HZ.tracked.push_back({tracked[2 * i], tracked[2 * i + 1]});
    for (int i = 0; i < n_stale; ++i) emu::HZ.stale.push_back({stale[2 * i], stale[2 * i + 1]});
    auto by_start = [](const emu::Span& a, const emu::Span& b) { return a.lo < b.lo; };  // in_spans searches them
    std::sort(emu::HZ.tracked.begin(), emu::HZ.tracked.end(), by_start);
    std::sort(emu::HZ.stale.begin(), emu::HZ.stale.end(), by_start);
}

// After the launch: the first address it touched too early (0: none), whether another thread
// touched device memory meanwhile, and the 16-byte chunks it changed (up to `cap` [lo, hi)
// pairs; returns the count).
extern "C" __attribute__((visibility("default"))) int emu_hazards_other_thread() { return emu::HZ.other_thread; }
extern "C" __attribute__((visibility("default"))) int emu_hazards_written(uint64_t* out, int cap) {
    const int n = (int)emu::HZ.written.size();
    for (int i = 0; i < n && i < cap; ++i) out[2 * i] = emu::HZ.written[i].lo, out[2 * i + 1] = emu::HZ.written[i].hi;
    return n;
}

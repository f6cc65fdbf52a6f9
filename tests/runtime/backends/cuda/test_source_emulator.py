"""The CPU emulator of the kernel sources (source_emulator/) on small kernels of its own: it
runs correct CUDA C as the GPU would (shared memory, barriers, shuffles, the mma.sync fragment
layout of the PTX ISA, atomic tickets) and stops, naming the line, on what is undefined on the
GPU. The parity modules trust it only as far as these tests go."""
from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest

from .fake_driver import Memory
from .source_emulator.build import KernelFault, Library, build_library, compiler

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C++ compiler for the CPU kernel emulator")

SOURCE = r'''
#include "common.cuh"

// every thread adds its index; block_sum uses shuffles and two barriers
extern "C" __global__ void block_total(float* out) {
    __shared__ float scratch[32];
    const float t = block_sum((float)threadIdx.x, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = t;
}

// dynamic shared memory, reversed through a barrier
extern "C" __global__ void reverse(const float* in, float* out, int n) {
    extern __shared__ float4 smem4[];
    float* s = reinterpret_cast<float*>(smem4);
    for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = in[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = s[n - 1 - i];
}

// one warp, one mma.sync: D = A B + C with A [16,16] row-major, B [16,8] as Bt [8,16], bf16
extern "C" __global__ void one_mma(const bf16_t* A, const bf16_t* Bt, const float* C, float* D) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    auto a = [&](int r, int k) { return (u32)A[r * 16 + k] | ((u32)A[r * 16 + k + 1] << 16); };
    auto b = [&](int k, int n) { return (u32)Bt[n * 16 + k] | ((u32)Bt[n * 16 + k + 1] << 16); };
    float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
    mma_bf16_16816(c, a(g, 2 * t), a(g + 8, 2 * t), a(g, 2 * t + 8), a(g + 8, 2 * t + 8), b(2 * t, g), b(2 * t + 8, g));
    D[g * 8 + 2 * t] = c[0]; D[g * 8 + 2 * t + 1] = c[1];
    D[(g + 8) * 8 + 2 * t] = c[2]; D[(g + 8) * 8 + 2 * t + 1] = c[3];
}

// the last block to arrive (atomic ticket) sums every block's partial
extern "C" __global__ void ticket_sum(float* partial, int* counter, float* out) {
    __shared__ int s_last;
    if (threadIdx.x == 0) partial[blockIdx.x] = (float)(blockIdx.x + 1);
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(counter, 1) == (int)gridDim.x - 1;
    __syncthreads();
    if (!s_last) return;
    if (threadIdx.x == 0) {
        float t = 0.f;
        for (int b = 0; b < (int)gridDim.x; ++b) t += ld_cg_f32(partial + b);
        *out = t;
        *counter = 0;
    }
}

// the same without the ticket: takes the highest block to be the last to run (a GPU runs
// blocks in no set order)
extern "C" __global__ void highest_block_sums(float* partial, float* out) {
    if (threadIdx.x == 0) partial[blockIdx.x] = (float)(blockIdx.x + 1);
    if (blockIdx.x != gridDim.x - 1 || threadIdx.x != 0) return;
    float t = 0.f;
    for (int b = 0; b < (int)gridDim.x; ++b) t += partial[b];
    *out = t;
}

// each thread reads what the mirror thread wrote: needs the barrier
extern "C" __global__ void mirror(float* out, int with_barrier) {
    __shared__ float s[64];
    s[threadIdx.x] = (float)threadIdx.x;
    if (with_barrier) __syncthreads();
    out[threadIdx.x] = s[63 - threadIdx.x];
}

// ---- bugs ----
extern "C" __global__ void early_return_then_barrier(float* out) {
    if (threadIdx.x == 5) return;
    __syncthreads();
    out[threadIdx.x] = 1.f;
}
extern "C" __global__ void shuffle_in_a_short_warp(float* out) {
    out[threadIdx.x] = warp_sum(1.f);
}
extern "C" __global__ void barrier_against_shuffle(float* out) {
    if (threadIdx.x < 16) __syncthreads();   // half a warp at the barrier,
    else out[0] = warp_sum(1.f);            // the other half waiting for it in a shuffle
}
extern "C" __global__ void misaligned_stream(const bf16_t* w, float* out) {
    out[0] = bf16lo(ld_stream(reinterpret_cast<const uint4*>(w + 1)).x);
}
extern "C" __global__ void int_overflow(const float* x, float* out, int rows, int cols) {
    const int i = rows * cols;  // rows * cols past 2^31: the product needs (size_t)
    out[0] = x[i & 7];
}
extern "C" __global__ void write_past_the_end(float* out, int n) {
    out[threadIdx.x] = 2.f;  // launched with more threads than n
}

// ---- PDL: what griddepcontrol.wait guards ----
extern "C" __global__ void pdl_fill(float* x, float v) {
    pdl_launch_dependents();
    pdl_wait();
    x[threadIdx.x] = v;
}
extern "C" __global__ void pdl_add_one(const float* x, float* y, int read_early) {
    float v = read_early ? x[threadIdx.x] : 0.f;  // early: may be the value before pdl_fill's
    pdl_launch_dependents();
    pdl_wait();
    if (!read_early) v = x[threadIdx.x];
    y[threadIdx.x] = v + 1.f;
}
extern "C" __global__ void pdl_zero_early(float* ws) {
    ws[threadIdx.x] = 0.f;  // a workspace an earlier kernel may still be reading
    pdl_launch_dependents();
    pdl_wait();
}
'''
EXPORTS = ["block_total", "reverse", "one_mma", "ticket_sum", "highest_block_sums", "mirror",
           "early_return_then_barrier", "shuffle_in_a_short_warp", "barrier_against_shuffle", "misaligned_stream", "int_overflow",
           "write_past_the_end", "pdl_fill", "pdl_add_one", "pdl_zero_early"]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return Library(build_library("emulator_selftest", SOURCE, EXPORTS, tmp_path_factory.mktemp("emu")), EXPORTS)


def ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


def bf16_bits(a: np.ndarray) -> np.ndarray:
    b = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def widen(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def test_block_sum_across_warps_and_blocks(lib):
    out = np.zeros(3, np.float32)
    lib.call("block_total", (3,), (256,), ptr(out))
    assert out.tolist() == [256 * 255 / 2] * 3


def test_dynamic_shared_memory_through_a_barrier(lib):
    x = np.arange(1000, dtype=np.float32)
    out = np.zeros_like(x)
    lib.call("reverse", (1,), (128,), ptr(x), ptr(out), ctypes.c_int(1000), smem=4000)
    assert (out == x[::-1]).all()


def test_mma_follows_the_ptx_fragment_layout(lib):
    rng = np.random.default_rng(0)
    A, B, C = rng.standard_normal((16, 16)), rng.standard_normal((16, 8)), rng.standard_normal((16, 8)).astype(np.float32)
    a_bits, bt_bits = bf16_bits(A), np.ascontiguousarray(bf16_bits(B).T)
    ref = widen(a_bits) @ widen(bt_bits).T + C
    D = np.zeros((16, 8), np.float32)
    lib.call("one_mma", (1,), (32,), ptr(a_bits), ptr(bt_bits), ptr(C), ptr(D))
    np.testing.assert_allclose(D, ref, rtol=1e-5, atol=1e-5)


def test_atomic_ticket_lets_the_last_block_finish(lib):
    partial, counter, out = np.zeros(7, np.float32), np.zeros(1, np.int32), np.zeros(1, np.float32)
    lib.call("ticket_sum", (7,), (64,), ptr(partial), ptr(counter), ptr(out))
    assert out[0] == 28 and counter[0] == 0


def test_blocks_run_in_no_set_order(lib):
    sums, tickets = [], []
    for _ in range(3):  # launches take turns: ascending, descending, strided
        partial, out = np.zeros(7, np.float32), np.zeros(1, np.float32)
        lib.call("highest_block_sums", (7,), (32,), ptr(partial), ptr(out))
        sums.append(out[0])
        partial, counter, out = np.zeros(7, np.float32), np.zeros(1, np.int32), np.zeros(1, np.float32)
        lib.call("ticket_sum", (7,), (64,), ptr(partial), ptr(counter), ptr(out))
        tickets.append(out[0])
    assert tickets == [28] * 3 and 28 in sums and sums != [28] * 3


def test_a_missing_barrier_shows(lib):
    want = np.arange(64, dtype=np.float32)[::-1]
    results = []
    for with_barrier in (0, 0, 1, 1):  # two launches each: threads run forward, then in reverse
        out = np.zeros(64, np.float32)
        lib.call("mirror", (1,), (64,), ptr(out), ctypes.c_int(with_barrier))
        results.append(np.array_equal(out, want))
    assert results[2:] == [True, True] and not all(results[:2])


@pytest.mark.parametrize("kernel,block,args,expect", [
    ("early_return_then_barrier", 64, 1, "returned"),
    ("shuffle_in_a_short_warp", 16, 1, "16 live lanes"),
    ("barrier_against_shuffle", 32, 1, "deadlock"),
    ("misaligned_stream", 32, 2, "ld_stream: address not 16-byte aligned"),
])
def test_undefined_behaviour_stops_the_launch(lib, kernel, block, args, expect):
    buf = np.zeros(64, np.float32)
    with pytest.raises(KernelFault, match=expect):
        lib.call(kernel, (1,), (block,), *[ptr(buf)] * args)


def test_signed_overflow_names_the_line(lib):
    x, out = np.zeros(8, np.float32), np.zeros(1, np.float32)
    with pytest.raises(KernelFault, match=r"signed integer overflow in \* at emulator_selftest.cu:\d+"):
        lib.call("int_overflow", (1,), (1,), ptr(x), ptr(out), ctypes.c_int(70000), ctypes.c_int(40000))


def test_guard_zones_catch_a_write_past_the_end(lib):
    mem = Memory()
    p = mem.alloc(4 * 10)
    lib.call("write_past_the_end", (1,), (10,), ctypes.c_void_p(p), ctypes.c_int(10))
    mem.check_guards("in bounds")
    lib.call("write_past_the_end", (1,), (11,), ctypes.c_void_p(p), ctypes.c_int(10))
    with pytest.raises(AssertionError, match="past the end"):
        mem.check_guards("write_past_the_end")


@pytest.fixture
def device_mem(lib):
    if not lib.hazards_supported:
        pytest.skip("the PDL hazard check needs x86-64 Linux (the trap flag)")
    return Memory()


def test_pdl_a_read_before_the_wait_of_what_the_chain_wrote_stops_the_launch(lib, device_mem):
    mem = device_mem
    x, y = mem.alloc(4 * 64, device=True), mem.alloc(4 * 64, device=True)
    tracked = list(mem.device_pages.values())
    written = lib.launch_with(mem, "pdl_fill", (1,), (64,), [], ctypes.c_void_p(x), ctypes.c_float(3.0))
    assert written == [(x, x + 4 * 64)]  # exactly the bytes it changed
    with pytest.raises(KernelFault, match="before griddepcontrol.wait") as fault:
        lib.launch_with(mem, "pdl_add_one", (1,), (64,), written, ctypes.c_void_p(x), ctypes.c_void_p(y),
                        ctypes.c_int(1))
    at = int(re.search(r"touched (0x[0-9a-f]+)", str(fault.value)).group(1), 16)
    assert x <= at < x + 4 * 64  # a thread's x[i] (threads run forward or in reverse)
    # after the wait the same read is fine, and what it changed comes back
    mem.view(y, 4 * 64, np.float32)[:] = 0.0
    written = lib.launch_with(mem, "pdl_add_one", (1,), (64,), written, ctypes.c_void_p(x), ctypes.c_void_p(y),
                              ctypes.c_int(0))
    assert (mem.view(y, 4 * 64, np.float32) == 4.0).all() and written == [(y, y + 4 * 64)]
    assert tracked == list(mem.device_pages.values())


def test_pdl_other_bytes_of_a_page_the_chain_wrote_stay_readable(lib, device_mem):
    mem = device_mem
    x, y = mem.alloc(4 * 128, device=True), mem.alloc(4 * 64, device=True)
    mem.view(x, 4 * 128, np.float32)[:] = 2.0
    elsewhere = [(x + 4 * 64, x + 4 * 128)]  # same page as x[0:64], which the kernel reads early
    lib.launch_with(mem, "pdl_add_one", (2,), (64,), elsewhere, ctypes.c_void_p(x), ctypes.c_void_p(y), ctypes.c_int(1))
    assert (mem.view(y, 4 * 64, np.float32) == 3.0).all()


def test_pdl_a_write_before_the_wait_stops_the_launch(lib, device_mem):
    mem = device_mem
    ws = mem.alloc(4 * 64, device=True)
    with pytest.raises(KernelFault, match="wrote 0x[0-9a-f]+ before griddepcontrol.wait: an earlier kernel"):
        lib.launch_with(mem, "pdl_zero_early", (1,), (64,), [], ctypes.c_void_p(ws))
    # launched without PDL its wait returns at once: nothing to check
    mem.view(ws, 4 * 64, np.float32)[:] = 1.0
    arg = ctypes.c_void_p(ws)
    packed = (ctypes.c_void_p * 1)(ctypes.addressof(arg))
    written = lib.launch("pdl_zero_early", (1,), (64,), 0, ctypes.addressof(packed),
                         hazards=(list(mem.device_pages.values()), [], False))
    assert written == [(ws, ws + 4 * 64)]

// CUDA C on the CPU: enough of the language and the device runtime to run the project's own
// kernels (services/runtime/backends/cuda/kernels) unmodified, for tests on machines without
// a GPU. build.py pre-includes this header into each kernel file and compiles it with g++.
//
// Execution model. A launch runs its blocks one after another, in an order that changes from
// launch to launch (scheduler.h block_order); the threads of a block are fibers on one OS
// thread (a six-register stack switch on x86-64, ucontext elsewhere), switched only where CUDA threads synchronize:
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
//
// PDL: a launch can be run with the memory that earlier kernels of its chain wrote closed to
// each block until its threads reach griddepcontrol.wait (pdl_hazards.h; fake_driver.py asks).
//
// The parts: language.h (keywords, types, math), scheduler.h (fibers, barriers, warp
// collectives, the launch), pdl_hazards.h (what griddepcontrol.wait guards), device_runtime.h
// (what kernels call), ptx_cpu.h (ptx.cuh's functions), ubsan.h (the handlers).
#pragma once

#include "language.h"
#include "scheduler.h"
#include "device_runtime.h"
#include "ptx_cpu.h"
#include "ubsan.h"

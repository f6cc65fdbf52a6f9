// SwiGLU: out[t, i] = silu(gate[t, i]) * up[t, i], gate_up rows = gate (F) | up (F).
#include "common.cuh"

// grid-stride over T*F, block 256.
extern "C" __global__ void swiglu(const float* __restrict__ gate_up, float* __restrict__ out, int T, int F) {
    pdl_launch_dependents();
    pdl_wait();
    const long long n = (long long)T * F;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const long long t = i / F, f = i - t * F;
        const float g = gate_up[t * 2 * F + f], u = gate_up[t * 2 * F + F + f];
        out[i] = g / (1.f + expf(-g)) * u;
    }
}

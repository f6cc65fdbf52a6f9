// Token embedding: out[t] = table[ids[t]] as fp32 (the residual stream starts here); and the
// row gather a padded prefill graph uses to pick its last valid row.
#include "common.cuh"

// grid (T), block 128. `ids` may point at DecodeState::token (offset 0) in a decode graph.
extern "C" __global__ void WNAME(embedding)(const w16_t* __restrict__ table, const int* __restrict__ ids,
                                     float* __restrict__ out, int D, int V) {
    pdl_launch_dependents();
    pdl_wait();
    const int t = blockIdx.x;
    const int id = ids[t];
    float* o = out + (size_t)t * D;
    if (id < 0 || id >= V) {  // the host validates ids; never read outside the table
        for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = 0.f;
        return;
    }
    const w16_t* row = table + (size_t)id * D;
    if ((D & 7) == 0) {
        const uint4* r4 = reinterpret_cast<const uint4*>(row);
        float4* o4 = reinterpret_cast<float4*>(o);
        for (int c = threadIdx.x; c < (D >> 3); c += blockDim.x) {
            const uint4 w = r4[c];
            o4[2 * c] = make_float4(wlo(w.x), whi(w.x), wlo(w.y), whi(w.y));
            o4[2 * c + 1] = make_float4(wlo(w.z), whi(w.z), wlo(w.w), whi(w.w));
        }
    } else {
        for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = w_to_f32(row[i]);
    }
}

#if !INLOOP_WEIGHTS_F16  // reads no weight: built once
// dst[0, :] = src[st->rows - 1, :]. grid (1), block 256.
extern "C" __global__ void select_row(const float* __restrict__ src, float* __restrict__ dst,
                                      const DecodeState* __restrict__ st, int D, int max_rows) {
    pdl_launch_dependents();
    pdl_wait();
    const int row = min(max(st->rows, 1), max_rows) - 1;
    for (int i = threadIdx.x; i < D; i += blockDim.x) dst[i] = src[(size_t)row * D + i];
}

// dst[r, :] = src[rows[r], :] (a batched step's rows whose logits are wanted). grid (R), block 256.
extern "C" __global__ void gather_rows(const float* __restrict__ src, const int* __restrict__ rows,
                                       float* __restrict__ dst, int D, int n_src) {
    pdl_launch_dependents();
    pdl_wait();
    const int row = rows[blockIdx.x];
    if (row < 0 || row >= n_src) return;
    for (int i = threadIdx.x; i < D; i += blockDim.x) dst[(size_t)blockIdx.x * D + i] = src[(size_t)row * D + i];
}
#endif

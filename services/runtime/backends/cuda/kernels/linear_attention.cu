// Qwen3.5's Gated DeltaNet layers and the extras of its gated full-attention layers, as
// NumpyLinearAttention (backends/cpu/linear_attention.py) computes them. fp32 activations and
// state; the layers' small parameters (conv taps, -exp(A_log), dt_bias, the gated norm's
// weight) are fp32 too (uploaded as they are: no 16-bit weight is read here, so the file is
// built once, not twice like compiler.WEIGHT_FILES).
//
//   gdn_conv           silu(causal depthwise conv1d) over each sequence's rows, from and into
//                      its conv state slot [C, K-1]
//   gdn_decay_beta     g = -exp(A_log) * softplus(a + dt_bias), beta = sigmoid(b)
//   gdn_recurrence     the gated delta rule, token by token, each sequence from and into its
//                      recurrent state slot [Hv, dk, dv] (decode: one row; prefill: a chunk)
//   gdn_gated_rmsnorm  rmsnorm(o) * w * silu(z) per value head
//   partial_rope       rotate-half RoPE on the first rotary_dim dims of each q and k head
//   output_gate        attn * sigmoid(gate)
//
// A sequence is a span (first row, rows, state slot) of an int32 [n, 3] array: one launch
// serves the decode rows of many sequences, or one prefill chunk, or both. A slot's state lies
// at state + slot * slot_stride (elements), so the same kernels read one sequence's
// [layers, ...] state or a pool's [slots, layers, ...] (the launcher points at the layer).
#include "common.cuh"

#define CONV_TAPS 4  // taps the kernel holds; a shorter conv is left-padded with zero taps
#define CONV_ROWS 8  // rows per thread in gdn_conv
#define GDN_COLS 32  // value columns per gdn_recurrence block: a lane each
#define GDN_MAX_WARPS 8  // dk <= 256: a warp per 32 key rows

// numpy's order (no contraction into fma): out = x0*w0, then out = out + xj*wj.
__device__ __forceinline__ float mul_add_rn(float acc, float a, float b) { return __fadd_rn(acc, __fmul_rn(a, b)); }

// ---- causal conv1d ---------------------------------------------------------------------------
// grid (ceil(C/128), spans, ceil(max rows / CONV_ROWS)), block 128: a thread per (channel,
// span, CONV_ROWS rows). Each output row needs only the K-1 inputs before it (from x, or the
// old state before the span's first row), so the rows run in parallel; the old state is read
// by the span's first chunk alone, and that same thread writes the new one (the last K-1
// inputs) after its reads, so no other thread can see it half written.
extern "C" __global__ void __launch_bounds__(128) gdn_conv(const float* __restrict__ x, const float* __restrict__ w,
                                                           float* __restrict__ state, const int* __restrict__ spans,
                                                           float* __restrict__ out, int C, int K,
                                                           long long slot_stride) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    float tap[CONV_TAPS];  // tap CONV_TAPS-1 meets the current input (weight[:, K-1])
#pragma unroll
    for (int j = 0; j < CONV_TAPS; ++j) {
        const int src = j - (CONV_TAPS - K);
        tap[j] = c < C && src >= 0 ? w[(size_t)c * K + src] : 0.f;
    }
    pdl_launch_dependents();
    pdl_wait();
    if (c >= C) return;
    const int row0 = spans[3 * blockIdx.y], n = spans[3 * blockIdx.y + 1], slot = spans[3 * blockIdx.y + 2];
    const int first = blockIdx.z * CONV_ROWS;
    if (first >= n) return;
    float* st = state + slot * slot_stride + (size_t)c * (K - 1);
    // win[h]: the input at span row first - (CONV_TAPS-1) + h; before row 0 it is the state's
    float win[CONV_TAPS - 1 + CONV_ROWS];
#pragma unroll
    for (int h = 0; h < CONV_TAPS - 1 + CONV_ROWS; ++h) {
        const int rel = first - (CONV_TAPS - 1) + h;
        win[h] = rel >= n ? 0.f : rel >= 0 ? x[(size_t)(row0 + rel) * C + c] : rel >= -(K - 1) ? st[K - 1 + rel] : 0.f;
    }
    float keep[CONV_TAPS - 1];  // the new state: the span's last K-1 inputs
    const bool writes_state = blockIdx.z == 0;
    if (writes_state) {
#pragma unroll
        for (int i = 0; i < CONV_TAPS - 1; ++i) {
            const int rel = n - (K - 1) + i;
            keep[i] = i >= K - 1 ? 0.f : rel >= 0 ? x[(size_t)(row0 + rel) * C + c] : st[K - 1 + rel];
        }
    }
#pragma unroll
    for (int r = 0; r < CONV_ROWS; ++r) {
        if (first + r >= n) break;
        float acc = __fmul_rn(win[r], tap[0]);
#pragma unroll
        for (int j = 1; j < CONV_TAPS; ++j) acc = mul_add_rn(acc, win[r + j], tap[j]);
        out[(size_t)(row0 + first + r) * C + c] = silu(acc);
    }
    if (writes_state) {
#pragma unroll
        for (int i = 0; i < CONV_TAPS - 1; ++i)
            if (i < K - 1) st[i] = keep[i];
    }
}

// ---- decay and write strength ------------------------------------------------------------------
// g = neg_a[h] * softplus(a + dt_bias[h]) (torch's softplus: x itself above 20), beta = sigmoid(b);
// a, b, g, beta [n / H, H]. Grid-stride, block 256.
extern "C" __global__ void gdn_decay_beta(const float* __restrict__ a, const float* __restrict__ b,
                                          const float* __restrict__ neg_a, const float* __restrict__ dt_bias,
                                          float* __restrict__ g, float* __restrict__ beta, int n, int H) {
    pdl_launch_dependents();
    pdl_wait();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int h = i % H;
        const float x = a[i] + dt_bias[h];
        g[i] = neg_a[h] * (x > 20.f ? x : log1pf(expf(x)));
        beta[i] = 1.f / (1.f + expf(-b[i]));
    }
}

// ---- the gated delta rule ------------------------------------------------------------------------
// grid (ceil(dv/32), v_heads, spans), block 32 * ceil(dk/32): lane = value column, warp w = key
// rows [32w, 32w+32). Each thread keeps its 32 state entries S[rows, column] in registers for the
// whole span and runs the step of NumpyLinearAttention.gated_delta_step per token:
//
//   d = exp(g); q, k l2-normed (q also * dk^-1/2); qs = q.S, ks = k.S (over the key rows)
//   delta = (v - d ks) beta;  o = d qs + (q.k) delta;  S = d S + k (x) delta
//
// The key-row sums are per-warp partials merged in warp order through shared memory (one
// barrier per token, the buffers alternating by token parity), so every result is the same
// for every launch shape of the same dk. qkv is the conv output [T, 2 k_heads dk + v_heads dv]
// (q | k | v); each q/k head serves v_heads / k_heads consecutive value heads. out [T, Hv, dv].
extern "C" __global__ void __launch_bounds__(256) gdn_recurrence(
    const float* __restrict__ qkv, const float* __restrict__ g, const float* __restrict__ beta,
    float* __restrict__ state, const int* __restrict__ spans, float* __restrict__ out, int k_heads, int v_heads,
    int dk, int dv, float scale, long long slot_stride) {
    __shared__ float rows_qk[2][GDN_MAX_WARPS * 32];           // this token's normed q, k by key row
    __shared__ float partial[2][2][GDN_MAX_WARPS][GDN_COLS];   // [parity][q.S, k.S][warp][column]
    pdl_launch_dependents();
    pdl_wait();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int h = blockIdx.y, col = blockIdx.x * GDN_COLS + lane, r0 = warp * 32;
    const int row0 = spans[3 * blockIdx.z], n = spans[3 * blockIdx.z + 1], slot = spans[3 * blockIdx.z + 2];
    if (n <= 0) return;  // a padding span of a bucket graph: its slot is some other span's, left alone
    const int kd = k_heads * dk, stride = 2 * kd + v_heads * dv, kh = h / (v_heads / k_heads);
    const bool live = col < dv;
    float* S = state + slot * slot_stride + (size_t)h * dk * dv + col;
    float s[32];
#pragma unroll
    for (int r = 0; r < 32; ++r) s[r] = live && r0 + r < dk ? S[(size_t)(r0 + r) * dv] : 0.f;

    for (int t = 0; t < n; ++t) {
        const size_t row = (size_t)row0 + t;
        const float* q = qkv + row * stride + (size_t)kh * dk;
        const float* k = q + kd;
        const float d = expf(g[row * v_heads + h]), b = beta[row * v_heads + h];
        const float v = live ? qkv[row * stride + 2 * kd + (size_t)h * dv + col] : 0.f;
        const float q_row = r0 + lane < dk ? q[r0 + lane] : 0.f, k_row = r0 + lane < dk ? k[r0 + lane] : 0.f;
        float ssq = 0.f, ssk = 0.f;
        for (int i = lane; i < dk; i += 32) {
            ssq = fmaf(q[i], q[i], ssq);
            ssk = fmaf(k[i], k[i], ssk);
        }
        const float nq = sqrtf(warp_sum(ssq) + 1e-6f), nk = sqrtf(warp_sum(ssk) + 1e-6f);
        float qk = 0.f;  // (q / |q| scale) . (k / |k|), every warp alike
        for (int i = lane; i < dk; i += 32) qk = fmaf(q[i] / nq * scale, k[i] / nk, qk);
        qk = warp_sum(qk);
        __syncwarp();  // the previous token's reads of this warp's rows are done
        rows_qk[0][r0 + lane] = q_row / nq * scale;
        rows_qk[1][r0 + lane] = k_row / nk;
        __syncwarp();
        float qs = 0.f, ks = 0.f;
#pragma unroll
        for (int r = 0; r < 32; ++r) {
            qs = fmaf(rows_qk[0][r0 + r], s[r], qs);
            ks = fmaf(rows_qk[1][r0 + r], s[r], ks);
        }
        const int par = t & 1;
        partial[par][0][warp][lane] = qs;
        partial[par][1][warp][lane] = ks;
        __syncthreads();
        qs = ks = 0.f;
        for (int w = 0; w < warps; ++w) {
            qs += partial[par][0][w][lane];
            ks += partial[par][1][w][lane];
        }
        const float delta = (v - d * ks) * b;
        if (warp == 0 && live) out[(row * v_heads + h) * dv + col] = d * qs + qk * delta;
#pragma unroll
        for (int r = 0; r < 32; ++r) s[r] = fmaf(rows_qk[1][r0 + r], delta, s[r] * d);
    }
#pragma unroll
    for (int r = 0; r < 32; ++r)
        if (live && r0 + r < dk) S[(size_t)(r0 + r) * dv] = s[r];
}

// ---- gated RMSNorm ---------------------------------------------------------------------------------
// out = w * (x / sqrt(mean(x^2) + eps)) * silu(z) over each row of D (a value head).
// grid (ceil(rows/4)), block 128: a warp per row.
extern "C" __global__ void gdn_gated_rmsnorm(const float* __restrict__ x, const float* __restrict__ z,
                                             const float* __restrict__ w, float* __restrict__ out, int rows, int D,
                                             float eps) {
    pdl_launch_dependents();
    pdl_wait();
    const int row = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* xr = x + (size_t)row * D;
    const float* zr = z + (size_t)row * D;
    float ss = 0.f;
    for (int i = lane; i < D; i += 32) ss = fmaf(xr[i], xr[i], ss);
    const float r = sqrtf(warp_sum(ss) / (float)D + eps);
    for (int i = lane; i < D; i += 32) out[(size_t)row * D + i] = w[i] * (xr[i] / r) * silu(zr[i]);
}

// ---- partial RoPE ------------------------------------------------------------------------------------
// In place on qkv [T, (H + 2 KVH) hd]: rotate-half on dims [0, rd) of each q and k head, pairs
// (i, i + rd/2); the rest pass. inv_freq = 1 / theta^(2i/rd) with the exponent a float32
// quotient and the power taken in double, rounded once (the reference's own steps).
// grid (T, ceil((H + KVH)/4)), block 128: a warp per (row, head).
extern "C" __global__ void partial_rope(float* __restrict__ qkv, const int* __restrict__ positions, int H, int KVH,
                                        int hd, int rd, float theta) {
    pdl_launch_dependents();
    pdl_wait();
    const int lane = threadIdx.x & 31, half = rd >> 1;
    const int t = blockIdx.x, hh = blockIdx.y * 4 + (threadIdx.x >> 5);
    if (hh >= H + KVH) return;
    float* head = qkv + (size_t)t * (H + 2 * KVH) * hd + (size_t)hh * hd;
    const float pos = (float)positions[t];
#pragma unroll 1  // one copy of pow and sincosf (their slow paths are most of the code)
    for (int i = lane; i < half; i += 32) {
        const float inv_freq = 1.f / (float)pow((double)theta, (double)((float)(2 * i) / (float)rd));
        float sn, cs;
        sincosf(pos * inv_freq, &sn, &cs);
        const float a = head[i], b = head[i + half];
        head[i] = __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn));
        head[i + half] = __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn));
    }
}

// ---- output gate -----------------------------------------------------------------------------------
// out = attn * sigmoid(gate), n elements. Grid-stride, block 256.
extern "C" __global__ void output_gate(const float* __restrict__ attn, const float* __restrict__ gate,
                                       float* __restrict__ out, int n) {
    pdl_launch_dependents();
    pdl_wait();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = attn[i] * (1.f / (1.f + expf(-gate[i])));
}

// In-place RoPE and qwen3 q/k norm over the q and k heads of qkv [T, qkv_stride].
// The k heads follow the q heads, so head hh < H+KVH starts at column hh*hd either way.
// With ROPE_FLAG_STORE (the prefill graph, the batching core's steps) it is also the KV
// store: the k heads, once roped, and the v heads (hh in [H+KVH, H+2KVH)) go to the bf16
// cache at their positions, or at `slots` (the paged pool's slot of each row) when given, one
// launch fewer per layer than rope_qknorm + kv_store.
#include "rope.cuh"

// grid (T, ceil(heads/4)), block 128: one warp per (token, head); heads = H+KVH, or H+2KVH
// with ROPE_FLAG_STORE. The cache (pointers, capacity) comes from `st` when given. The
// rotation's cos/sin come from `rope_cs` (a rope_table of rope_rows positions: the prefill
// graph's) when given, else are computed here from `theta` (the op path).
extern "C" __global__ void WNAME(rope_qknorm)(float* __restrict__ qkv, const int* __restrict__ positions,
                                       const w16_t* __restrict__ q_norm_w, const w16_t* __restrict__ k_norm_w,
                                       bf16_t* kc, bf16_t* vc, const DecodeState* __restrict__ st,
                                       const float2* __restrict__ rope_cs, const int* __restrict__ slots,
                                       int H, int KVH, int hd, int qkv_stride,
                                       int cap, int layer, int rope_rows, float theta, float eps, int flags) {
    float inv_freq[4] = {0.f, 0.f, 0.f, 0.f};  // hd <= 256
    if (!rope_cs) lane_inv_freqs(inv_freq, hd, theta, flags);
    pdl_launch_dependents();
    pdl_wait();
    const bool store = flags & ROPE_FLAG_STORE;
    const int t = blockIdx.x, hh = blockIdx.y * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (hh >= H + (store ? 2 : 1) * KVH) return;
    float* head = qkv + (size_t)t * qkv_stride + (size_t)hh * hd;
    // qk_norm alone passes no positions
    const int pos = (flags & (ROPE_FLAG_ROPE | ROPE_FLAG_STORE)) ? positions[t] : 0;
    float2 cs[4];
    if (rope_cs) lane_table_cs(cs, rope_cs, pos, rope_rows, hd, flags);
    else if (flags & ROPE_FLAG_ROPE) lane_rope_cs(cs, pos, inv_freq);
    if (hh < H + KVH) warp_norm_rope_cs(head, head, hh < H ? q_norm_w : k_norm_w, hd, cs, eps, flags, 1.f);
    if (!store || hh < H) return;
    cache_from_state(st, kc, vc, cap);
    const int at = slots ? slots[t] : pos;
    if (at < 0 || at >= cap) return;  // a padded row
    const bool is_k = hh < H + KVH;
    const int kvh = is_k ? hh - H : hh - H - KVH;
    bf16_t* dst = (is_k ? kc : vc) + (((size_t)layer * KVH + kvh) * cap + at) * hd;
    for (int d = lane; d < hd; d += 32) dst[d] = f32_to_bf16(head[d]);  // after warp_norm_rope_cs's __syncwarp
}

// The rotation's (cos, sin) for positions [0, rows): tab[p * hd/2 + i] = (cos, sin) of
// p * inv_freq_i, bit for bit what lane_rope_cs computes inline. A decode graph builds one
// and its attention kernel reads the row at `pos` instead of running the double-precision
// power and sincosf, code that a batch-1 launch would fetch cold every time.
// grid (rows), block 64.
#if !INLOOP_WEIGHTS_F16  // reads no weight: built once
extern "C" __global__ void rope_table(float2* __restrict__ tab, int rows, int hd, float theta) {
    const int half = hd >> 1, p = blockIdx.x;
    if (p >= rows) return;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float s, c;
        sincosf((float)p * rope_inv_freq(i, hd, theta), &s, &c);
        tab[(size_t)p * half + i] = make_float2(c, s);
    }
}
#endif

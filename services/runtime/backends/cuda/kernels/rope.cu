// In-place RoPE and qwen3 q/k norm over the q and k heads of qkv [T, qkv_stride].
// The k heads follow the q heads, so head hh < H+KVH starts at column hh*hd either way.
#include "rope.cuh"

// grid (T, ceil((H+KVH)/4)), block 128: one warp per (token, head).
extern "C" __global__ void WNAME(rope_qknorm)(float* __restrict__ qkv, const int* __restrict__ positions,
                                       const w16_t* __restrict__ q_norm_w, const w16_t* __restrict__ k_norm_w,
                                       int H, int KVH, int hd, int qkv_stride, float theta, float eps, int flags) {
    float inv_freq[4];  // hd <= 256
    lane_inv_freqs(inv_freq, hd, theta, flags);
    pdl_launch_dependents();
    pdl_wait();
    const int t = blockIdx.x, hh = blockIdx.y * 4 + (threadIdx.x >> 5);
    if (hh >= H + KVH) return;
    float* head = qkv + (size_t)t * qkv_stride + (size_t)hh * hd;
    const int pos = (flags & ROPE_FLAG_ROPE) ? positions[t] : 0;  // qk_norm alone passes no positions
    warp_norm_rope(head, head, hh < H ? q_norm_w : k_norm_w, pos, hd, inv_freq, eps, flags, 1.f);
}

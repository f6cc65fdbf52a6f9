// Weight upload: raw safetensors bytes land in a pinned staging buffer, are copied to the GPU
// as-is, and are converted to the storage type (bf16, or fp16 for fp16 models) here, so the
// host never loops over the weights.
#include "common.cuh"

// fp32 -> 16 bits: grid-stride, 4 elements per thread per step; n need not be a multiple of 4.
template <u32 (*PACK2)(float, float), unsigned short (*ONE)(float)>
__device__ __forceinline__ void convert_from_f32(const float* __restrict__ src, unsigned short* __restrict__ dst,
                                                 long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x * 4;
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 4; i < n; i += stride) {
        if (i + 3 < n) {
            const float4 v = *reinterpret_cast<const float4*>(src + i);
            *reinterpret_cast<uint2*>(dst + i) = make_uint2(PACK2(v.x, v.y), PACK2(v.z, v.w));
        } else {
            for (long long j = i; j < n; ++j) dst[j] = ONE(src[j]);
        }
    }
}

extern "C" __global__ void convert_f32_bf16(const float* __restrict__ src, bf16_t* __restrict__ dst, long long n) {
    convert_from_f32<pack_bf16x2, f32_to_bf16>(src, dst, n);
}

extern "C" __global__ void convert_f16_bf16(const unsigned short* __restrict__ src, bf16_t* __restrict__ dst,
                                            long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = f32_to_bf16(f16_to_f32(src[i]));
}

// For fp16 models: fp32 (and, rarely, bf16) tensors stored as fp16.
extern "C" __global__ void convert_f32_f16(const float* __restrict__ src, w16_t* __restrict__ dst, long long n) {
    convert_from_f32<pack_f16x2, f32_to_f16>(src, dst, n);
}

extern "C" __global__ void convert_bf16_f16(const bf16_t* __restrict__ src, w16_t* __restrict__ dst, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = f32_to_f16(bf16_to_f32(src[i]));
}

// fp32 -> fp32 "conversion" is a copy; bf16 -> fp32 widens (used for debugging dumps).
extern "C" __global__ void convert_bf16_f32(const bf16_t* __restrict__ src, float* __restrict__ dst, long long n) {
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = bf16_to_f32(src[i]);
}

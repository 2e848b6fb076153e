// convert.hip: float32 <-> bf16 over flat arrays. Weights live as float32 masters during training and are
// mirrored to bf16 for the GEMMs; checkpoints arrive in either. Rounding is to nearest even, as in PyTorch, so a
// bf16 copy made here matches one made by the C# side (Arwkv.Kernels.Convert) bit for bit.
#include "common.h"

__global__ void convert_f32_to_bf16_kernel(bf16* out, const float* in, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = float_to_bf16(in[i]);
}

__global__ void convert_bf16_to_f32_kernel(float* out, const bf16* in, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = bf16_to_float(in[i]);
}

extern "C" int32_t arwkv_convert_f32_to_bf16(uint16_t* out, const float* in, int64_t n, void* stream) {
    ARWKV_REQUIRE(out != nullptr && in != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    const int block = 256;
    hipLaunchKernelGGL(convert_f32_to_bf16_kernel, dim3(elementwise_blocks(n, block)), dim3(block), 0,
                       as_stream(stream), reinterpret_cast<bf16*>(out), in, n);
    return arwkv_check_launch("convert_f32_to_bf16_kernel");
}

extern "C" int32_t arwkv_convert_bf16_to_f32(float* out, const uint16_t* in, int64_t n, void* stream) {
    ARWKV_REQUIRE(out != nullptr && in != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    const int block = 256;
    hipLaunchKernelGGL(convert_bf16_to_f32_kernel, dim3(elementwise_blocks(n, block)), dim3(block), 0,
                       as_stream(stream), out, reinterpret_cast<const bf16*>(in), n);
    return arwkv_check_launch("convert_bf16_to_f32_kernel");
}

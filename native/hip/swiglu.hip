// swiglu.hip: the elementwise middle of Qwen2.5's MLP, out = silu(gate) * up, silu(x) = x * sigmoid(x).
// The three projections around it are GEMMs (matmul.hip); gate and up are separate [N,F] tensors.
//   dgate += dout * up * s * (1 + gate * (1 - s)),  dup += dout * gate * s,  s = sigmoid(gate)
#include "common.h"

__global__ void swiglu_forward_kernel(float* out, const float* gate, const float* up, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

__global__ void swiglu_backward_kernel(float* dgate, float* dup, const float* dout, const float* gate,
                                       const float* up, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        const float s = 1.0f / (1.0f + expf(-g));
        const float dy = dout[i];
        dgate[i] += dy * up[i] * s * (1.0f + g * (1.0f - s));
        dup[i] += dy * g * s;
    }
}

extern "C" int32_t arwkv_swiglu_forward(float* out, const float* gate, const float* up, int64_t n, void* stream) {
    ARWKV_REQUIRE(out != nullptr && gate != nullptr && up != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(swiglu_forward_kernel, dim3(elementwise_blocks(n, 256)), dim3(256), 0, as_stream(stream), out,
                       gate, up, n);
    return arwkv_check_launch("swiglu_forward_kernel");
}

extern "C" int32_t arwkv_swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                                         const float* up, int64_t n, void* stream) {
    ARWKV_REQUIRE(dgate != nullptr && dup != nullptr && dout != nullptr && gate != nullptr && up != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(swiglu_backward_kernel, dim3(elementwise_blocks(n, 256)), dim3(256), 0, as_stream(stream),
                       dgate, dup, dout, gate, up, n);
    return arwkv_check_launch("swiglu_backward_kernel");
}

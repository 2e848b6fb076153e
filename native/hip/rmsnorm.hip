// rmsnorm.hip: Qwen2.5's RMSNorm (eps 1e-6, always float32), forward saving rstd and backward, one block per token.
//   out = x * rstd * weight,  rstd = 1 / sqrt(mean(x^2) + eps)
//   dx  = rstd * (dout*weight - x * rstd^2 * mean(dout*weight*x)),  dweight += dout * x * rstd
// The weight gradient is a column sum over all tokens: each block accumulates its tokens' share in registers
// and adds it once per column with an atomic, so the launch uses a fixed number of blocks that stride over tokens.
#include "common.h"

__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* inp, const float* weight, int C, float eps) {
    __shared__ float scratch[kMaxWarpsPerBlock];
    const int64_t n = blockIdx.x;
    const float* x = inp + n * C;
    float sum_sq = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) sum_sq += x[c] * x[c];
    sum_sq = block_reduce_sum(sum_sq, scratch);
    const float s = rsqrtf(sum_sq / C + eps);
    float* o = out + n * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = x[c] * s * weight[c];
    if (threadIdx.x == 0) rstd[n] = s;
}

// Each thread owns the columns c = threadIdx.x + k*blockDim.x; kMaxColumnsPerThread of them bounds C at
// kMaxColumnsPerThread * blockDim.x (16 * 1024 = 16384, above Qwen2.5-7B's 3584 and 32B's 5120).
constexpr int kMaxColumnsPerThread = 16;

__global__ void rmsnorm_backward_kernel(float* dinp, float* dweight, const float* dout, const float* inp,
                                        const float* weight, const float* rstd, int N, int C) {
    __shared__ float scratch[kMaxWarpsPerBlock];
    float dweight_acc[kMaxColumnsPerThread];
    for (int k = 0; k < kMaxColumnsPerThread; k++) dweight_acc[k] = 0.0f;
    for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
        const float* x = inp + n * C;
        const float* dy = dout + n * C;
        const float s = rstd[n];
        float dot = 0.0f;
        for (int c = threadIdx.x; c < C; c += blockDim.x) dot += dy[c] * weight[c] * x[c];
        dot = block_reduce_sum(dot, scratch) / C;
        float* dx = dinp + n * C;
        int k = 0;
        for (int c = threadIdx.x; c < C; c += blockDim.x, k++) {
            dx[c] += s * (dy[c] * weight[c] - x[c] * s * s * dot);
            dweight_acc[k] += dy[c] * x[c] * s;
        }
    }
    int k = 0;
    for (int c = threadIdx.x; c < C; c += blockDim.x, k++) atomicAdd(&dweight[c], dweight_acc[k]);
}

extern "C" int32_t arwkv_rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int32_t N,
                                         int32_t C, float eps, void* stream) {
    ARWKV_REQUIRE(out != nullptr && rstd != nullptr && inp != nullptr && weight != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0);
    ARWKV_REQUIRE(eps >= 0.0f);
    if (N == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(rmsnorm_forward_kernel, dim3(N), dim3(256), 0, as_stream(stream), out, rstd, inp, weight, C, eps);
    return arwkv_check_launch("rmsnorm_forward_kernel");
}

extern "C" int32_t arwkv_rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                                          const float* weight, const float* rstd, int32_t N, int32_t C,
                                          void* stream) {
    ARWKV_REQUIRE(dinp != nullptr && dweight != nullptr && dout != nullptr && inp != nullptr && weight != nullptr &&
                  rstd != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0);
    const int block = 1024;
    ARWKV_REQUIRE(C <= kMaxColumnsPerThread * block);
    if (N == 0) return ARWKV_HIP_OK;
    // A few hundred blocks fill an MI300X (304 CUs) while keeping the dweight atomics at blocks * C.
    const int blocks = N < 512 ? N : 512;
    hipLaunchKernelGGL(rmsnorm_backward_kernel, dim3(blocks), dim3(block), 0, as_stream(stream), dinp, dweight, dout,
                       inp, weight, rstd, N, C);
    return arwkv_check_launch("rmsnorm_backward_kernel");
}

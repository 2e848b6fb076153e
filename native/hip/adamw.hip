// adamw.hip: the optimizer step (ARWKV.md section 5: betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on matrices,
// gradient clipping at 1.0), as llm.c's adamw.cuh and global_norm.cuh.
// - arwkv_grad_norm_squared adds sum(grad^2) of one tensor into a device scalar: call it for every parameter
//   tensor, then every update reads the global norm from the device, so clipping never waits for the host.
// - arwkv_adamw_update keeps float32 master weights and moments and writes the bf16 copy the GEMMs read, in the
//   same pass (one read of each state, one write of each).
//     g = grad * clip;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//     w -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * w)
#include "common.h"

constexpr int kNormBlock = 512;

__global__ void __launch_bounds__(kNormBlock) grad_norm_squared_kernel(float* norm_sq, const float* grad, int64_t n) {
    __shared__ float scratch[kMaxWarpsPerBlock];
    float sum = 0.0f;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        sum += grad[i] * grad[i];
    sum = block_reduce_sum(sum, scratch);
    if (threadIdx.x == 0) atomicAdd(norm_sq, sum);
}

__global__ void adamw_update_kernel(float* master, bf16* bf16_copy, float* m, float* v, const float* grad, int64_t n,
                                    float learning_rate, float beta1, float beta2, float eps, float weight_decay,
                                    float bias_correction1, float bias_correction2, const float* grad_norm_sq,
                                    float max_grad_norm) {
    float clip = 1.0f;
    if (grad_norm_sq != nullptr) {
        const float norm = sqrtf(*grad_norm_sq);
        // The 1e-6 keeps a zero gradient from dividing by zero (torch's clip_grad_norm_ uses the same guard).
        if (norm > max_grad_norm) clip = max_grad_norm / (norm + 1e-6f);
    }
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = grad[i] * clip;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float m_hat = mi / bias_correction1;
        const float v_hat = vi / bias_correction2;
        const float w = master[i] - learning_rate * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * master[i]);
        master[i] = w;
        if (bf16_copy != nullptr) bf16_copy[i] = float_to_bf16(w);
    }
}

extern "C" int32_t arwkv_grad_norm_squared(float* norm_sq, const float* grad, int64_t n, void* stream) {
    ARWKV_REQUIRE(norm_sq != nullptr && grad != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    // Few blocks on purpose: each adds one atomic to the same scalar.
    int64_t blocks = (n + kNormBlock - 1) / kNormBlock;
    if (blocks > 1024) blocks = 1024;
    hipLaunchKernelGGL(grad_norm_squared_kernel, dim3(static_cast<unsigned int>(blocks)), dim3(kNormBlock), 0,
                       as_stream(stream), norm_sq, grad, n);
    return arwkv_check_launch("grad_norm_squared_kernel");
}

extern "C" int32_t arwkv_adamw_update(float* master, uint16_t* bf16_copy, float* m, float* v, const float* grad,
                                      int64_t n, float learning_rate, float beta1, float beta2, float eps,
                                      float weight_decay, int32_t step, const float* grad_norm_sq,
                                      float max_grad_norm, void* stream) {
    ARWKV_REQUIRE(master != nullptr && m != nullptr && v != nullptr && grad != nullptr);
    ARWKV_REQUIRE(n >= 0 && step >= 1);
    ARWKV_REQUIRE(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f);
    ARWKV_REQUIRE(grad_norm_sq == nullptr || max_grad_norm > 0.0f);
    if (n == 0) return ARWKV_HIP_OK;
    // Bias corrections in double on the host: beta^t for large t is where float32 loses digits.
    const float bias_correction1 = static_cast<float>(1.0 - pow(static_cast<double>(beta1), step));
    const float bias_correction2 = static_cast<float>(1.0 - pow(static_cast<double>(beta2), step));
    hipLaunchKernelGGL(adamw_update_kernel, dim3(elementwise_blocks(n, 256)), dim3(256), 0, as_stream(stream), master,
                       reinterpret_cast<bf16*>(bf16_copy), m, v, grad, n, learning_rate, beta1, beta2, eps,
                       weight_decay, bias_correction1, bias_correction2, grad_norm_sq, max_grad_norm);
    return arwkv_check_launch("adamw_update_kernel");
}

// losses.hip: the distillation losses of ARWKV.md section 5, each fused with its gradient (llm.c's
// fused_classifier idea: the [N,V] probabilities are never stored, since at V = 152064 they would cost more memory
// than the model's activations).
// - Stage 1 alignment: per token ||y_student - y_teacher||_2 / sqrt(C) (an L2 norm, not squared).
// - Stage 2 KL(teacher || student) at temperature 1, and stage 3 cross-entropy: one block per token reads its row of
//   logits in block-strided chunks twice: pass 1 finds each log-sum-exp with an online (running max, rescaled sum)
//   pair per thread, merged across the block; pass 2 writes the loss terms and the gradient.
//   dKL/dstudent = softmax(student) - softmax(teacher);  dCE/dlogits = softmax - onehot(target).
#include "common.h"

constexpr int kLossBlock = 256;

// ---- alignment -----------------------------------------------------------------------------------------------------

__global__ void alignment_loss_forward_kernel(float* losses, const float* student, const float* teacher, int C) {
    __shared__ float scratch[kMaxWarpsPerBlock];
    const int64_t n = blockIdx.x;
    float sum_sq = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float d = student[n * C + c] - teacher[n * C + c];
        sum_sq += d * d;
    }
    sum_sq = block_reduce_sum(sum_sq, scratch);
    if (threadIdx.x == 0) losses[n] = sqrtf(sum_sq / C);
}

__global__ void alignment_loss_backward_kernel(float* dstudent, const float* student, const float* teacher,
                                               const float* losses, float grad_scale, int C) {
    const int64_t n = blockIdx.x;
    // ||d|| sqrt(C) = loss * C, since loss = ||d|| / sqrt(C).
    const float denom = losses[n] * C;
    if (denom == 0.0f) return;  // the norm is not differentiable at 0; its subgradient 0 leaves dstudent as is
    const float scale = grad_scale / denom;
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dstudent[n * C + c] += scale * (student[n * C + c] - teacher[n * C + c]);
}

extern "C" int32_t arwkv_alignment_loss_forward(float* losses, const float* student, const float* teacher, int32_t N,
                                                int32_t C, void* stream) {
    ARWKV_REQUIRE(losses != nullptr && student != nullptr && teacher != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0);
    if (N == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(alignment_loss_forward_kernel, dim3(N), dim3(kLossBlock), 0, as_stream(stream), losses, student,
                       teacher, C);
    return arwkv_check_launch("alignment_loss_forward_kernel");
}

extern "C" int32_t arwkv_alignment_loss_backward(float* dstudent, const float* student, const float* teacher,
                                                 const float* losses, float grad_scale, int32_t N, int32_t C,
                                                 void* stream) {
    ARWKV_REQUIRE(dstudent != nullptr && student != nullptr && teacher != nullptr && losses != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0);
    if (N == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(alignment_loss_backward_kernel, dim3(N), dim3(kLossBlock), 0, as_stream(stream), dstudent,
                       student, teacher, losses, grad_scale, C);
    return arwkv_check_launch("alignment_loss_backward_kernel");
}

// ---- log-sum-exp over a row ----------------------------------------------------------------------------------------

// Online log-sum-exp of one row, strided over the block, merged across it: each thread keeps (max, sum of
// exp(x - max)) and rescales its sum whenever its max grows, so the row is read once and nothing overflows.
template <typename T>
__device__ float row_logsumexp(const T* row, int V, float* scratch) {
    float running_max = -INFINITY;
    float running_sum = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float x = load_as_float(row, i);
        if (x > running_max) {
            running_sum *= expf(running_max - x);
            running_max = x;
        }
        running_sum += expf(x - running_max);
    }
    const float block_max = block_reduce_max(running_max, scratch);
    const float scaled = running_max == -INFINITY ? 0.0f : running_sum * expf(running_max - block_max);
    const float block_sum = block_reduce_sum(scaled, scratch);
    return block_max + logf(block_sum);
}

// ---- KL(teacher || student) ----------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kLossBlock)
kl_forward_backward_kernel(float* losses, float* dstudent, const T* student_logits, const T* teacher_logits,
                           const int32_t* mask, float grad_scale, int V) {
    __shared__ float scratch[kMaxWarpsPerBlock];
    const int64_t n = blockIdx.x;
    float* drow = dstudent != nullptr ? dstudent + n * V : nullptr;
    if (mask != nullptr && mask[n] == 0) {
        if (threadIdx.x == 0) losses[n] = 0.0f;
        if (drow != nullptr)
            for (int i = threadIdx.x; i < V; i += blockDim.x) drow[i] = 0.0f;
        return;
    }
    const T* srow = student_logits + n * V;
    const T* trow = teacher_logits + n * V;
    const float lse_s = row_logsumexp(srow, V, scratch);
    const float lse_t = row_logsumexp(trow, V, scratch);
    float kl = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float log_ps = load_as_float(srow, i) - lse_s;
        const float log_pt = load_as_float(trow, i) - lse_t;
        const float pt = expf(log_pt);
        // A teacher probability of exactly 0 (a -inf logit, or underflow) contributes 0, not 0 * -inf = NaN.
        if (pt > 0.0f) kl += pt * (log_pt - log_ps);
        if (drow != nullptr) drow[i] = grad_scale * (expf(log_ps) - pt);
    }
    kl = block_reduce_sum(kl, scratch);
    if (threadIdx.x == 0) losses[n] = kl;
}

extern "C" int32_t arwkv_kl_forward_backward(float* losses, float* dstudent, const void* student_logits,
                                             const void* teacher_logits, int32_t dtype, const int32_t* mask,
                                             float grad_scale, int32_t N, int32_t V, void* stream) {
    ARWKV_REQUIRE(losses != nullptr && student_logits != nullptr && teacher_logits != nullptr);
    ARWKV_REQUIRE(is_dtype(dtype));
    ARWKV_REQUIRE(N >= 0 && V > 0);
    if (N == 0) return ARWKV_HIP_OK;
    if (dtype == ARWKV_HIP_F32)
        hipLaunchKernelGGL(kl_forward_backward_kernel<float>, dim3(N), dim3(kLossBlock), 0, as_stream(stream), losses,
                           dstudent, static_cast<const float*>(student_logits),
                           static_cast<const float*>(teacher_logits), mask, grad_scale, V);
    else
        hipLaunchKernelGGL(kl_forward_backward_kernel<bf16>, dim3(N), dim3(kLossBlock), 0, as_stream(stream), losses,
                           dstudent, static_cast<const bf16*>(student_logits),
                           static_cast<const bf16*>(teacher_logits), mask, grad_scale, V);
    return arwkv_check_launch("kl_forward_backward_kernel");
}

// ---- cross-entropy -------------------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kLossBlock)
cross_entropy_forward_backward_kernel(float* losses, float* dlogits, const T* logits, const int32_t* targets,
                                      float grad_scale, int V) {
    __shared__ float scratch[kMaxWarpsPerBlock];
    const int64_t n = blockIdx.x;
    const int target = targets[n];
    float* drow = dlogits != nullptr ? dlogits + n * V : nullptr;
    if (target < 0 || target >= V) {
        if (threadIdx.x == 0) losses[n] = 0.0f;
        if (drow != nullptr)
            for (int i = threadIdx.x; i < V; i += blockDim.x) drow[i] = 0.0f;
        return;
    }
    const T* row = logits + n * V;
    const float lse = row_logsumexp(row, V, scratch);
    if (threadIdx.x == 0) losses[n] = lse - load_as_float(row, target);
    if (drow != nullptr)
        for (int i = threadIdx.x; i < V; i += blockDim.x)
            drow[i] = grad_scale * (expf(load_as_float(row, i) - lse) - (i == target ? 1.0f : 0.0f));
}

extern "C" int32_t arwkv_cross_entropy_forward_backward(float* losses, float* dlogits, const void* logits,
                                                        int32_t dtype, const int32_t* targets, float grad_scale,
                                                        int32_t N, int32_t V, void* stream) {
    ARWKV_REQUIRE(losses != nullptr && logits != nullptr && targets != nullptr);
    ARWKV_REQUIRE(is_dtype(dtype));
    ARWKV_REQUIRE(N >= 0 && V > 0);
    if (N == 0) return ARWKV_HIP_OK;
    if (dtype == ARWKV_HIP_F32)
        hipLaunchKernelGGL(cross_entropy_forward_backward_kernel<float>, dim3(N), dim3(kLossBlock), 0,
                           as_stream(stream), losses, dlogits, static_cast<const float*>(logits), targets, grad_scale,
                           V);
    else
        hipLaunchKernelGGL(cross_entropy_forward_backward_kernel<bf16>, dim3(N), dim3(kLossBlock), 0,
                           as_stream(stream), losses, dlogits, static_cast<const bf16*>(logits), targets, grad_scale,
                           V);
    return arwkv_check_launch("cross_entropy_forward_backward_kernel");
}

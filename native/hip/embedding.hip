// embedding.hip: token embedding lookup and its gradient (llm.c's encoder_forward/backward without positions).
// Forward: one block per token copies a row of the [V,C] table (f32 or bf16) into float32 activations.
// Backward: every token's gradient row is added into the table gradient with atomics; a frequent token (padding,
// "the") makes those atomics contend, which is acceptable at distillation batch sizes and keeps the kernel simple.
// llm.c's deterministic bucketed variant is the upgrade path if bitwise reproducibility is ever required.
#include "common.h"

template <typename TTable>
__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const TTable* table, int C, int V) {
    const int64_t n = blockIdx.x;
    const int token = tokens[n];
    float* row = out + n * (int64_t)C;
    const bool valid = token >= 0 && token < V;
    const int64_t base = (int64_t)token * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) row[c] = valid ? load_as_float(table, base + c) : 0.0f;
}

__global__ void embedding_backward_kernel(float* dtable, const int32_t* tokens, const float* dout, int C, int V) {
    const int64_t n = blockIdx.x;
    const int token = tokens[n];
    if (token < 0 || token >= V) return;
    const float* drow = dout + n * (int64_t)C;
    float* dtable_row = dtable + (int64_t)token * C;
    for (int c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(&dtable_row[c], drow[c]);
}

extern "C" int32_t arwkv_embedding_forward(float* out, const int32_t* tokens, const void* table, int32_t table_dtype,
                                           int32_t N, int32_t C, int32_t V, void* stream) {
    ARWKV_REQUIRE(out != nullptr && tokens != nullptr && table != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0 && V > 0);
    ARWKV_REQUIRE(is_dtype(table_dtype));
    if (N == 0) return ARWKV_HIP_OK;
    const int block = 256;
    if (table_dtype == ARWKV_HIP_F32)
        hipLaunchKernelGGL(embedding_forward_kernel<float>, dim3(N), dim3(block), 0, as_stream(stream), out, tokens,
                           static_cast<const float*>(table), C, V);
    else
        hipLaunchKernelGGL(embedding_forward_kernel<bf16>, dim3(N), dim3(block), 0, as_stream(stream), out, tokens,
                           static_cast<const bf16*>(table), C, V);
    return arwkv_check_launch("embedding_forward_kernel");
}

extern "C" int32_t arwkv_embedding_backward(float* dtable, const int32_t* tokens, const float* dout, int32_t N,
                                            int32_t C, int32_t V, void* stream) {
    ARWKV_REQUIRE(dtable != nullptr && tokens != nullptr && dout != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0 && V > 0);
    if (N == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(embedding_backward_kernel, dim3(N), dim3(256), 0, as_stream(stream), dtable, tokens, dout, C,
                       V);
    return arwkv_check_launch("embedding_backward_kernel");
}

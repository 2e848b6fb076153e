// arwkv_hip.h: the C ABI of libarwkv_hip.so, the GPU half of Arwkv.NET (AMD ROCm; CUDA through hip_to_cuda.h).
//
// Conventions (mirrored by src/Arwkv.Hip/NativeMethods.cs; change both together and bump ARWKV_HIP_ABI_VERSION):
// - Every function returns an arwkv_hip_status (0 = success) unless it returns a plain value by nature.
//   On failure the thread-local last error (arwkv_hip_last_error_code / _message) says what went wrong;
//   a failing launch leaves its outputs undefined.
// - Device memory is passed as plain pointers obtained from arwkv_hip_malloc; streams as opaque handles from
//   arwkv_hip_stream_create (NULL = the default stream). Every launch is asynchronous on its stream.
// - Arguments follow llm.c: outputs first, then inputs, then sizes, then the stream. Shapes are in the comments,
//   row-major, and tensors are contiguous. "N" is the number of tokens (B*T) where a kernel ignores sequences.
// - Backward functions ADD into the gradients they write (zero them first with arwkv_hip_memset), so gradients
//   of shared inputs accumulate for free, exactly like llm.c. Exceptions are marked "(overwrites)".
// - dtype arguments take arwkv_hip_dtype; bf16 tensors are raw 16-bit patterns (upper half of an IEEE float).
#ifndef ARWKV_HIP_H
#define ARWKV_HIP_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define ARWKV_HIP_API __declspec(dllexport)
#else
#define ARWKV_HIP_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define ARWKV_HIP_ABI_VERSION 2

typedef enum arwkv_hip_status {
    ARWKV_HIP_OK = 0,
    ARWKV_HIP_ERROR_INVALID_ARGUMENT = 1,  // null pointer, bad size or dtype: a bug in the caller
    ARWKV_HIP_ERROR_RUNTIME = 2,           // the GPU runtime (HIP or CUDA) reported an error; the message has it
    ARWKV_HIP_ERROR_NO_DEVICE = 3,         // no GPU, or the runtime cannot see one
    ARWKV_HIP_ERROR_UNSUPPORTED = 4,       // a feature this build was compiled without (e.g. vendor BLAS)
} arwkv_hip_status;

typedef enum arwkv_hip_dtype {
    ARWKV_HIP_F32 = 0,
    ARWKV_HIP_BF16 = 1,
} arwkv_hip_dtype;

typedef enum arwkv_hip_platform {
    ARWKV_HIP_PLATFORM_AMD = 1,
    ARWKV_HIP_PLATFORM_NVIDIA = 2,
    ARWKV_HIP_PLATFORM_CPU_EXECUTOR = 3,  // the HIP-on-CPU executor (build.sh --cpu): a testing tool, not a GPU
} arwkv_hip_platform;

// Fixed-size, blittable: marshalled field by field by the C# binding.
typedef struct arwkv_hip_device_info {
    char name[256];
    char arch[64];              // "gfx942", or "sm_90" on NVIDIA
    int64_t total_memory_bytes;
    int32_t multiprocessor_count;
    int32_t warp_size;          // 64 on CDNA, 32 on NVIDIA
    int32_t max_threads_per_block;
    int32_t max_shared_memory_per_block;
    int32_t compute_major;
    int32_t compute_minor;
} arwkv_hip_device_info;

// ============================================== runtime (runtime.hip) ==============================================

ARWKV_HIP_API int32_t arwkv_hip_abi_version(void);                 // ARWKV_HIP_ABI_VERSION of the built library
ARWKV_HIP_API int32_t arwkv_hip_platform_id(void);                 // arwkv_hip_platform
ARWKV_HIP_API int32_t arwkv_hip_runtime_version(int32_t* version); // hipRuntimeGetVersion / cudaRuntimeGetVersion
ARWKV_HIP_API int32_t arwkv_hip_blas_enabled(void);                // 1 when built with ARWKV_HIP_BLAS
ARWKV_HIP_API int32_t arwkv_hip_device_count(int32_t* count);      // 0 devices is reported as ARWKV_HIP_ERROR_NO_DEVICE
ARWKV_HIP_API int32_t arwkv_hip_device_info_get(int32_t device, arwkv_hip_device_info* info);
ARWKV_HIP_API int32_t arwkv_hip_init(int32_t device);              // select the device for this thread, create the context
ARWKV_HIP_API int32_t arwkv_hip_device_synchronize(void);
// The HIP-on-CPU executor only (ARWKV_HIP_ERROR_UNSUPPORTED elsewhere): the order in which the threads of a block
// are released from each barrier and blocks are started, 0 forward, 1 reverse, 2 shuffled by seed (the race check).
ARWKV_HIP_API int32_t arwkv_hip_executor_set_schedule(int32_t order, uint64_t seed);

// Last error of the calling thread. The message is copied NUL-terminated and truncated to capacity; the return
// value is the full message length (call with capacity 0 to size a buffer).
ARWKV_HIP_API int32_t arwkv_hip_last_error_code(void);
ARWKV_HIP_API int32_t arwkv_hip_last_error_message(char* buffer, int32_t capacity);

ARWKV_HIP_API int32_t arwkv_hip_stream_create(void** stream);
ARWKV_HIP_API int32_t arwkv_hip_stream_destroy(void* stream);
ARWKV_HIP_API int32_t arwkv_hip_stream_synchronize(void* stream);

ARWKV_HIP_API int32_t arwkv_hip_malloc(void** device_ptr, size_t bytes);
ARWKV_HIP_API int32_t arwkv_hip_free(void* device_ptr);
// Host memory that is not pinned makes the H2D/D2H copies synchronous with respect to the host (runtime behaviour).
ARWKV_HIP_API int32_t arwkv_hip_memcpy_h2d(void* dst_device, const void* src_host, size_t bytes, void* stream);
ARWKV_HIP_API int32_t arwkv_hip_memcpy_d2h(void* dst_host, const void* src_device, size_t bytes, void* stream);
ARWKV_HIP_API int32_t arwkv_hip_memcpy_d2d(void* dst_device, const void* src_device, size_t bytes, void* stream);
ARWKV_HIP_API int32_t arwkv_hip_memset(void* dst_device, int32_t byte_value, size_t bytes, void* stream);

// ============================================== convert.hip ========================================================
// Round to nearest even; NaN stays NaN.
ARWKV_HIP_API int32_t arwkv_convert_f32_to_bf16(uint16_t* out, const float* in, int64_t n, void* stream);
ARWKV_HIP_API int32_t arwkv_convert_bf16_to_f32(float* out, const uint16_t* in, int64_t n, void* stream);

// ============================================== embedding.hip ======================================================
// out [N,C] (overwrites) = table[tokens[n]] with table [V,C] in table_dtype. A token outside [0,V) writes zeros
// (the host validates ids; the kernel only refuses to read out of bounds).
ARWKV_HIP_API int32_t arwkv_embedding_forward(float* out, const int32_t* tokens, const void* table, int32_t table_dtype,
                                              int32_t N, int32_t C, int32_t V, void* stream);
// dtable [V,C] += scatter of dout [N,C] by tokens (atomic adds: repeated tokens accumulate).
ARWKV_HIP_API int32_t arwkv_embedding_backward(float* dtable, const int32_t* tokens, const float* dout,
                                               int32_t N, int32_t C, int32_t V, void* stream);

// ============================================== rmsnorm.hip ========================================================
// out [N,C] (overwrites) = inp * rstd * weight, rstd [N] (overwrites) = 1/sqrt(mean(inp^2) + eps), in float32.
ARWKV_HIP_API int32_t arwkv_rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight,
                                            int32_t N, int32_t C, float eps, void* stream);
// dinp [N,C] += ..., dweight [C] += sum over tokens of dout * inp * rstd.
ARWKV_HIP_API int32_t arwkv_rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                                             const float* weight, const float* rstd, int32_t N, int32_t C, void* stream);

// ============================================== swiglu.hip =========================================================
// out [n] (overwrites) = silu(gate) * up, elementwise over n = N*F values.
ARWKV_HIP_API int32_t arwkv_swiglu_forward(float* out, const float* gate, const float* up, int64_t n, void* stream);
ARWKV_HIP_API int32_t arwkv_swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                                            const float* up, int64_t n, void* stream);

// ============================================== timemix.hip ========================================================
// The elementwise parts of the RWKV-7 time mix (ARWKV.md section 2); the matrix products around them are GEMMs.
// Token shift and the six lerps: out [6,B,T,C] (overwrites), block i = x + (x_prev - x) * lerp[i], lerp [6,C] in the
// order x_r, x_w, x_k, x_v, x_a, x_g; x_prev of t = 0 is shift_state [B,C] (NULL = zeros).
ARWKV_HIP_API int32_t arwkv_timemix_lerp_forward(float* out, const float* x, const float* shift_state, const float* lerp,
                                                 int32_t B, int32_t T, int32_t C, void* stream);
// dx [B,T,C] += ..., dlerp [6,C] += ... (no gradient to shift_state).
ARWKV_HIP_API int32_t arwkv_timemix_lerp_backward(float* dx, float* dlerp, const float* dout, const float* x,
                                                  const float* shift_state, const float* lerp,
                                                  int32_t B, int32_t T, int32_t C, void* stream);
// decay [N,C] (overwrites) = exp(-0.6065306597 * sigmoid(w0 + z)), z [N,C] = tanh(x_w w1) w2, w0 [C].
ARWKV_HIP_API int32_t arwkv_timemix_decay_forward(float* decay, const float* z, const float* w0, int32_t N, int32_t C,
                                                  void* stream);
// dz [N,C] += ..., dw0 [C] += ... (dw0 may be NULL).
ARWKV_HIP_API int32_t arwkv_timemix_decay_backward(float* dz, float* dw0, const float* ddecay, const float* decay,
                                                   int32_t N, int32_t C, void* stream);
// out [N,C] (overwrites) = sigmoid(inp + bias); bias [C] may be NULL. Used for a (bias a0), the value-residual gate
// (bias v0) and the gate's first LoRA half (no bias).
ARWKV_HIP_API int32_t arwkv_sigmoid_bias_forward(float* out, const float* inp, const float* bias, int32_t N, int32_t C,
                                                 void* stream);
ARWKV_HIP_API int32_t arwkv_sigmoid_bias_backward(float* dinp, float* dbias, const float* dout, const float* out,
                                                  int32_t N, int32_t C, void* stream);
// out [n] (overwrites) = tanh(inp) (the decay LoRA's hidden layer).
ARWKV_HIP_API int32_t arwkv_tanh_forward(float* out, const float* inp, int64_t n, void* stream);
ARWKV_HIP_API int32_t arwkv_tanh_backward(float* dinp, const float* dout, const float* out, int64_t n, void* stream);
// Value residual (layers > 0): out [n] (overwrites) = v + (v_first - v) * gate.
ARWKV_HIP_API int32_t arwkv_timemix_value_residual_forward(float* out, const float* v, const float* v_first,
                                                           const float* gate, int64_t n, void* stream);
ARWKV_HIP_API int32_t arwkv_timemix_value_residual_backward(float* dv, float* dv_first, float* dgate, const float* dout,
                                                            const float* v, const float* v_first, const float* gate,
                                                            int64_t n, void* stream);
// Per head of 64 channels (C = H*64), all [N,C] (overwrite):
//   kk = L2-normalize(k * k_k) (eps 1e-12), wkv_a = -kk, wkv_b = kk * a, k_out = k * (1 + (a - 1) * k_a);
// kk_norm [N,H] (overwrites) keeps ||k * k_k|| for the backward. wkv_a/wkv_b feed arwkv_wkv7_forward.
ARWKV_HIP_API int32_t arwkv_timemix_kk_forward(float* wkv_a, float* wkv_b, float* k_out, float* kk_norm,
                                               const float* k, const float* a, const float* k_k, const float* k_a,
                                               int32_t N, int32_t C, void* stream);
// dk, da [N,C] += ..., dk_k, dk_a [C] += ... from the gradients of wkv_a, wkv_b and k_out.
ARWKV_HIP_API int32_t arwkv_timemix_kk_backward(float* dk, float* da, float* dk_k, float* dk_a,
                                                const float* dwkv_a, const float* dwkv_b, const float* dk_out,
                                                const float* k, const float* a, const float* k_k, const float* k_a,
                                                const float* kk_norm, int32_t N, int32_t C, void* stream);
// Bonus: y [N,C] += (sum over the head of r * k * r_k) * v, r_k [H,64] (y is updated in place).
ARWKV_HIP_API int32_t arwkv_timemix_bonus_forward(float* y, const float* r, const float* k, const float* v,
                                                  const float* r_k, int32_t N, int32_t C, void* stream);
// dr, dk, dv [N,C] += ..., dr_k [H,64] += ... from dy (the gradient of the bonus' output).
ARWKV_HIP_API int32_t arwkv_timemix_bonus_backward(float* dr, float* dk, float* dv, float* dr_k, const float* dy,
                                                   const float* r, const float* k, const float* v, const float* r_k,
                                                   int32_t N, int32_t C, void* stream);
// Gate: out [n] (overwrites) = y * g. Backward: dy += dout * g, dg += dout * y.
ARWKV_HIP_API int32_t arwkv_mul_forward(float* out, const float* y, const float* g, int64_t n, void* stream);
ARWKV_HIP_API int32_t arwkv_mul_backward(float* dy, float* dg, const float* dout, const float* y, const float* g,
                                         int64_t n, void* stream);

// ============================================== wkv7.hip ===========================================================
// The RWKV-7 recurrence in its general form (BlinkDL): per head, float32 state S [64 value, 64 key],
//   sa = S a;  S = S diag(w) + v k^T + sa b^T;  y = S r
// with ARWKV's a = -kk, b = kk * iclr and w the decay itself (in (0,1)).
// r, w, k, v, a, b: [B,T,H,64] in dtype (all the same); y [B,T,H,64] float32 (overwrites).
// state [B,H,64,64]: the initial state, replaced by the final one; NULL = start from zeros and discard.
// mask [B,T] (NULL = all valid): a step with mask 0 leaves the state untouched and writes y = 0.
// checkpoints [B,H,T/16,64,64] and sa [B,T,H,64] (float32, overwrite, both NULL or both set): what the backward
// needs; the state after every 16th step and every step's sa. With checkpoints T must be a multiple of 16
// (sequences are padded to a multiple of 16, ARWKV.md section 5).
ARWKV_HIP_API int32_t arwkv_wkv7_forward(float* y, float* state, float* checkpoints, float* sa,
                                         const void* r, const void* w, const void* k, const void* v,
                                         const void* a, const void* b, const int32_t* mask, int32_t dtype,
                                         int32_t B, int32_t T, int32_t H, void* stream);
// Gradients [B,T,H,64] float32 (overwrite: each step's inputs are used once) from dy [B,T,H,64] float32.
// Walks t backwards, rebuilding S_{t-1} from S_t by inverting the step with the saved sa (decay >= 0.545 keeps
// 1/w bounded) and restarting from the exact checkpoint every 16 steps so inversion error never compounds further.
// state_init [B,H,64,64]: the initial state given to the forward (NULL = zeros); dstate_init (NULL = not wanted):
// the gradient with respect to it (overwrites).
ARWKV_HIP_API int32_t arwkv_wkv7_backward(float* dr, float* dw, float* dk, float* dv, float* da, float* db,
                                          float* dstate_init, const float* dy, const float* checkpoints, const float* sa,
                                          const float* state_init, const void* r, const void* w, const void* k,
                                          const void* v, const void* a, const void* b, const int32_t* mask,
                                          int32_t dtype, int32_t B, int32_t T, int32_t H, void* stream);
// One token per sequence (generation): y [B,H,64] (overwrites), state [B,H,64,64] updated in place, inputs
// [B,H,64] float32.
ARWKV_HIP_API int32_t arwkv_wkv7_decode(float* y, float* state, const float* r, const float* w, const float* k,
                                        const float* v, const float* a, const float* b, int32_t B, int32_t H,
                                        void* stream);

// ============================================== attention.hip ======================================================
// The Qwen2 teacher's attention core on q, k, v already projected (biases added), float32. Layouts are the linear
// layers' outputs: q [B,T,H,D] (= [B,T,H*D]), k and v [B,T,KV,D]; query head h reads kv head h / (H/KV), H a
// multiple of KV; D is 16, 32, 64 or 128; softmax scale 1/sqrt(D).
// RoPE, Hugging Face's rotate_half (element i pairs with i + D/2): out [B,T,heads,D] (overwrites; out may be x),
//   out[i] = x[i] cos - x[i+D/2] sin,  out[i+D/2] = x[i+D/2] cos + x[i] sin,
// cos_table, sin_table [P, D/2] from the host (transformers' float32 angles, as Attention.RotaryTables), row = the
// token's position t + start_positions[b] (start_positions [B] int32, NULL = 0). A position outside [0,P) writes 0.
ARWKV_HIP_API int32_t arwkv_rope_forward(float* out, const float* x, const float* cos_table, const float* sin_table,
                                         const int32_t* start_positions, int32_t B, int32_t T, int32_t heads,
                                         int32_t D, int32_t P, void* stream);
// dx [B,T,heads,D] += the transposed rotation of dout (dx != dout).
ARWKV_HIP_API int32_t arwkv_rope_backward(float* dx, const float* dout, const float* cos_table, const float* sin_table,
                                          const int32_t* start_positions, int32_t B, int32_t T, int32_t heads,
                                          int32_t D, int32_t P, void* stream);
// Causal attention, flash style (tiles of keys, online softmax; no [T,T] matrix is stored): out [B,T,H,D]
// (overwrites) = softmax(q k^T / sqrt(D)) v over keys s <= t, on rotated q and k. lse [B,H,T] (NULL = not saved;
// overwrites): each row's log-sum-exp of the scaled scores, what the backward needs. mask [B,T] int32 (NULL = all
// valid): a key with mask 0 is never attended; a query with mask 0 writes out = 0 and lse = -inf.
ARWKV_HIP_API int32_t arwkv_attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                                              const int32_t* mask, int32_t B, int32_t T, int32_t H, int32_t KV,
                                              int32_t D, void* stream);
// dq [B,T,H,D], dk, dv [B,T,KV,D] += the gradients with respect to the rotated q, k and v (dk, dv summed over each
// kv head's group of query heads) from dout [B,T,H,D], given the forward's out and lse. delta [B,H,T] is scratch
// (overwrites: rowsum(dout * out)). Masked queries get no gradient and send none. Deterministic (no atomics).
ARWKV_HIP_API int32_t arwkv_attention_backward(float* dq, float* dk, float* dv, float* delta, const float* dout,
                                               const float* out, const float* lse, const float* q, const float* k,
                                               const float* v, const int32_t* mask, int32_t B, int32_t T, int32_t H,
                                               int32_t KV, int32_t D, void* stream);
// Generation: one rotated query per sequence, q [B,H,D] float32, against the KV cache k_cache, v_cache
// [B,capacity,KV,D] in cache_dtype (f32 or bf16), whose rows 0..lengths[b]-1 it attends (the new token's k and v are
// already written at row lengths[b]-1). lengths [B] int32 (NULL = capacity for all; clamped to [0,capacity]).
// out [B,H,D] (overwrites; 0 where the length is 0).
ARWKV_HIP_API int32_t arwkv_attention_decode(float* out, const float* q, const void* k_cache, const void* v_cache,
                                             const int32_t* lengths, int32_t cache_dtype, int32_t B, int32_t H,
                                             int32_t KV, int32_t D, int32_t capacity, void* stream);

// ============================================== matmul.hip =========================================================
// c [M,N] float32 = alpha * op(A) op(B) + beta * c, row-major, op(X) = X or X^T:
//   trans_a = 0: a is [M,K]; 1: a is [K,M].   trans_b = 0: b is [K,N]; 1: b is [N,K].
// a and b in f32 or bf16, accumulation in float32. Forward of a linear layer (W [out,in]): NT with a = x, b = W;
// dx = dout W is NN; dW += dout^T x is TN with beta = 1. beta = 0 never reads c (it may hold NaN).
// Uses the vendor BLAS when built with ARWKV_HIP_BLAS and both operands are bf16 or both f32, else the tiled kernel.
ARWKV_HIP_API int32_t arwkv_gemm(float* c, const void* a, int32_t a_dtype, const void* b, int32_t b_dtype,
                                 int32_t trans_a, int32_t trans_b, int32_t M, int32_t N, int32_t K,
                                 float alpha, float beta, void* stream);
// The same product with one thread per output and no tiling: the algorithm's reference and the fast path's oracle.
ARWKV_HIP_API int32_t arwkv_gemm_naive(float* c, const void* a, int32_t a_dtype, const void* b, int32_t b_dtype,
                                       int32_t trans_a, int32_t trans_b, int32_t M, int32_t N, int32_t K,
                                       float alpha, float beta, void* stream);

// ============================================== losses.hip =========================================================
// Stage 1 alignment (ARWKV.md section 5): losses [N] (overwrites) = ||student - teacher||_2 / sqrt(C) per token.
ARWKV_HIP_API int32_t arwkv_alignment_loss_forward(float* losses, const float* student, const float* teacher,
                                                   int32_t N, int32_t C, void* stream);
// dstudent [N,C] += grad_scale * (student - teacher) / (||student - teacher|| sqrt(C)), zero where the distance is 0.
ARWKV_HIP_API int32_t arwkv_alignment_loss_backward(float* dstudent, const float* student, const float* teacher,
                                                    const float* losses, float grad_scale, int32_t N, int32_t C,
                                                    void* stream);
// Stage 2: losses [N] (overwrites) = KL(softmax(teacher) || softmax(student)) per token at temperature 1, read in
// chunks over V (no [N,V] probabilities are stored). dstudent [N,V] (NULL = forward only; overwrites) =
// grad_scale * (softmax(student) - softmax(teacher)). mask [N] (NULL = all): tokens with 0 get loss 0, gradient 0.
ARWKV_HIP_API int32_t arwkv_kl_forward_backward(float* losses, float* dstudent, const void* student_logits,
                                                const void* teacher_logits, int32_t dtype, const int32_t* mask,
                                                float grad_scale, int32_t N, int32_t V, void* stream);
// Stage 3 / SFT: losses [N] (overwrites) = logsumexp(logits) - logits[target]; dlogits [N,V] (NULL = forward only;
// overwrites) = grad_scale * (softmax - onehot). A target outside [0,V) (e.g. -100 padding) gives loss 0, gradient 0.
ARWKV_HIP_API int32_t arwkv_cross_entropy_forward_backward(float* losses, float* dlogits, const void* logits,
                                                           int32_t dtype, const int32_t* targets, float grad_scale,
                                                           int32_t N, int32_t V, void* stream);

// ============================================== adamw.hip ==========================================================
// norm_sq [1] += sum of grad^2 over n values (zero it first; call once per parameter tensor for the global norm).
ARWKV_HIP_API int32_t arwkv_grad_norm_squared(float* norm_sq, const float* grad, int64_t n, void* stream);
// Fused AdamW (decoupled weight decay, bias correction with step >= 1) on float32 master weights, writing the bf16
// copy (NULL = none). grad_norm_sq (NULL = no clipping): device pointer to the global squared norm; gradients are
// scaled by min(1, max_grad_norm / norm) on the device, so clipping needs no host round trip.
ARWKV_HIP_API int32_t arwkv_adamw_update(float* master, uint16_t* bf16_copy, float* m, float* v, const float* grad,
                                         int64_t n, float learning_rate, float beta1, float beta2, float eps,
                                         float weight_decay, int32_t step, const float* grad_norm_sq,
                                         float max_grad_norm, void* stream);

#ifdef __cplusplus
}
#endif

#endif  // ARWKV_HIP_H

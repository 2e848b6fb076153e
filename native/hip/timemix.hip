// timemix.hip: the elementwise and per-head pieces of the RWKV-7 time mix (ARWKV.md section 2), forward and
// backward side by side. The matrix products (r/k/v/o projections and the w/a/v/g LoRAs) are GEMMs and the
// recurrence is wkv7.hip; what is left here is cheap but easy to get subtly wrong, so every piece is its own
// kernel with the formula above it.
//
// Two launch shapes recur:
// - "column" kernels for a [N,C] tensor with a [C] parameter: threads run along C (coalesced), blockIdx.y picks a
//   slice of tokens, and the parameter's gradient is summed in a register over the slice and added once with an
//   atomic, so a [C] gradient costs (C * slices) atomics instead of N * C.
// - "head" kernels: one block of 64 threads per head (C = H * 64) and token slice, for the per-head reductions
//   (the L2 norm of kk and the bonus' dot product).
#include "common.h"

constexpr int kHeadSize = 64;
constexpr int kColumnBlock = 256;
// Token slices per column/head kernel: enough blocks to fill a GPU when C is small, few enough to keep atomics low.
constexpr int kTokenSlices = 64;

inline int token_slices(int N) { return N < kTokenSlices ? (N < 1 ? 1 : N) : kTokenSlices; }

inline dim3 column_grid(int N, int C) {
    return dim3(static_cast<unsigned int>((C + kColumnBlock - 1) / kColumnBlock), static_cast<unsigned int>(token_slices(N)));
}

__device__ inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---- token shift and the six lerps ---------------------------------------------------------------------------------
//   xx = x_prev - x;  out_i = x + xx * lerp_i      (i = r, w, k, v, a, g)
//   dx_t += sum_i dout_i,t (1 - lerp_i) + sum_i dout_i,t+1 lerp_i     (x_t is x_prev of t+1)
//   dlerp_i += sum over tokens of dout_i * xx

__device__ inline float shifted_input(const float* x, const float* shift_state, int b, int t, int c, int T, int C) {
    if (t > 0) return x[((int64_t)b * T + t - 1) * C + c];
    return shift_state != nullptr ? shift_state[(int64_t)b * C + c] : 0.0f;
}

__global__ void timemix_lerp_forward_kernel(float* out, const float* x, const float* shift_state, const float* lerp,
                                            int B, int T, int C) {
    const int64_t total = (int64_t)B * T * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int c = static_cast<int>(i % C);
        const int64_t bt = i / C;
        const int t = static_cast<int>(bt % T);
        const int b = static_cast<int>(bt / T);
        const float xi = x[i];
        const float xx = shifted_input(x, shift_state, b, t, c, T, C) - xi;
        for (int m = 0; m < 6; m++) out[m * total + i] = xi + xx * lerp[m * C + c];
    }
}

__global__ void timemix_lerp_backward_dx_kernel(float* dx, const float* dout, const float* lerp, int B, int T, int C) {
    const int64_t total = (int64_t)B * T * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int c = static_cast<int>(i % C);
        const int t = static_cast<int>((i / C) % T);
        float grad = 0.0f;
        for (int m = 0; m < 6; m++) {
            const float mu = lerp[m * C + c];
            grad += dout[m * total + i] * (1.0f - mu);
            if (t + 1 < T) grad += dout[m * total + i + C] * mu;
        }
        dx[i] += grad;
    }
}

// grid.y = token slice, grid.z = which of the six lerps.
__global__ void timemix_lerp_backward_dlerp_kernel(float* dlerp, const float* dout, const float* x,
                                                   const float* shift_state, int B, int T, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int m = blockIdx.z;
    const int64_t N = (int64_t)B * T;
    const int64_t total = N * C;
    float acc = 0.0f;
    for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
        const int t = static_cast<int>(n % T);
        const int b = static_cast<int>(n / T);
        const int64_t i = n * C + c;
        acc += dout[m * total + i] * (shifted_input(x, shift_state, b, t, c, T, C) - x[i]);
    }
    atomicAdd(&dlerp[m * C + c], acc);
}

extern "C" int32_t arwkv_timemix_lerp_forward(float* out, const float* x, const float* shift_state, const float* lerp,
                                              int32_t B, int32_t T, int32_t C, void* stream) {
    ARWKV_REQUIRE(out != nullptr && x != nullptr && lerp != nullptr);
    ARWKV_REQUIRE(B >= 0 && T >= 0 && C > 0);
    const int64_t total = (int64_t)B * T * C;
    if (total == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(timemix_lerp_forward_kernel, dim3(elementwise_blocks(total, 256)), dim3(256), 0,
                       as_stream(stream), out, x, shift_state, lerp, B, T, C);
    return arwkv_check_launch("timemix_lerp_forward_kernel");
}

extern "C" int32_t arwkv_timemix_lerp_backward(float* dx, float* dlerp, const float* dout, const float* x,
                                               const float* shift_state, const float* lerp, int32_t B, int32_t T,
                                               int32_t C, void* stream) {
    ARWKV_REQUIRE(dx != nullptr && dlerp != nullptr && dout != nullptr && x != nullptr && lerp != nullptr);
    ARWKV_REQUIRE(B >= 0 && T >= 0 && C > 0);
    const int64_t total = (int64_t)B * T * C;
    if (total == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(timemix_lerp_backward_dx_kernel, dim3(elementwise_blocks(total, 256)), dim3(256), 0,
                       as_stream(stream), dx, dout, lerp, B, T, C);
    int32_t status = arwkv_check_launch("timemix_lerp_backward_dx_kernel");
    if (status != ARWKV_HIP_OK) return status;
    dim3 grid = column_grid(B * T, C);
    grid.z = 6;
    hipLaunchKernelGGL(timemix_lerp_backward_dlerp_kernel, grid, dim3(kColumnBlock), 0, as_stream(stream), dlerp, dout,
                       x, shift_state, B, T, C);
    return arwkv_check_launch("timemix_lerp_backward_dlerp_kernel");
}

// ---- decay ---------------------------------------------------------------------------------------------------------
//   decay = exp(-exp(-softplus(-(w0 + z)) - 0.5)) = exp(-e^-0.5 * sigmoid(w0 + z)), in (0.545, 1)
//   ddecay/dz = decay * (-e^-0.5) * s (1 - s), with s recovered from the saved decay as -ln(decay) / e^-0.5.
constexpr float kDecayScale = 0.6065306597126334f;  // e^-0.5

__global__ void timemix_decay_forward_kernel(float* decay, const float* z, const float* w0, int N, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const float bias = w0[c];
    for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
        const int64_t i = n * C + c;
        decay[i] = expf(-kDecayScale * sigmoidf(bias + z[i]));
    }
}

__global__ void timemix_decay_backward_kernel(float* dz, float* dw0, const float* ddecay, const float* decay, int N,
                                              int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
        const int64_t i = n * C + c;
        const float d = decay[i];
        const float s = -logf(d) / kDecayScale;
        const float grad = ddecay[i] * d * (-kDecayScale) * s * (1.0f - s);
        dz[i] += grad;
        acc += grad;
    }
    if (dw0 != nullptr) atomicAdd(&dw0[c], acc);
}

extern "C" int32_t arwkv_timemix_decay_forward(float* decay, const float* z, const float* w0, int32_t N, int32_t C,
                                               void* stream) {
    ARWKV_REQUIRE(decay != nullptr && z != nullptr && w0 != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0);
    if (N == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(timemix_decay_forward_kernel, column_grid(N, C), dim3(kColumnBlock), 0, as_stream(stream), decay,
                       z, w0, N, C);
    return arwkv_check_launch("timemix_decay_forward_kernel");
}

extern "C" int32_t arwkv_timemix_decay_backward(float* dz, float* dw0, const float* ddecay, const float* decay,
                                                int32_t N, int32_t C, void* stream) {
    ARWKV_REQUIRE(dz != nullptr && ddecay != nullptr && decay != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0);
    if (N == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(timemix_decay_backward_kernel, column_grid(N, C), dim3(kColumnBlock), 0, as_stream(stream), dz,
                       dw0, ddecay, decay, N, C);
    return arwkv_check_launch("timemix_decay_backward_kernel");
}

// ---- sigmoid with an optional bias, tanh ---------------------------------------------------------------------------
//   out = sigmoid(inp + bias);  dinp += dout * out (1 - out);  dbias += the same summed over tokens
//   out = tanh(inp);            dinp += dout * (1 - out^2)

__global__ void sigmoid_bias_forward_kernel(float* out, const float* inp, const float* bias, int N, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const float b = bias != nullptr ? bias[c] : 0.0f;
    for (int64_t n = blockIdx.y; n < N; n += gridDim.y) out[n * C + c] = sigmoidf(inp[n * C + c] + b);
}

__global__ void sigmoid_bias_backward_kernel(float* dinp, float* dbias, const float* dout, const float* out, int N,
                                             int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float acc = 0.0f;
    for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
        const int64_t i = n * C + c;
        const float s = out[i];
        const float grad = dout[i] * s * (1.0f - s);
        dinp[i] += grad;
        acc += grad;
    }
    if (dbias != nullptr) atomicAdd(&dbias[c], acc);
}

__global__ void tanh_forward_kernel(float* out, const float* inp, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = tanhf(inp[i]);
}

__global__ void tanh_backward_kernel(float* dinp, const float* dout, const float* out, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dinp[i] += dout[i] * (1.0f - out[i] * out[i]);
}

extern "C" int32_t arwkv_sigmoid_bias_forward(float* out, const float* inp, const float* bias, int32_t N, int32_t C,
                                              void* stream) {
    ARWKV_REQUIRE(out != nullptr && inp != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0);
    if (N == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(sigmoid_bias_forward_kernel, column_grid(N, C), dim3(kColumnBlock), 0, as_stream(stream), out,
                       inp, bias, N, C);
    return arwkv_check_launch("sigmoid_bias_forward_kernel");
}

extern "C" int32_t arwkv_sigmoid_bias_backward(float* dinp, float* dbias, const float* dout, const float* out,
                                               int32_t N, int32_t C, void* stream) {
    ARWKV_REQUIRE(dinp != nullptr && dout != nullptr && out != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0);
    if (N == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(sigmoid_bias_backward_kernel, column_grid(N, C), dim3(kColumnBlock), 0, as_stream(stream), dinp,
                       dbias, dout, out, N, C);
    return arwkv_check_launch("sigmoid_bias_backward_kernel");
}

extern "C" int32_t arwkv_tanh_forward(float* out, const float* inp, int64_t n, void* stream) {
    ARWKV_REQUIRE(out != nullptr && inp != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(tanh_forward_kernel, dim3(elementwise_blocks(n, 256)), dim3(256), 0, as_stream(stream), out, inp,
                       n);
    return arwkv_check_launch("tanh_forward_kernel");
}

extern "C" int32_t arwkv_tanh_backward(float* dinp, const float* dout, const float* out, int64_t n, void* stream) {
    ARWKV_REQUIRE(dinp != nullptr && dout != nullptr && out != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(tanh_backward_kernel, dim3(elementwise_blocks(n, 256)), dim3(256), 0, as_stream(stream), dinp,
                       dout, out, n);
    return arwkv_check_launch("tanh_backward_kernel");
}

// ---- value residual (layers > 0) -----------------------------------------------------------------------------------
//   out = v + (v_first - v) g;  dv += dout (1 - g);  dv_first += dout g;  dg += dout (v_first - v)

__global__ void value_residual_forward_kernel(float* out, const float* v, const float* v_first, const float* gate,
                                              int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = v[i] + (v_first[i] - v[i]) * gate[i];
}

__global__ void value_residual_backward_kernel(float* dv, float* dv_first, float* dgate, const float* dout,
                                               const float* v, const float* v_first, const float* gate, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float dy = dout[i];
        const float g = gate[i];
        dv[i] += dy * (1.0f - g);
        dv_first[i] += dy * g;
        dgate[i] += dy * (v_first[i] - v[i]);
    }
}

extern "C" int32_t arwkv_timemix_value_residual_forward(float* out, const float* v, const float* v_first,
                                                        const float* gate, int64_t n, void* stream) {
    ARWKV_REQUIRE(out != nullptr && v != nullptr && v_first != nullptr && gate != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(value_residual_forward_kernel, dim3(elementwise_blocks(n, 256)), dim3(256), 0,
                       as_stream(stream), out, v, v_first, gate, n);
    return arwkv_check_launch("value_residual_forward_kernel");
}

extern "C" int32_t arwkv_timemix_value_residual_backward(float* dv, float* dv_first, float* dgate, const float* dout,
                                                         const float* v, const float* v_first, const float* gate,
                                                         int64_t n, void* stream) {
    ARWKV_REQUIRE(dv != nullptr && dv_first != nullptr && dgate != nullptr && dout != nullptr && v != nullptr &&
                  v_first != nullptr && gate != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(value_residual_backward_kernel, dim3(elementwise_blocks(n, 256)), dim3(256), 0,
                       as_stream(stream), dv, dv_first, dgate, dout, v, v_first, gate, n);
    return arwkv_check_launch("value_residual_backward_kernel");
}

// ---- kk (L2 norm per head) and the k modification ------------------------------------------------------------------
//   u = k * k_k;  kk = u / max(||u||, 1e-12) (torch's F.normalize);  wkv_a = -kk;  wkv_b = kk * a
//   k_out = k * (1 + (a - 1) * k_a)
// Backward: dkk = -dwkv_a + dwkv_b * a;  du = (dkk - kk (kk . dkk)) / ||u|| (or dkk / eps when clamped);
//   dk += du k_k + dk_out (1 + (a - 1) k_a);  da += dwkv_b kk + dk_out k k_a;
//   dk_k += du k;  dk_a += dk_out k (a - 1)
constexpr float kNormEps = 1e-12f;

// grid (H, token slices), block kHeadSize: thread = channel within the head.
__global__ void timemix_kk_forward_kernel(float* wkv_a, float* wkv_b, float* k_out, float* kk_norm, const float* k,
                                          const float* a, const float* k_k, const float* k_a, int N, int C) {
    __shared__ float scratch[kMaxWarpsPerBlock];
    const int h = blockIdx.x;
    const int H = C / kHeadSize;
    const int c = h * kHeadSize + threadIdx.x;
    const float kk_scale = k_k[c];
    const float ka = k_a[c];
    for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
        const int64_t i = n * C + c;
        const float kv = k[i];
        const float av = a[i];
        const float u = kv * kk_scale;
        const float norm = sqrtf(block_reduce_sum(u * u, scratch));
        const float kk = u / fmaxf(norm, kNormEps);
        wkv_a[i] = -kk;
        wkv_b[i] = kk * av;
        k_out[i] = kv * (1.0f + (av - 1.0f) * ka);
        if (threadIdx.x == 0) kk_norm[n * H + h] = norm;
    }
}

__global__ void timemix_kk_backward_kernel(float* dk, float* da, float* dk_k, float* dk_a, const float* dwkv_a,
                                           const float* dwkv_b, const float* dk_out, const float* k, const float* a,
                                           const float* k_k, const float* k_a, const float* kk_norm, int N, int C) {
    __shared__ float scratch[kMaxWarpsPerBlock];
    const int h = blockIdx.x;
    const int H = C / kHeadSize;
    const int c = h * kHeadSize + threadIdx.x;
    const float kk_scale = k_k[c];
    const float ka = k_a[c];
    float dk_k_acc = 0.0f;
    float dk_a_acc = 0.0f;
    for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
        const int64_t i = n * C + c;
        const float kv = k[i];
        const float av = a[i];
        const float norm = kk_norm[n * H + h];
        const float denom = fmaxf(norm, kNormEps);
        const float kk = kv * kk_scale / denom;
        const float dkk = -dwkv_a[i] + dwkv_b[i] * av;
        float du;
        if (norm > kNormEps) {
            const float dot = block_reduce_sum(kk * dkk, scratch);
            du = (dkk - kk * dot) / norm;
        } else {
            du = dkk / kNormEps;
        }
        const float dko = dk_out[i];
        dk[i] += du * kk_scale + dko * (1.0f + (av - 1.0f) * ka);
        da[i] += dwkv_b[i] * kk + dko * kv * ka;
        dk_k_acc += du * kv;
        dk_a_acc += dko * kv * (av - 1.0f);
    }
    atomicAdd(&dk_k[c], dk_k_acc);
    atomicAdd(&dk_a[c], dk_a_acc);
}

extern "C" int32_t arwkv_timemix_kk_forward(float* wkv_a, float* wkv_b, float* k_out, float* kk_norm, const float* k,
                                            const float* a, const float* k_k, const float* k_a, int32_t N, int32_t C,
                                            void* stream) {
    ARWKV_REQUIRE(wkv_a != nullptr && wkv_b != nullptr && k_out != nullptr && kk_norm != nullptr && k != nullptr &&
                  a != nullptr && k_k != nullptr && k_a != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0 && C % kHeadSize == 0);
    if (N == 0) return ARWKV_HIP_OK;
    const dim3 grid(static_cast<unsigned int>(C / kHeadSize), static_cast<unsigned int>(token_slices(N)));
    hipLaunchKernelGGL(timemix_kk_forward_kernel, grid, dim3(kHeadSize), 0, as_stream(stream), wkv_a, wkv_b, k_out,
                       kk_norm, k, a, k_k, k_a, N, C);
    return arwkv_check_launch("timemix_kk_forward_kernel");
}

extern "C" int32_t arwkv_timemix_kk_backward(float* dk, float* da, float* dk_k, float* dk_a, const float* dwkv_a,
                                             const float* dwkv_b, const float* dk_out, const float* k, const float* a,
                                             const float* k_k, const float* k_a, const float* kk_norm, int32_t N,
                                             int32_t C, void* stream) {
    ARWKV_REQUIRE(dk != nullptr && da != nullptr && dk_k != nullptr && dk_a != nullptr && dwkv_a != nullptr &&
                  dwkv_b != nullptr && dk_out != nullptr && k != nullptr && a != nullptr && k_k != nullptr &&
                  k_a != nullptr && kk_norm != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0 && C % kHeadSize == 0);
    if (N == 0) return ARWKV_HIP_OK;
    const dim3 grid(static_cast<unsigned int>(C / kHeadSize), static_cast<unsigned int>(token_slices(N)));
    hipLaunchKernelGGL(timemix_kk_backward_kernel, grid, dim3(kHeadSize), 0, as_stream(stream), dk, da, dk_k, dk_a,
                       dwkv_a, dwkv_b, dk_out, k, a, k_k, k_a, kk_norm, N, C);
    return arwkv_check_launch("timemix_kk_backward_kernel");
}

// ---- bonus ---------------------------------------------------------------------------------------------------------
//   s = sum over the head of r k r_k;  y += s v
//   ds = sum over the head of dy v;  dv += dy s;  dr += ds k r_k;  dk += ds r r_k;  dr_k += ds r k

__global__ void timemix_bonus_forward_kernel(float* y, const float* r, const float* k, const float* v,
                                             const float* r_k, int N, int C) {
    __shared__ float scratch[kMaxWarpsPerBlock];
    const int h = blockIdx.x;
    const int c = h * kHeadSize + threadIdx.x;
    const float rk = r_k[c];
    for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
        const int64_t i = n * C + c;
        const float s = block_reduce_sum(r[i] * k[i] * rk, scratch);
        y[i] += s * v[i];
    }
}

__global__ void timemix_bonus_backward_kernel(float* dr, float* dk, float* dv, float* dr_k, const float* dy,
                                              const float* r, const float* k, const float* v, const float* r_k, int N,
                                              int C) {
    __shared__ float scratch[kMaxWarpsPerBlock];
    const int h = blockIdx.x;
    const int c = h * kHeadSize + threadIdx.x;
    const float rk = r_k[c];
    float dr_k_acc = 0.0f;
    for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
        const int64_t i = n * C + c;
        const float rv = r[i];
        const float kv = k[i];
        const float s = block_reduce_sum(rv * kv * rk, scratch);
        const float ds = block_reduce_sum(dy[i] * v[i], scratch);
        dv[i] += dy[i] * s;
        dr[i] += ds * kv * rk;
        dk[i] += ds * rv * rk;
        dr_k_acc += ds * rv * kv;
    }
    atomicAdd(&dr_k[c], dr_k_acc);
}

extern "C" int32_t arwkv_timemix_bonus_forward(float* y, const float* r, const float* k, const float* v,
                                               const float* r_k, int32_t N, int32_t C, void* stream) {
    ARWKV_REQUIRE(y != nullptr && r != nullptr && k != nullptr && v != nullptr && r_k != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0 && C % kHeadSize == 0);
    if (N == 0) return ARWKV_HIP_OK;
    const dim3 grid(static_cast<unsigned int>(C / kHeadSize), static_cast<unsigned int>(token_slices(N)));
    hipLaunchKernelGGL(timemix_bonus_forward_kernel, grid, dim3(kHeadSize), 0, as_stream(stream), y, r, k, v, r_k, N,
                       C);
    return arwkv_check_launch("timemix_bonus_forward_kernel");
}

extern "C" int32_t arwkv_timemix_bonus_backward(float* dr, float* dk, float* dv, float* dr_k, const float* dy,
                                                const float* r, const float* k, const float* v, const float* r_k,
                                                int32_t N, int32_t C, void* stream) {
    ARWKV_REQUIRE(dr != nullptr && dk != nullptr && dv != nullptr && dr_k != nullptr && dy != nullptr &&
                  r != nullptr && k != nullptr && v != nullptr && r_k != nullptr);
    ARWKV_REQUIRE(N >= 0 && C > 0 && C % kHeadSize == 0);
    if (N == 0) return ARWKV_HIP_OK;
    const dim3 grid(static_cast<unsigned int>(C / kHeadSize), static_cast<unsigned int>(token_slices(N)));
    hipLaunchKernelGGL(timemix_bonus_backward_kernel, grid, dim3(kHeadSize), 0, as_stream(stream), dr, dk, dv, dr_k, dy,
                       r, k, v, r_k, N, C);
    return arwkv_check_launch("timemix_bonus_backward_kernel");
}

// ---- gate multiply -------------------------------------------------------------------------------------------------
//   out = y g;  dy += dout g;  dg += dout y

__global__ void mul_forward_kernel(float* out, const float* y, const float* g, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = y[i] * g[i];
}

__global__ void mul_backward_kernel(float* dy, float* dg, const float* dout, const float* y, const float* g,
                                    int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        dy[i] += dout[i] * g[i];
        dg[i] += dout[i] * y[i];
    }
}

extern "C" int32_t arwkv_mul_forward(float* out, const float* y, const float* g, int64_t n, void* stream) {
    ARWKV_REQUIRE(out != nullptr && y != nullptr && g != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(mul_forward_kernel, dim3(elementwise_blocks(n, 256)), dim3(256), 0, as_stream(stream), out, y, g,
                       n);
    return arwkv_check_launch("mul_forward_kernel");
}

extern "C" int32_t arwkv_mul_backward(float* dy, float* dg, const float* dout, const float* y, const float* g,
                                      int64_t n, void* stream) {
    ARWKV_REQUIRE(dy != nullptr && dg != nullptr && dout != nullptr && y != nullptr && g != nullptr);
    ARWKV_REQUIRE(n >= 0);
    if (n == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(mul_backward_kernel, dim3(elementwise_blocks(n, 256)), dim3(256), 0, as_stream(stream), dy, dg,
                       dout, y, g, n);
    return arwkv_check_launch("mul_backward_kernel");
}

// wkv7.hip: the RWKV-7 recurrence (ARWKV.md sections 2 and 6), forward, backward and single-token decode.
//
// Per head (N = 64) the float32 state S [i = value channel, j = key channel] evolves as
//     sa_i = sum_j S[i][j] a_j
//     S[i][j] = S[i][j] w_j + v_i k_j + sa_i b_j
//     y_i = sum_j S[i][j] r_j
// (ARWKV: a = -kk, b = kk * iclr, w = decay in (0.545, 1)). The layout follows BlinkDL's CUDA kernel: one block of
// 64 threads per (sequence, head), walking t sequentially; thread i keeps row i of S in registers and each step's
// six 64-vectors are staged through shared memory, so the only synchronisation is two barriers per step.
//
// Backward, for each t from T-1 down to 0 with dS = dL/dS_t accumulated from later steps:
//     dS += dy r^T                       dr_j = sum_i S_t[i][j] dy_i
//     dw_j = sum_i dS[i][j] S_{t-1}[i][j]    dk_j = sum_i dS[i][j] v_i      db_j = sum_i dS[i][j] sa_i
//     dv_i = sum_j dS[i][j] k_j          dsa_i = sum_j dS[i][j] b_j         da_j = sum_i dsa_i S_{t-1}[i][j]
//     dS_{t-1}[i][j] = dS[i][j] w_j + dsa_i a_j
// The j-indexed sums run down columns and the i-indexed ones along rows, so the backward keeps a column of S and of
// dS per key channel j and a row of dS per value channel i: every sum is then thread-local, at the price of
// updating dS in both layouts. BlinkDL's kernel gives one thread all three (192 floats); ours gives the columns and
// the row to two waves (see wkv7_backward_kernel).
// S_{t-1} is rebuilt from S_t by inverting the step, S_{t-1}[i][j] = (S_t[i][j] - v_i k_j - sa_i b_j) / w_j, with
// the forward's saved sa; 1/w <= 1.84, and the state is reloaded exactly from the forward's checkpoint at every
// multiple of 16 so the inversion's rounding error grows over at most 15 steps.
#include "common.h"

constexpr int kWkvHead = 64;
constexpr int kCheckpointInterval = 16;

template <typename TIn>
__global__ void __launch_bounds__(kWkvHead)
wkv7_forward_kernel(float* y, float* state, float* checkpoints, float* sa_out, const TIn* r, const TIn* w,
                    const TIn* k, const TIn* v, const TIn* a, const TIn* b, const int32_t* mask, int T, int H) {
    const int bh = blockIdx.x;
    const int batch = bh / H;
    const int head = bh % H;
    const int i = threadIdx.x;
    __shared__ float r_s[kWkvHead], w_s[kWkvHead], k_s[kWkvHead], a_s[kWkvHead], b_s[kWkvHead];

    float S[kWkvHead];
    float* state_row = state != nullptr ? state + (int64_t)bh * kWkvHead * kWkvHead + i * kWkvHead : nullptr;
    for (int j = 0; j < kWkvHead; j++) S[j] = state_row != nullptr ? state_row[j] : 0.0f;

    const int chunks = T / kCheckpointInterval;
    for (int t = 0; t < T; t++) {
        const int64_t idx = (((int64_t)batch * T + t) * H + head) * kWkvHead + i;
        const bool active = mask == nullptr || mask[(int64_t)batch * T + t] != 0;
        if (active) {
            __syncthreads();  // the previous step has finished reading the shared vectors
            r_s[i] = load_as_float(r, idx);
            w_s[i] = load_as_float(w, idx);
            k_s[i] = load_as_float(k, idx);
            a_s[i] = load_as_float(a, idx);
            b_s[i] = load_as_float(b, idx);
            const float vi = load_as_float(v, idx);
            __syncthreads();
            float sa = 0.0f;
#pragma unroll
            for (int j = 0; j < kWkvHead; j++) sa += S[j] * a_s[j];
            float yi = 0.0f;
#pragma unroll
            for (int j = 0; j < kWkvHead; j++) {
                S[j] = S[j] * w_s[j] + vi * k_s[j] + sa * b_s[j];
                yi += S[j] * r_s[j];
            }
            y[idx] = yi;
            if (sa_out != nullptr) sa_out[idx] = sa;
        } else {
            y[idx] = 0.0f;
            if (sa_out != nullptr) sa_out[idx] = 0.0f;
        }
        if (checkpoints != nullptr && (t + 1) % kCheckpointInterval == 0) {
            float* dst = checkpoints + (((int64_t)bh * chunks + t / kCheckpointInterval) * kWkvHead + i) * kWkvHead;
#pragma unroll
            for (int j = 0; j < kWkvHead; j++) dst[j] = S[j];
        }
    }
    if (state_row != nullptr)
        for (int j = 0; j < kWkvHead; j++) state_row[j] = S[j];
}

// Copies column `column` of a [64,64] row-major state (NULL = zeros) into the same column of shared memory,
// whose element i is dst[i * 64].
__device__ inline void load_state_column_shared(float* dst, const float* src, int column) {
    for (int i = 0; i < kWkvHead; i++) dst[i * kWkvHead] = src != nullptr ? src[i * kWkvHead + column] : 0.0f;
}

// Two waves per head: threads [0, 64) take the column roles (as key channel j: a column of S and of dS), threads
// [64, 128) the row role (as value channel i: a row of dS). One thread holding all three, as BlinkDL's kernel does,
// needs 192 floats of state plus temporaries: on gfx90a (ROCm 5.2's hipcc) that was 256 VGPRs + 256 AGPRs with
// about 180 registers spilled to scratch and one wave per SIMD. Split over two waves it still spilled, so S lives in
// shared memory instead (16 KB per head): each column thread only ever touches its own column, so this adds no barrier, and consecutive lanes read
// consecutive banks. dS stays in registers in both roles; the roles meet only through dsa, published in shared
// memory between the two phases of a step. hipcc for gfx90a then uses 256 VGPRs, no AGPRs and no scratch; left
// to itself it aims at one wave per SIMD and parks values in AGPRs, so the second bound asks for two (HIP reads it
// as minimum waves per execution unit, CUDA as minimum blocks per SM: harmless there). The two roles' divergent
// branches keep both copies of dS live, which is what stops it at two.
constexpr int kWkvBackwardThreads = 2 * kWkvHead;

template <typename TIn>
__global__ void __launch_bounds__(kWkvBackwardThreads, 2)
wkv7_backward_kernel(float* dr, float* dw, float* dk, float* dv, float* da, float* db, float* dstate_init,
                     const float* dy, const float* checkpoints, const float* sa, const float* state_init, const TIn* r,
                     const TIn* w, const TIn* k, const TIn* v, const TIn* a, const TIn* b, const int32_t* mask, int T,
                     int H) {
    const int bh = blockIdx.x;
    const int batch = bh / H;
    const int head = bh % H;
    const bool column_role = threadIdx.x < kWkvHead;
    const int lane = threadIdx.x % kWkvHead;  // key channel j in the column role, value channel i in the row role
    __shared__ float r_s[kWkvHead], w_s[kWkvHead], k_s[kWkvHead], v_s[kWkvHead], a_s[kWkvHead], b_s[kWkvHead];
    __shared__ float dy_s[kWkvHead], sa_s[kWkvHead], dsa_s[kWkvHead];
    __shared__ float S_s[kWkvHead * kWkvHead];  // S_t, row-major; column `lane` belongs to column thread `lane`

    const int chunks = T / kCheckpointInterval;
    const float* my_checkpoints = checkpoints + (int64_t)bh * chunks * kWkvHead * kWkvHead;
    const float* my_state_init = state_init != nullptr ? state_init + (int64_t)bh * kWkvHead * kWkvHead : nullptr;

    float* S = S_s + lane;  // S[i * kWkvHead] = S_t[i][lane]
    // Column role: dS[i] = dS[i][lane]. Row role: dS[j] = dS[lane][j].
    float dS[kWkvHead];
    if (column_role) load_state_column_shared(S, my_checkpoints + (int64_t)(chunks - 1) * kWkvHead * kWkvHead, lane);
    for (int n = 0; n < kWkvHead; n++) dS[n] = 0.0f;

    for (int t = T - 1; t >= 0; t--) {
        const int64_t idx = (((int64_t)batch * T + t) * H + head) * kWkvHead + lane;
        const bool active = mask == nullptr || mask[(int64_t)batch * T + t] != 0;
        // The exact S_{t-1} exists at chunk starts: the previous checkpoint, or the initial state for t = 0.
        const bool exact_previous = t % kCheckpointInterval == 0;
        const float* previous =
            t == 0 ? my_state_init : my_checkpoints + (int64_t)(t / kCheckpointInterval - 1) * kWkvHead * kWkvHead;
        if (!active) {  // the same for the whole block: no barrier is skipped by only some threads
            if (column_role) {
                dr[idx] = dw[idx] = dk[idx] = da[idx] = db[idx] = 0.0f;
                if (exact_previous) load_state_column_shared(S, previous, lane);
            } else {
                dv[idx] = 0.0f;
            }
            continue;
        }
        __syncthreads();  // the previous step has finished reading the shared vectors
        if (column_role) {
            r_s[lane] = load_as_float(r, idx);
            w_s[lane] = load_as_float(w, idx);
            k_s[lane] = load_as_float(k, idx);
            v_s[lane] = load_as_float(v, idx);
            a_s[lane] = load_as_float(a, idx);
            b_s[lane] = load_as_float(b, idx);
        } else {
            dy_s[lane] = dy[idx];
            sa_s[lane] = sa[idx];
        }
        __syncthreads();

        // Phase 1: everything that needs only this step's inputs; the row wave publishes dsa.
        const float wj = w_s[lane], aj = a_s[lane];
        float dr_j = 0.0f, dw_j = 0.0f, dk_j = 0.0f, db_j = 0.0f, dv_i = 0.0f, dsa_i = 0.0f;
        if (column_role) {
            const float rj = r_s[lane], kj = k_s[lane], bj = b_s[lane];
#pragma unroll
            for (int i = 0; i < kWkvHead; i++) {
                dr_j += S[i * kWkvHead] * dy_s[i];
                dS[i] += dy_s[i] * rj;
            }
            if (exact_previous) {
                load_state_column_shared(S, previous, lane);
            } else {
                const float inv_w = 1.0f / wj;
#pragma unroll
                for (int i = 0; i < kWkvHead; i++) S[i * kWkvHead] = (S[i * kWkvHead] - v_s[i] * kj - sa_s[i] * bj) * inv_w;
            }
#pragma unroll
            for (int i = 0; i < kWkvHead; i++) {
                dw_j += dS[i] * S[i * kWkvHead];
                dk_j += dS[i] * v_s[i];
                db_j += dS[i] * sa_s[i];
            }
        } else {
            const float dyi = dy_s[lane];
#pragma unroll
            for (int j = 0; j < kWkvHead; j++) {
                dS[j] += dyi * r_s[j];
                dv_i += dS[j] * k_s[j];
                dsa_i += dS[j] * b_s[j];
            }
            dsa_s[lane] = dsa_i;
        }
        __syncthreads();
        // Phase 2: dsa is complete; both roles carry dS back to step t-1.
        if (column_role) {
            float da_j = 0.0f;
#pragma unroll
            for (int i = 0; i < kWkvHead; i++) {
                da_j += dsa_s[i] * S[i * kWkvHead];
                dS[i] = dS[i] * wj + dsa_s[i] * aj;
            }
            dr[idx] = dr_j;
            dw[idx] = dw_j;
            dk[idx] = dk_j;
            da[idx] = da_j;
            db[idx] = db_j;
        } else {
#pragma unroll
            for (int j = 0; j < kWkvHead; j++) dS[j] = dS[j] * w_s[j] + dsa_i * a_s[j];
            dv[idx] = dv_i;
        }
    }
    if (dstate_init != nullptr && !column_role) {
        float* dst = dstate_init + (int64_t)bh * kWkvHead * kWkvHead + lane * kWkvHead;
        for (int j = 0; j < kWkvHead; j++) dst[j] = dS[j];
    }
}

__global__ void __launch_bounds__(kWkvHead)
wkv7_decode_kernel(float* y, float* state, const float* r, const float* w, const float* k, const float* v,
                   const float* a, const float* b) {
    const int bh = blockIdx.x;
    const int i = threadIdx.x;
    __shared__ float r_s[kWkvHead], w_s[kWkvHead], k_s[kWkvHead], a_s[kWkvHead], b_s[kWkvHead];
    const int64_t idx = (int64_t)bh * kWkvHead + i;
    r_s[i] = r[idx];
    w_s[i] = w[idx];
    k_s[i] = k[idx];
    a_s[i] = a[idx];
    b_s[i] = b[idx];
    const float vi = v[idx];
    __syncthreads();
    float* row = state + (int64_t)bh * kWkvHead * kWkvHead + i * kWkvHead;
    float S[kWkvHead];
    float sa = 0.0f;
#pragma unroll
    for (int j = 0; j < kWkvHead; j++) {
        S[j] = row[j];
        sa += S[j] * a_s[j];
    }
    float yi = 0.0f;
#pragma unroll
    for (int j = 0; j < kWkvHead; j++) {
        const float s = S[j] * w_s[j] + vi * k_s[j] + sa * b_s[j];
        row[j] = s;
        yi += s * r_s[j];
    }
    y[idx] = yi;
}

extern "C" int32_t arwkv_wkv7_forward(float* y, float* state, float* checkpoints, float* sa, const void* r,
                                      const void* w, const void* k, const void* v, const void* a, const void* b,
                                      const int32_t* mask, int32_t dtype, int32_t B, int32_t T, int32_t H,
                                      void* stream) {
    ARWKV_REQUIRE(y != nullptr && r != nullptr && w != nullptr && k != nullptr && v != nullptr && a != nullptr &&
                  b != nullptr);
    ARWKV_REQUIRE((checkpoints == nullptr) == (sa == nullptr));
    ARWKV_REQUIRE(is_dtype(dtype));
    ARWKV_REQUIRE(B >= 0 && T >= 0 && H > 0);
    ARWKV_REQUIRE(checkpoints == nullptr || T % kCheckpointInterval == 0);
    if (B == 0 || T == 0) return ARWKV_HIP_OK;
    const dim3 grid(static_cast<unsigned int>(B * H));
    if (dtype == ARWKV_HIP_F32)
        hipLaunchKernelGGL(wkv7_forward_kernel<float>, grid, dim3(kWkvHead), 0, as_stream(stream), y, state,
                           checkpoints, sa, static_cast<const float*>(r), static_cast<const float*>(w),
                           static_cast<const float*>(k), static_cast<const float*>(v), static_cast<const float*>(a),
                           static_cast<const float*>(b), mask, T, H);
    else
        hipLaunchKernelGGL(wkv7_forward_kernel<bf16>, grid, dim3(kWkvHead), 0, as_stream(stream), y, state,
                           checkpoints, sa, static_cast<const bf16*>(r), static_cast<const bf16*>(w),
                           static_cast<const bf16*>(k), static_cast<const bf16*>(v), static_cast<const bf16*>(a),
                           static_cast<const bf16*>(b), mask, T, H);
    return arwkv_check_launch("wkv7_forward_kernel");
}

extern "C" int32_t arwkv_wkv7_backward(float* dr, float* dw, float* dk, float* dv, float* da, float* db,
                                       float* dstate_init, const float* dy, const float* checkpoints, const float* sa,
                                       const float* state_init, const void* r, const void* w, const void* k,
                                       const void* v, const void* a, const void* b, const int32_t* mask,
                                       int32_t dtype, int32_t B, int32_t T, int32_t H, void* stream) {
    ARWKV_REQUIRE(dr != nullptr && dw != nullptr && dk != nullptr && dv != nullptr && da != nullptr && db != nullptr);
    ARWKV_REQUIRE(dy != nullptr && checkpoints != nullptr && sa != nullptr);
    ARWKV_REQUIRE(r != nullptr && w != nullptr && k != nullptr && v != nullptr && a != nullptr && b != nullptr);
    ARWKV_REQUIRE(is_dtype(dtype));
    ARWKV_REQUIRE(B >= 0 && T >= 0 && H > 0);
    ARWKV_REQUIRE(T % kCheckpointInterval == 0);
    if (B == 0 || T == 0) return ARWKV_HIP_OK;
    const dim3 grid(static_cast<unsigned int>(B * H));
    if (dtype == ARWKV_HIP_F32)
        hipLaunchKernelGGL(wkv7_backward_kernel<float>, grid, dim3(kWkvBackwardThreads), 0, as_stream(stream), dr, dw, dk, dv, da,
                           db, dstate_init, dy, checkpoints, sa, state_init, static_cast<const float*>(r),
                           static_cast<const float*>(w), static_cast<const float*>(k), static_cast<const float*>(v),
                           static_cast<const float*>(a), static_cast<const float*>(b), mask, T, H);
    else
        hipLaunchKernelGGL(wkv7_backward_kernel<bf16>, grid, dim3(kWkvBackwardThreads), 0, as_stream(stream), dr, dw, dk, dv, da,
                           db, dstate_init, dy, checkpoints, sa, state_init, static_cast<const bf16*>(r),
                           static_cast<const bf16*>(w), static_cast<const bf16*>(k), static_cast<const bf16*>(v),
                           static_cast<const bf16*>(a), static_cast<const bf16*>(b), mask, T, H);
    return arwkv_check_launch("wkv7_backward_kernel");
}

extern "C" int32_t arwkv_wkv7_decode(float* y, float* state, const float* r, const float* w, const float* k,
                                     const float* v, const float* a, const float* b, int32_t B, int32_t H,
                                     void* stream) {
    ARWKV_REQUIRE(y != nullptr && state != nullptr && r != nullptr && w != nullptr && k != nullptr && v != nullptr &&
                  a != nullptr && b != nullptr);
    ARWKV_REQUIRE(B >= 0 && H > 0);
    if (B == 0) return ARWKV_HIP_OK;
    hipLaunchKernelGGL(wkv7_decode_kernel, dim3(static_cast<unsigned int>(B * H)), dim3(kWkvHead), 0,
                       as_stream(stream), y, state, r, w, k, v, a, b);
    return arwkv_check_launch("wkv7_decode_kernel");
}

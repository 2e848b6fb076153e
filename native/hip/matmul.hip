// matmul.hip: C = alpha * op(A) op(B) + beta * C for every linear layer, forward and backward, row-major, with
// f32 or bf16 operands and float32 accumulation. A linear layer with W [out,in] uses three variants:
//   forward   out [N,out]  = x [N,in] W^T            NT
//   backward  dx  [N,in]  += dout [N,out] W           NN
//             dW  [out,in] += dout^T x                TN (beta = 1 accumulates over micro-batches)
// The tiled kernel stages 64x64 output tiles through shared memory in K-slices of 16, converting bf16 to float as
// it loads, and gives each of its 256 threads a 4x4 block of outputs spaced 16 apart (so the 16 threads of a row
// read 16 different banks). Which global index varies fastest during the loads follows the transposition, so the
// loads stay coalesced in all variants. This is the portable baseline, not a tuned MFMA kernel: the vendor BLAS
// path (ARWKV_HIP_BLAS=rocblas|cublas at build time) is the fast one, and gemm_naive is the oracle for both.
#include "common.h"

#if defined(ARWKV_HIP_USE_ROCBLAS)
#if __has_include(<rocblas/rocblas.h>)
#include <rocblas/rocblas.h>
#else
#include <rocblas.h>
#endif
#endif

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 16;
constexpr int kGemmThreads = 256;
constexpr int kThreadRows = kTileM / 16;  // outputs per thread along M
constexpr int kThreadCols = kTileN / 16;  // outputs per thread along N
// Row padding keeps the transposed stores of the NN/NT A-tile loads off a single bank.
constexpr int kPad = 4;

template <bool TransA, typename TA>
__device__ inline float load_a(const TA* a, int m, int k, int M, int K) {
    if (m >= M || k >= K) return 0.0f;
    return TransA ? load_as_float(a, (int64_t)k * M + m) : load_as_float(a, (int64_t)m * K + k);
}

template <bool TransB, typename TB>
__device__ inline float load_b(const TB* b, int k, int n, int K, int N) {
    if (k >= K || n >= N) return 0.0f;
    return TransB ? load_as_float(b, (int64_t)n * K + k) : load_as_float(b, (int64_t)k * N + n);
}

template <bool TransA, bool TransB, typename TA, typename TB>
__global__ void __launch_bounds__(kGemmThreads)
gemm_tiled_kernel(float* c, const TA* a, const TB* b, int M, int N, int K, float alpha, float beta) {
    __shared__ float a_tile[kTileK][kTileM + kPad];
    __shared__ float b_tile[kTileK][kTileN + kPad];
    const int tid = threadIdx.x;
    const int tx = tid % 16;
    const int ty = tid / 16;
    const int m0 = blockIdx.y * kTileM;
    const int n0 = blockIdx.x * kTileN;

    float acc[kThreadRows][kThreadCols];
    for (int r = 0; r < kThreadRows; r++)
        for (int q = 0; q < kThreadCols; q++) acc[r][q] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += kTileK) {
        for (int l = tid; l < kTileM * kTileK; l += kGemmThreads) {
            // Fastest-varying index = the one contiguous in memory: k for row-major A, m for transposed A.
            const int mm = TransA ? l % kTileM : l / kTileK;
            const int kk = TransA ? l / kTileM : l % kTileK;
            a_tile[kk][mm] = load_a<TransA>(a, m0 + mm, k0 + kk, M, K);
        }
        for (int l = tid; l < kTileK * kTileN; l += kGemmThreads) {
            const int nn = TransB ? l / kTileK : l % kTileN;
            const int kk = TransB ? l % kTileK : l / kTileN;
            b_tile[kk][nn] = load_b<TransB>(b, k0 + kk, n0 + nn, K, N);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kTileK; kk++) {
            float a_frag[kThreadRows];
            float b_frag[kThreadCols];
#pragma unroll
            for (int r = 0; r < kThreadRows; r++) a_frag[r] = a_tile[kk][ty + 16 * r];
#pragma unroll
            for (int q = 0; q < kThreadCols; q++) b_frag[q] = b_tile[kk][tx + 16 * q];
#pragma unroll
            for (int r = 0; r < kThreadRows; r++)
#pragma unroll
                for (int q = 0; q < kThreadCols; q++) acc[r][q] += a_frag[r] * b_frag[q];
        }
        __syncthreads();
    }

    for (int r = 0; r < kThreadRows; r++) {
        const int m = m0 + ty + 16 * r;
        if (m >= M) continue;
        for (int q = 0; q < kThreadCols; q++) {
            const int n = n0 + tx + 16 * q;
            if (n >= N) continue;
            float* out = c + (int64_t)m * N + n;
            // beta == 0 must not read c: the buffer may be uninitialised and 0 * NaN is NaN.
            *out = beta == 0.0f ? alpha * acc[r][q] : alpha * acc[r][q] + beta * *out;
        }
    }
}

template <bool TransA, bool TransB, typename TA, typename TB>
__global__ void gemm_naive_kernel(float* c, const TA* a, const TB* b, int M, int N, int K, float alpha, float beta) {
    const int64_t total = (int64_t)M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int m = static_cast<int>(i / N);
        const int n = static_cast<int>(i % N);
        float acc = 0.0f;
        for (int k = 0; k < K; k++) acc += load_a<TransA>(a, m, k, M, K) * load_b<TransB>(b, k, n, K, N);
        c[i] = beta == 0.0f ? alpha * acc : alpha * acc + beta * c[i];
    }
}

// ---- dispatch over (trans_a, trans_b, a dtype, b dtype) ------------------------------------------------------------

template <bool TransA, bool TransB, typename TA, typename TB>
static void launch_gemm(bool naive, float* c, const void* a, const void* b, int M, int N, int K, float alpha,
                        float beta, hipStream_t stream) {
    const TA* ta = static_cast<const TA*>(a);
    const TB* tb = static_cast<const TB*>(b);
    if (naive) {
        hipLaunchKernelGGL((gemm_naive_kernel<TransA, TransB, TA, TB>), dim3(elementwise_blocks((int64_t)M * N, 128)),
                           dim3(128), 0, stream, c, ta, tb, M, N, K,
                           alpha, beta);
    } else {
        const dim3 grid(static_cast<unsigned int>((N + kTileN - 1) / kTileN),
                        static_cast<unsigned int>((M + kTileM - 1) / kTileM));
        hipLaunchKernelGGL((gemm_tiled_kernel<TransA, TransB, TA, TB>), grid, dim3(kGemmThreads), 0, stream, c, ta, tb,
                           M, N, K, alpha, beta);
    }
}

template <bool TransA, bool TransB>
static void launch_gemm_dtypes(bool naive, float* c, const void* a, int32_t a_dtype, const void* b, int32_t b_dtype,
                               int M, int N, int K, float alpha, float beta, hipStream_t stream) {
    if (a_dtype == ARWKV_HIP_F32 && b_dtype == ARWKV_HIP_F32)
        launch_gemm<TransA, TransB, float, float>(naive, c, a, b, M, N, K, alpha, beta, stream);
    else if (a_dtype == ARWKV_HIP_F32)
        launch_gemm<TransA, TransB, float, bf16>(naive, c, a, b, M, N, K, alpha, beta, stream);
    else if (b_dtype == ARWKV_HIP_F32)
        launch_gemm<TransA, TransB, bf16, float>(naive, c, a, b, M, N, K, alpha, beta, stream);
    else
        launch_gemm<TransA, TransB, bf16, bf16>(naive, c, a, b, M, N, K, alpha, beta, stream);
}

static int32_t gemm_dispatch(bool naive, float* c, const void* a, int32_t a_dtype, const void* b, int32_t b_dtype,
                             int32_t trans_a, int32_t trans_b, int32_t M, int32_t N, int32_t K, float alpha,
                             float beta, hipStream_t stream) {
    if (trans_a && trans_b)
        launch_gemm_dtypes<true, true>(naive, c, a, a_dtype, b, b_dtype, M, N, K, alpha, beta, stream);
    else if (trans_a)
        launch_gemm_dtypes<true, false>(naive, c, a, a_dtype, b, b_dtype, M, N, K, alpha, beta, stream);
    else if (trans_b)
        launch_gemm_dtypes<false, true>(naive, c, a, a_dtype, b, b_dtype, M, N, K, alpha, beta, stream);
    else
        launch_gemm_dtypes<false, false>(naive, c, a, a_dtype, b, b_dtype, M, N, K, alpha, beta, stream);
    return arwkv_check_launch(naive ? "gemm_naive_kernel" : "gemm_tiled_kernel");
}

// ---- vendor BLAS ---------------------------------------------------------------------------------------------------
// BLAS is column-major: a row-major [R,S] matrix is a column-major [S,R] one, so row-major C = op(A) op(B) is
// column-major C^T = op(B)^T op(A)^T: swap the operands and M/N, keep the transposition flags.
#if defined(ARWKV_HIP_USE_ROCBLAS)
static int32_t gemm_blas(float* c, const void* a, int32_t dtype, const void* b, int32_t trans_a, int32_t trans_b,
                         int32_t M, int32_t N, int32_t K, float alpha, float beta, hipStream_t stream) {
    // One handle per host thread: rocBLAS handles are not thread-safe, and creating one per call costs milliseconds.
    static thread_local rocblas_handle handle = nullptr;
    if (handle == nullptr && rocblas_create_handle(&handle) != rocblas_status_success)
        return arwkv_fail(ARWKV_HIP_ERROR_RUNTIME, "rocblas_create_handle failed");
    if (rocblas_set_stream(handle, stream) != rocblas_status_success)
        return arwkv_fail(ARWKV_HIP_ERROR_RUNTIME, "rocblas_set_stream failed");
    const rocblas_datatype type = dtype == ARWKV_HIP_BF16 ? rocblas_datatype_bf16_r : rocblas_datatype_f32_r;
    const rocblas_status status = rocblas_gemm_ex(
        handle, trans_b ? rocblas_operation_transpose : rocblas_operation_none,
        trans_a ? rocblas_operation_transpose : rocblas_operation_none, N, M, K, &alpha, b, type, trans_b ? K : N, a,
        type, trans_a ? M : K, &beta, c, rocblas_datatype_f32_r, N, c, rocblas_datatype_f32_r, N,
        rocblas_datatype_f32_r, rocblas_gemm_algo_standard, 0, 0);
    if (status != rocblas_status_success)
        return arwkv_fail(ARWKV_HIP_ERROR_RUNTIME, "rocblas_gemm_ex failed: %s", rocblas_status_to_string(status));
    return ARWKV_HIP_OK;
}
#elif defined(ARWKV_HIP_USE_CUBLAS)
static int32_t gemm_blas(float* c, const void* a, int32_t dtype, const void* b, int32_t trans_a, int32_t trans_b,
                         int32_t M, int32_t N, int32_t K, float alpha, float beta, hipStream_t stream) {
    static thread_local cublasHandle_t handle = nullptr;
    if (handle == nullptr && cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS)
        return arwkv_fail(ARWKV_HIP_ERROR_RUNTIME, "cublasCreate failed");
    if (cublasSetStream(handle, stream) != CUBLAS_STATUS_SUCCESS)
        return arwkv_fail(ARWKV_HIP_ERROR_RUNTIME, "cublasSetStream failed");
    const cudaDataType_t type = dtype == ARWKV_HIP_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasStatus_t status =
        cublasGemmEx(handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                     b, type, trans_b ? K : N, a, type, trans_a ? M : K, &beta, c, CUDA_R_32F, N, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT);
    if (status != CUBLAS_STATUS_SUCCESS)
        return arwkv_fail(ARWKV_HIP_ERROR_RUNTIME, "cublasGemmEx failed: %s", cublasGetStatusString(status));
    return ARWKV_HIP_OK;
}
#endif

// ---- C ABI ---------------------------------------------------------------------------------------------------------

#define ARWKV_GEMM_REQUIRE_ARGUMENTS()                                \
    ARWKV_REQUIRE(c != nullptr && a != nullptr && b != nullptr);      \
    ARWKV_REQUIRE(is_dtype(a_dtype) && is_dtype(b_dtype));            \
    ARWKV_REQUIRE(M >= 0 && N >= 0 && K >= 0);                        \
    ARWKV_REQUIRE(M <= 65535 * kTileM)

extern "C" int32_t arwkv_gemm(float* c, const void* a, int32_t a_dtype, const void* b, int32_t b_dtype,
                              int32_t trans_a, int32_t trans_b, int32_t M, int32_t N, int32_t K, float alpha,
                              float beta, void* stream) {
    ARWKV_GEMM_REQUIRE_ARGUMENTS();
    if (M == 0 || N == 0) return ARWKV_HIP_OK;
#if defined(ARWKV_HIP_USE_ROCBLAS) || defined(ARWKV_HIP_USE_CUBLAS)
    if (a_dtype == b_dtype && K > 0)
        return gemm_blas(c, a, a_dtype, b, trans_a, trans_b, M, N, K, alpha, beta, as_stream(stream));
#endif
    return gemm_dispatch(false, c, a, a_dtype, b, b_dtype, trans_a, trans_b, M, N, K, alpha, beta, as_stream(stream));
}

extern "C" int32_t arwkv_gemm_naive(float* c, const void* a, int32_t a_dtype, const void* b, int32_t b_dtype,
                                    int32_t trans_a, int32_t trans_b, int32_t M, int32_t N, int32_t K, float alpha,
                                    float beta, void* stream) {
    ARWKV_GEMM_REQUIRE_ARGUMENTS();
    if (M == 0 || N == 0) return ARWKV_HIP_OK;
    return gemm_dispatch(true, c, a, a_dtype, b, b_dtype, trans_a, trans_b, M, N, K, alpha, beta, as_stream(stream));
}

// common.h: what every .hip file of libarwkv_hip shares. It picks the vendor (HIP on AMD; CUDA through
// hip_to_cuda.h when nvcc compiles the same sources; the HIP-on-CPU executor of hip_to_cpu.h for the host compiler), defines the warp size as a compile-time function, bf16
// conversions written out by hand (HIP 5.2 has no hip_bf16.h and the two vendors' bf16 types differ), block
// reductions, and the error plumbing that turns runtime failures into the thread-local last error of the C ABI.
#pragma once

#if defined(__HIP__) || defined(__HIP_PLATFORM_AMD__)
#include <hip/hip_runtime.h>
#define ARWKV_PLATFORM_AMD 1
#elif defined(__CUDACC__)
#include "hip_to_cuda.h"
#define ARWKV_PLATFORM_NVIDIA 1
#else
// The host C++ compiler: the HIP-on-CPU executor, a testing tool (native/hip/build.sh --cpu).
#include "hip_to_cpu.h"
#endif

#include <math.h>
#include <stdint.h>

#include "arwkv_hip.h"

// ---- warp size ---------------------------------------------------------------------------------------------------
// 64 on CDNA (gfx90a, gfx94x), 32 on RDNA and NVIDIA. Only meaningful in device code: the host pass of a HIP
// compile does not know its targets, so launch shapes are chosen as multiples of 64, valid for both.
__host__ __device__ constexpr int warp_size() {
#if defined(__AMDGCN_WAVEFRONT_SIZE)
    return __AMDGCN_WAVEFRONT_SIZE;
#elif defined(ARWKV_PLATFORM_NVIDIA)
    return 32;
#elif defined(ARWKV_PLATFORM_CPU)
    return ARWKV_HIP_CPU_WARP_SIZE;
#else
    return 64;
#endif
}

// The largest block we launch; sizes the shared scratch of block reductions.
constexpr int kMaxBlockSize = 1024;
constexpr int kMaxWarpsPerBlock = kMaxBlockSize / 32;

// ---- bf16 --------------------------------------------------------------------------------------------------------
// A bf16 value is the upper 16 bits of an IEEE float32; the struct keeps it from mixing with integer arithmetic.
struct bf16 {
    uint16_t bits;
};
static_assert(sizeof(bf16) == 2, "bf16 must be 16 bits");

__host__ __device__ inline float bf16_to_float(bf16 value) {
    union { uint32_t u; float f; } cast;
    cast.u = static_cast<uint32_t>(value.bits) << 16;
    return cast.f;
}

// Round to nearest, ties to even; NaN is kept a (quiet) NaN instead of rounding into infinity.
__host__ __device__ inline bf16 float_to_bf16(float value) {
    union { uint32_t u; float f; } cast;
    cast.f = value;
    uint32_t u = cast.u;
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return bf16{static_cast<uint16_t>(u >> 16)};
}

__device__ inline float load_as_float(const float* p, int64_t i) { return p[i]; }
__device__ inline float load_as_float(const bf16* p, int64_t i) { return bf16_to_float(p[i]); }

// ---- reductions --------------------------------------------------------------------------------------------------
__device__ inline float warp_reduce_sum(float value) {
    for (int offset = warp_size() / 2; offset > 0; offset /= 2) value += __shfl_xor(value, offset);
    return value;
}

__device__ inline float warp_reduce_max(float value) {
    for (int offset = warp_size() / 2; offset > 0; offset /= 2) value = fmaxf(value, __shfl_xor(value, offset));
    return value;
}

// Sum over the whole block, returned to every thread. scratch holds kMaxWarpsPerBlock floats; the leading and
// trailing barriers let the same scratch serve back-to-back reductions.
__device__ inline float block_reduce_sum(float value, float* scratch) {
    const int lane = threadIdx.x % warp_size();
    const int warp = threadIdx.x / warp_size();
    const int warps = (blockDim.x + warp_size() - 1) / warp_size();
    value = warp_reduce_sum(value);
    __syncthreads();
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < warps; i++) total += scratch[i];
    __syncthreads();
    return total;
}

__device__ inline float block_reduce_max(float value, float* scratch) {
    const int lane = threadIdx.x % warp_size();
    const int warp = threadIdx.x / warp_size();
    const int warps = (blockDim.x + warp_size() - 1) / warp_size();
    value = warp_reduce_max(value);
    __syncthreads();
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    float total = -INFINITY;
    for (int i = 0; i < warps; i++) total = fmaxf(total, scratch[i]);
    __syncthreads();
    return total;
}

// ---- errors (runtime.hip) ----------------------------------------------------------------------------------------
// Records the calling thread's last error and returns the status, so call sites read `return arwkv_fail(...)`.
int32_t arwkv_fail(int32_t status, const char* format, ...) __attribute__((format(printf, 2, 3)));
// Turns a runtime error into ARWKV_HIP_ERROR_RUNTIME with the call's text and the runtime's message.
int32_t arwkv_check_runtime(hipError_t error, const char* what);
// After a launch: picks up launch-configuration errors (asynchronous faults surface at the next synchronize).
int32_t arwkv_check_launch(const char* kernel_name);

#define ARWKV_TRY(call)                                                    \
    do {                                                                   \
        int32_t arwkv_status_ = arwkv_check_runtime((call), #call);        \
        if (arwkv_status_ != ARWKV_HIP_OK) return arwkv_status_;           \
    } while (0)

#define ARWKV_REQUIRE(condition)                                                                     \
    do {                                                                                             \
        if (!(condition))                                                                            \
            return arwkv_fail(ARWKV_HIP_ERROR_INVALID_ARGUMENT, "%s: requires %s", __func__, #condition); \
    } while (0)

inline hipStream_t as_stream(void* stream) { return static_cast<hipStream_t>(stream); }

inline bool is_dtype(int32_t dtype) { return dtype == ARWKV_HIP_F32 || dtype == ARWKV_HIP_BF16; }

// Grid size for a grid-stride elementwise kernel: enough blocks to fill the device, never more than the work.
inline unsigned int elementwise_blocks(int64_t n, int block_size) {
    int64_t blocks = (n + block_size - 1) / block_size;
    if (blocks > 65536) blocks = 65536;
    return static_cast<unsigned int>(blocks < 1 ? 1 : blocks);
}

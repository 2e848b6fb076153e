// executor_selftest.hip: two deliberately broken kernels, compiled only into the HIP-on-CPU executor (never into a
// GPU build, and absent from arwkv_hip.h), so that tests can prove the executor's checks fire: a barrier that part of
// the block never reaches must come back as an error naming it, not a hang, and a missing barrier must change the
// result between release orders. A check that is never seen failing proves nothing about the kernels that pass it.
#include "common.h"

#if defined(ARWKV_PLATFORM_CPU)

__global__ void selftest_partial_barrier_kernel(float* out) {
    if (threadIdx.x < 32) __syncthreads();  // threads 32..63 never arrive
    out[threadIdx.x] = 1.0f;
}

__global__ void selftest_shared_race_kernel(float* out, float base) {
    __shared__ float slot[64];
    slot[threadIdx.x] = base + threadIdx.x;
    // Missing __syncthreads(): the neighbour's slot holds this launch's value only if the neighbour ran first.
    out[threadIdx.x] = slot[(threadIdx.x + 1) % 64];
}

extern "C" ARWKV_HIP_API int32_t arwkv_selftest_partial_barrier(float* out) {
    ARWKV_REQUIRE(out != nullptr);
    hipLaunchKernelGGL(selftest_partial_barrier_kernel, dim3(1), dim3(64), 0, nullptr, out);
    if (const int32_t status = arwkv_check_launch("selftest_partial_barrier_kernel"); status != ARWKV_HIP_OK) return status;
    ARWKV_TRY(hipDeviceSynchronize());
    return ARWKV_HIP_OK;
}

extern "C" ARWKV_HIP_API int32_t arwkv_selftest_shared_race(float* out, float base) {
    ARWKV_REQUIRE(out != nullptr);
    hipLaunchKernelGGL(selftest_shared_race_kernel, dim3(1), dim3(64), 0, nullptr, out, base);
    if (const int32_t status = arwkv_check_launch("selftest_shared_race_kernel"); status != ARWKV_HIP_OK) return status;
    ARWKV_TRY(hipDeviceSynchronize());
    return ARWKV_HIP_OK;
}

#endif

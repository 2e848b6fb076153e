// hip_to_cuda.h: the HIP names this library uses, spelled for CUDA, so that nvcc builds the same .hip sources
// (native/hip/build.sh --cuda). Only what the kernels and runtime.hip call is mapped: a name missing here is a
// compile error under nvcc, which is the point (every HIP call we make has a reviewed CUDA twin).
// Debian's HIP 5.2 NVIDIA headers cannot be used instead: they still reference texture APIs removed in CUDA 12.
#pragma once

#include <cuda_runtime.h>

// ---- runtime: errors ------------------------------------------------------------------------------------------
#define hipError_t cudaError_t
#define hipSuccess cudaSuccess
#define hipErrorNoDevice cudaErrorNoDevice
#define hipGetErrorString cudaGetErrorString
#define hipGetErrorName cudaGetErrorName
#define hipGetLastError cudaGetLastError
#define hipPeekAtLastError cudaPeekAtLastError

// ---- runtime: devices -----------------------------------------------------------------------------------------
#define hipDeviceProp_t cudaDeviceProp
#define hipGetDeviceCount cudaGetDeviceCount
#define hipGetDeviceProperties cudaGetDeviceProperties
#define hipSetDevice cudaSetDevice
#define hipGetDevice cudaGetDevice
#define hipDeviceSynchronize cudaDeviceSynchronize
#define hipRuntimeGetVersion cudaRuntimeGetVersion
#define hipDriverGetVersion cudaDriverGetVersion

// ---- runtime: memory ------------------------------------------------------------------------------------------
#define hipMalloc cudaMalloc
#define hipFree cudaFree
#define hipMemcpyAsync cudaMemcpyAsync
#define hipMemsetAsync cudaMemsetAsync
#define hipMemcpyHostToDevice cudaMemcpyHostToDevice
#define hipMemcpyDeviceToHost cudaMemcpyDeviceToHost
#define hipMemcpyDeviceToDevice cudaMemcpyDeviceToDevice

// ---- runtime: streams -----------------------------------------------------------------------------------------
#define hipStream_t cudaStream_t
#define hipStreamCreateWithFlags cudaStreamCreateWithFlags
#define hipStreamNonBlocking cudaStreamNonBlocking
#define hipStreamDestroy cudaStreamDestroy
#define hipStreamSynchronize cudaStreamSynchronize

// ---- kernel launch --------------------------------------------------------------------------------------------
#define hipLaunchKernelGGL(kernel, grid, block, shared_bytes, stream, ...) \
    (kernel)<<<(grid), (block), (shared_bytes), (stream)>>>(__VA_ARGS__)

// ---- warp intrinsics: HIP's are implicitly full-mask, CUDA's take the mask explicitly --------------------------
#define __shfl_xor(value, lane_mask) __shfl_xor_sync(0xffffffffu, (value), (lane_mask))
#define __shfl_down(value, delta) __shfl_down_sync(0xffffffffu, (value), (delta))
#define __shfl(value, src_lane) __shfl_sync(0xffffffffu, (value), (src_lane))

// ---- BLAS (only with ARWKV_HIP_BLAS=cublas) -------------------------------------------------------------------
#if defined(ARWKV_HIP_USE_CUBLAS)
#include <cublas_v2.h>
#endif

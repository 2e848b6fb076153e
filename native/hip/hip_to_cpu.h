// hip_to_cpu.h: the HIP names this library uses, implemented on the host CPU, so that the host C++ compiler builds
// the same .hip sources into a library that really executes every kernel (native/hip/build.sh --cpu). It is the
// sibling of hip_to_cuda.h and exists for testing: every kernel test, and the GPU trainer, run on every push on a
// machine without a GPU. Its timings mean nothing.
//
// Execution model (the executor itself is hip_to_cpu.cpp):
// - One "device", named so that nobody mistakes it for a GPU. Device memory is host memory, allocated with a
//   registry so that copies and kernel arguments that are not device pointers are reported, as a GPU would fault.
//   Fresh allocations are filled with 0xFF bytes (NaN as float), so a kernel that reads memory nobody wrote
//   shows NaN instead of a lucky zero.
// - Streams queue their work and run it when the host synchronizes (a stream, the device, or a download), in
//   order. Work queued on one stream and read through another without a synchronization is therefore stale, as it
//   may be on a GPU, but here every time.
// - Each block's threads are fibers on one OS thread (blocks are spread over a few worker threads). A fiber runs
//   until it reaches __syncthreads or a warp collective; when every thread of the block (or of the warp) has
//   arrived, they are released in the order the schedule chooses: forward, reverse, or a seeded shuffle (the race
//   check: a kernel whose result changes with the order is missing a barrier). A barrier that not every thread
//   reaches, or a shuffle that reads a lane that does not exist, fails the launch with a message; it never hangs.
// - Warp size is a build setting (ARWKV_HIP_CPU_WARP_SIZE, 64 as on CDNA or 32 as on NVIDIA): warp_size() decides
//   reduction shapes, so both are tested.
// - `__shared__` storage is thread_local: a block runs start to finish on one worker thread, so each worker's copy
//   is its block's. Dynamic shared memory (ARWKV_DYNAMIC_SHARED) is an arena per worker, refilled with NaN for
//   every block.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <atomic>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define ARWKV_PLATFORM_CPU 1

#ifndef ARWKV_HIP_CPU_WARP_SIZE
#define ARWKV_HIP_CPU_WARP_SIZE 64
#endif
static_assert(ARWKV_HIP_CPU_WARP_SIZE == 32 || ARWKV_HIP_CPU_WARP_SIZE == 64, "warp size is 32 or 64");

// ---- kernel language: qualifiers ----------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

// ---- runtime: errors ----------------------------------------------------------------------------------------------
// The codes HIP uses for the same conditions.
enum hipError_t {
    hipSuccess = 0,
    hipErrorInvalidValue = 1,
    hipErrorOutOfMemory = 2,
    hipErrorInvalidConfiguration = 9,
    hipErrorNoDevice = 100,
    hipErrorInvalidDevice = 101,
    hipErrorInvalidResourceHandle = 400,
    hipErrorLaunchFailure = 719,
};

const char* hipGetErrorString(hipError_t error);
const char* hipGetErrorName(hipError_t error);
hipError_t hipGetLastError(void);
hipError_t hipPeekAtLastError(void);

// ---- runtime: devices ---------------------------------------------------------------------------------------------
struct hipDeviceProp_t {
    char name[256];
    char gcnArchName[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    int multiProcessorCount;
    int warpSize;
    int maxThreadsPerBlock;
    int major;
    int minor;
};

hipError_t hipGetDeviceCount(int* count);
hipError_t hipGetDeviceProperties(hipDeviceProp_t* props, int device);
hipError_t hipSetDevice(int device);
hipError_t hipGetDevice(int* device);
hipError_t hipDeviceSynchronize(void);
hipError_t hipRuntimeGetVersion(int* version);
hipError_t hipDriverGetVersion(int* version);

// ---- runtime: memory and streams ----------------------------------------------------------------------------------
enum hipMemcpyKind {
    hipMemcpyHostToHost = 0,
    hipMemcpyHostToDevice = 1,
    hipMemcpyDeviceToHost = 2,
    hipMemcpyDeviceToDevice = 3,
};

struct ihipStream_t;
typedef ihipStream_t* hipStream_t;
constexpr unsigned int hipStreamDefault = 0;
constexpr unsigned int hipStreamNonBlocking = 1;

hipError_t hipMalloc(void** ptr, size_t bytes);
hipError_t hipFree(void* ptr);
hipError_t hipMemcpyAsync(void* dst, const void* src, size_t bytes, hipMemcpyKind kind, hipStream_t stream);
hipError_t hipMemsetAsync(void* dst, int value, size_t bytes, hipStream_t stream);
hipError_t hipStreamCreateWithFlags(hipStream_t* stream, unsigned int flags);
hipError_t hipStreamDestroy(hipStream_t stream);
hipError_t hipStreamSynchronize(hipStream_t stream);

// ---- kernel language: coordinates -------------------------------------------------------------------------------
struct dim3 {
    uint32_t x, y, z;
    constexpr dim3(uint32_t x_ = 1, uint32_t y_ = 1, uint32_t z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace hipcpu {

// What the executor keeps per running thread; only the coordinates are read by inline code.
struct ThreadCoordinates {
    dim3 thread_idx;
    dim3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
};

// The coordinates of the GPU thread the calling fiber is; set by the executor before it enters a fiber.
const ThreadCoordinates& coordinates();

// Block-wide barrier: yields until every thread of the block has arrived.
void syncthreads();

// One warp collective: every lane of the calling thread's warp must arrive with the same operation and width;
// returns the bits of the lane that this lane's operation selects.
enum class ShuffleOp : int { Index = 0, Xor = 1, Down = 2, Up = 3 };
uint64_t warp_shuffle(ShuffleOp op, int argument, int width, uint64_t bits);

// Fails the running launch with a message (a kernel-side assertion; reported by the next synchronization).
[[noreturn]] void trap(const char* message);

// The dynamic shared memory of the running block (its size was given at launch).
void* dynamic_shared_memory();

// The order fibers and blocks are released in (0 forward, 1 reverse, 2 seeded shuffle); false for another value.
bool set_schedule(int order, uint64_t seed);

// What the last failing call of this host thread was about (a kernel fault, a bad copy), for error messages.
const char* last_fault_detail();

template <typename T>
inline T shuffle(ShuffleOp op, T value, int argument, int width) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffles move values of at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &value, sizeof(T));
    bits = warp_shuffle(op, argument, width, bits);
    T result;
    memcpy(&result, &bits, sizeof(T));
    return result;
}

// ---- launches ---------------------------------------------------------------------------------------------------
// Type-erased body: the kernel with its arguments bound; each GPU thread of the launch calls it once.
void enqueue_kernel(const char* name, dim3 grid, dim3 block, size_t shared_bytes, hipStream_t stream,
                    std::function<void()> body, const void* const* pointer_arguments, int pointer_count);

template <typename T>
inline void collect_pointer(const void** out, int& count, const T& value) {
    if constexpr (std::is_pointer_v<T>) out[count++] = static_cast<const void*>(value);
}

template <typename... Params, typename... Args>
void launch_kernel(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                   hipStream_t stream, Args&&... args) {
    static_assert(sizeof...(Params) == sizeof...(Args), "a kernel is launched with one argument per parameter");
    // Arguments are converted to the parameter types at the launch, as a GPU launch copies them.
    std::tuple<std::decay_t<Params>...> bound(static_cast<std::decay_t<Params>>(std::forward<Args>(args))...);
    const void* pointers[sizeof...(Params) + 1];
    int count = 0;
    std::apply([&](const auto&... value) { (collect_pointer(pointers, count, value), ...); }, bound);
    enqueue_kernel(name, grid, block, shared_bytes, stream, [kernel, bound]() { std::apply(kernel, bound); },
                   pointers, count);
}

}  // namespace hipcpu

#define threadIdx (::hipcpu::coordinates().thread_idx)
#define blockIdx (::hipcpu::coordinates().block_idx)
#define blockDim (::hipcpu::coordinates().block_dim)
#define gridDim (::hipcpu::coordinates().grid_dim)

#define __syncthreads() ::hipcpu::syncthreads()

#define hipLaunchKernelGGL(kernel, grid, block, shared_bytes, stream, ...) \
    ::hipcpu::launch_kernel(#kernel, kernel, (grid), (block), (shared_bytes), (stream), __VA_ARGS__)

// Dynamic shared memory: `extern __shared__ T name[]` has no host equivalent.
#define ARWKV_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::hipcpu::dynamic_shared_memory())

// ---- kernel language: warp collectives (HIP spelling: implicitly the whole warp, width defaults to it) ------------
template <typename T>
inline T __shfl(T value, int src_lane, int width = ARWKV_HIP_CPU_WARP_SIZE) {
    return ::hipcpu::shuffle(::hipcpu::ShuffleOp::Index, value, src_lane, width);
}
template <typename T>
inline T __shfl_xor(T value, int lane_mask, int width = ARWKV_HIP_CPU_WARP_SIZE) {
    return ::hipcpu::shuffle(::hipcpu::ShuffleOp::Xor, value, lane_mask, width);
}
template <typename T>
inline T __shfl_down(T value, unsigned int delta, int width = ARWKV_HIP_CPU_WARP_SIZE) {
    return ::hipcpu::shuffle(::hipcpu::ShuffleOp::Down, value, static_cast<int>(delta), width);
}
template <typename T>
inline T __shfl_up(T value, unsigned int delta, int width = ARWKV_HIP_CPU_WARP_SIZE) {
    return ::hipcpu::shuffle(::hipcpu::ShuffleOp::Up, value, static_cast<int>(delta), width);
}

// ---- kernel language: atomics -------------------------------------------------------------------------------------
// Blocks run on several OS threads, so these are real atomics; float addition goes through atomic_ref, whose
// result (like a GPU's) depends on the order blocks reach it.
template <typename T>
inline T atomicAdd(T* address, T value) {
    static_assert(std::is_arithmetic_v<T>, "atomicAdd takes a number");
    return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}

template <typename T>
inline T atomicMax(T* address, T value) {
    std::atomic_ref<T> ref(*address);
    T old = ref.load(std::memory_order_relaxed);
    while (old < value && !ref.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
    }
    return old;
}

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- kernel language: math intrinsics not in the C library --------------------------------------------------------
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float x, float y) { return x / y; }

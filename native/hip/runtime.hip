// runtime.hip: the non-kernel half of the C ABI: version, devices, streams, device buffers, copies and the
// thread-local last error. Every GPU runtime call goes through ARWKV_TRY so that a failure reaches C# as a status
// plus a message naming the call and the runtime's own explanation (HipException carries it).
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common.h"

// ---- last error --------------------------------------------------------------------------------------------------

static thread_local int32_t g_last_error_code = ARWKV_HIP_OK;
static thread_local char g_last_error_message[1024];

int32_t arwkv_fail(int32_t status, const char* format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(g_last_error_message, sizeof g_last_error_message, format, args);
    va_end(args);
    g_last_error_code = status;
    return status;
}

int32_t arwkv_check_runtime(hipError_t error, const char* what) {
    if (error == hipSuccess) return ARWKV_HIP_OK;
    // Clear the runtime's sticky copy so the next, unrelated call does not report it again.
    (void)hipGetLastError();
    const int32_t status = error == hipErrorNoDevice ? ARWKV_HIP_ERROR_NO_DEVICE : ARWKV_HIP_ERROR_RUNTIME;
#if defined(ARWKV_PLATFORM_CPU)
    // The executor knows which kernel, block and threads failed, which a GPU runtime's error code does not say.
    return arwkv_fail(status, "%s failed: %s (%s, code %d): %s", what, hipGetErrorString(error),
                      hipGetErrorName(error), static_cast<int>(error), hipcpu::last_fault_detail());
#else
    return arwkv_fail(status, "%s failed: %s (%s, code %d)", what, hipGetErrorString(error), hipGetErrorName(error),
                      static_cast<int>(error));
#endif
}

int32_t arwkv_check_launch(const char* kernel_name) {
    const hipError_t error = hipGetLastError();
    if (error == hipSuccess) return ARWKV_HIP_OK;
#if defined(ARWKV_PLATFORM_CPU)
    return arwkv_fail(ARWKV_HIP_ERROR_RUNTIME, "launching %s failed: %s (%s, code %d): %s", kernel_name,
                      hipGetErrorString(error), hipGetErrorName(error), static_cast<int>(error),
                      hipcpu::last_fault_detail());
#else
    return arwkv_fail(ARWKV_HIP_ERROR_RUNTIME, "launching %s failed: %s (%s, code %d)", kernel_name,
                      hipGetErrorString(error), hipGetErrorName(error), static_cast<int>(error));
#endif
}

extern "C" int32_t arwkv_hip_last_error_code(void) { return g_last_error_code; }

extern "C" int32_t arwkv_hip_last_error_message(char* buffer, int32_t capacity) {
    const int32_t length = static_cast<int32_t>(strlen(g_last_error_message));
    if (buffer != nullptr && capacity > 0) {
        const int32_t copied = length < capacity - 1 ? length : capacity - 1;
        memcpy(buffer, g_last_error_message, static_cast<size_t>(copied));
        buffer[copied] = '\0';
    }
    return length;
}

// ---- library and devices -----------------------------------------------------------------------------------------

extern "C" int32_t arwkv_hip_abi_version(void) { return ARWKV_HIP_ABI_VERSION; }

extern "C" int32_t arwkv_hip_platform_id(void) {
#if defined(ARWKV_PLATFORM_AMD)
    return ARWKV_HIP_PLATFORM_AMD;
#elif defined(ARWKV_PLATFORM_CPU)
    return ARWKV_HIP_PLATFORM_CPU_EXECUTOR;
#else
    return ARWKV_HIP_PLATFORM_NVIDIA;
#endif
}

extern "C" int32_t arwkv_hip_executor_set_schedule(int32_t order, uint64_t seed) {
#if defined(ARWKV_PLATFORM_CPU)
    ARWKV_REQUIRE(order >= 0 && order <= 2);
    hipcpu::set_schedule(order, seed);
    return ARWKV_HIP_OK;
#else
    (void)order;
    (void)seed;
    return arwkv_fail(ARWKV_HIP_ERROR_UNSUPPORTED, "arwkv_hip_executor_set_schedule: this library runs on a GPU, "
                      "not on the HIP-on-CPU executor");
#endif
}

extern "C" int32_t arwkv_hip_blas_enabled(void) {
#if defined(ARWKV_HIP_USE_ROCBLAS) || defined(ARWKV_HIP_USE_CUBLAS)
    return 1;
#else
    return 0;
#endif
}

extern "C" int32_t arwkv_hip_runtime_version(int32_t* version) {
    ARWKV_REQUIRE(version != nullptr);
    int value = 0;
    ARWKV_TRY(hipRuntimeGetVersion(&value));
    *version = value;
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_device_count(int32_t* count) {
    ARWKV_REQUIRE(count != nullptr);
    *count = 0;
    int value = 0;
    ARWKV_TRY(hipGetDeviceCount(&value));
    *count = value;
    if (value == 0) return arwkv_fail(ARWKV_HIP_ERROR_NO_DEVICE, "hipGetDeviceCount found no GPU device");
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_device_info_get(int32_t device, arwkv_hip_device_info* info) {
    ARWKV_REQUIRE(info != nullptr);
    ARWKV_REQUIRE(device >= 0);
    hipDeviceProp_t props;
    memset(&props, 0, sizeof props);
    ARWKV_TRY(hipGetDeviceProperties(&props, device));
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", props.name);
#if defined(ARWKV_PLATFORM_AMD) || defined(ARWKV_PLATFORM_CPU)
    snprintf(info->arch, sizeof info->arch, "%.63s", props.gcnArchName);
#else
    snprintf(info->arch, sizeof info->arch, "sm_%d%d", props.major, props.minor);
#endif
    info->total_memory_bytes = static_cast<int64_t>(props.totalGlobalMem);
    info->multiprocessor_count = props.multiProcessorCount;
    info->warp_size = props.warpSize;
    info->max_threads_per_block = props.maxThreadsPerBlock;
    info->max_shared_memory_per_block = static_cast<int32_t>(props.sharedMemPerBlock);
    info->compute_major = props.major;
    info->compute_minor = props.minor;
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_init(int32_t device) {
    ARWKV_REQUIRE(device >= 0);
    ARWKV_TRY(hipSetDevice(device));
    // hipFree(nullptr) forces context creation now rather than inside the first timed kernel.
    ARWKV_TRY(hipFree(nullptr));
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_device_synchronize(void) {
    ARWKV_TRY(hipDeviceSynchronize());
    return ARWKV_HIP_OK;
}

// ---- streams -----------------------------------------------------------------------------------------------------

extern "C" int32_t arwkv_hip_stream_create(void** stream) {
    ARWKV_REQUIRE(stream != nullptr);
    hipStream_t created = nullptr;
    // Non-blocking: our streams must not serialize against work other libraries put on the legacy default stream.
    ARWKV_TRY(hipStreamCreateWithFlags(&created, hipStreamNonBlocking));
    *stream = created;
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_stream_destroy(void* stream) {
    ARWKV_REQUIRE(stream != nullptr);
    ARWKV_TRY(hipStreamDestroy(as_stream(stream)));
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_stream_synchronize(void* stream) {
    ARWKV_TRY(hipStreamSynchronize(as_stream(stream)));
    return ARWKV_HIP_OK;
}

// ---- memory ------------------------------------------------------------------------------------------------------

extern "C" int32_t arwkv_hip_malloc(void** device_ptr, size_t bytes) {
    ARWKV_REQUIRE(device_ptr != nullptr);
    ARWKV_REQUIRE(bytes > 0);
    *device_ptr = nullptr;
    ARWKV_TRY(hipMalloc(device_ptr, bytes));
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_free(void* device_ptr) {
    if (device_ptr == nullptr) return ARWKV_HIP_OK;
    ARWKV_TRY(hipFree(device_ptr));
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_memcpy_h2d(void* dst_device, const void* src_host, size_t bytes, void* stream) {
    ARWKV_REQUIRE(dst_device != nullptr && src_host != nullptr);
    if (bytes == 0) return ARWKV_HIP_OK;
    ARWKV_TRY(hipMemcpyAsync(dst_device, src_host, bytes, hipMemcpyHostToDevice, as_stream(stream)));
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_memcpy_d2h(void* dst_host, const void* src_device, size_t bytes, void* stream) {
    ARWKV_REQUIRE(dst_host != nullptr && src_device != nullptr);
    if (bytes == 0) return ARWKV_HIP_OK;
    ARWKV_TRY(hipMemcpyAsync(dst_host, src_device, bytes, hipMemcpyDeviceToHost, as_stream(stream)));
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_memcpy_d2d(void* dst_device, const void* src_device, size_t bytes, void* stream) {
    ARWKV_REQUIRE(dst_device != nullptr && src_device != nullptr);
    if (bytes == 0) return ARWKV_HIP_OK;
    ARWKV_TRY(hipMemcpyAsync(dst_device, src_device, bytes, hipMemcpyDeviceToDevice, as_stream(stream)));
    return ARWKV_HIP_OK;
}

extern "C" int32_t arwkv_hip_memset(void* dst_device, int32_t byte_value, size_t bytes, void* stream) {
    ARWKV_REQUIRE(dst_device != nullptr);
    ARWKV_REQUIRE(byte_value >= 0 && byte_value <= 255);
    if (bytes == 0) return ARWKV_HIP_OK;
    ARWKV_TRY(hipMemsetAsync(dst_device, byte_value, bytes, as_stream(stream)));
    return ARWKV_HIP_OK;
}

using System.Runtime.InteropServices;

namespace Arwkv.Hip;

/// <summary>
/// Source-generated bindings to native/hip/arwkv_hip.h, one to one and in the header's order (change both together).
/// Device pointers and streams are <see cref="nint"/>, size_t is <see cref="nuint"/>; every function returns an
/// <c>arwkv_hip_status</c>. The library name is resolved by <see cref="HipRuntime"/>'s import resolver to the copy
/// <see cref="HipRuntime.TryLoad"/> found, so nothing here may be called before it succeeded.
/// </summary>
internal static unsafe partial class NativeMethods
{
    internal const string LibraryName = "arwkv_hip";

    /// <summary>Must match ARWKV_HIP_ABI_VERSION in arwkv_hip.h.</summary>
    internal const int AbiVersion = 2;

    internal const int F32 = 0;
    internal const int BF16 = 1;

    [StructLayout(LayoutKind.Sequential)]
    internal struct DeviceInfo
    {
        public fixed byte Name[256];
        public fixed byte Arch[64];
        public long TotalMemoryBytes;
        public int MultiprocessorCount;
        public int WarpSize;
        public int MaxThreadsPerBlock;
        public int MaxSharedMemoryPerBlock;
        public int ComputeMajor;
        public int ComputeMinor;
    }

    // ---- runtime ------------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_abi_version();
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_platform_id();
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_runtime_version(out int version);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_blas_enabled();
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_device_count(out int count);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_device_info_get(int device, DeviceInfo* info);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_init(int device);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_device_synchronize();
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_executor_set_schedule(int order, ulong seed);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_last_error_code();
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_last_error_message(byte* buffer, int capacity);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_stream_create(out nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_stream_destroy(nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_stream_synchronize(nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_malloc(out nint devicePtr, nuint bytes);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_free(nint devicePtr);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_memcpy_h2d(nint dst, void* src, nuint bytes, nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_memcpy_d2h(void* dst, nint src, nuint bytes, nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_memcpy_d2d(nint dst, nint src, nuint bytes, nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_hip_memset(nint dst, int byteValue, nuint bytes, nint stream);

    // ---- convert.hip --------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)] internal static partial int arwkv_convert_f32_to_bf16(nint output, nint input, long n, nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_convert_bf16_to_f32(nint output, nint input, long n, nint stream);

    // ---- embedding.hip ------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_embedding_forward(nint output, nint tokens, nint table, int tableDType, int n, int c, int v, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_embedding_backward(nint dtable, nint tokens, nint dout, int n, int c, int v, nint stream);

    // ---- rmsnorm.hip --------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_rmsnorm_forward(nint output, nint rstd, nint input, nint weight, int n, int c, float eps, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_rmsnorm_backward(nint dinput, nint dweight, nint dout, nint input, nint weight, nint rstd, int n, int c, nint stream);

    // ---- swiglu.hip ---------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)] internal static partial int arwkv_swiglu_forward(nint output, nint gate, nint up, long n, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_swiglu_backward(nint dgate, nint dup, nint dout, nint gate, nint up, long n, nint stream);

    // ---- timemix.hip --------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_timemix_lerp_forward(nint output, nint x, nint shiftState, nint lerp, int b, int t, int c, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_timemix_lerp_backward(nint dx, nint dlerp, nint dout, nint x, nint shiftState, nint lerp, int b, int t, int c, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_timemix_decay_forward(nint decay, nint z, nint w0, int n, int c, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_timemix_decay_backward(nint dz, nint dw0, nint ddecay, nint decay, int n, int c, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_sigmoid_bias_forward(nint output, nint input, nint bias, int n, int c, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_sigmoid_bias_backward(nint dinput, nint dbias, nint dout, nint output, int n, int c, nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_tanh_forward(nint output, nint input, long n, nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_tanh_backward(nint dinput, nint dout, nint output, long n, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_timemix_value_residual_forward(nint output, nint v, nint vFirst, nint gate, long n, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_timemix_value_residual_backward(nint dv, nint dvFirst, nint dgate, nint dout, nint v, nint vFirst, nint gate, long n, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_timemix_kk_forward(nint wkvA, nint wkvB, nint kOut, nint kkNorm, nint k, nint a, nint kK, nint kA, int n, int c, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_timemix_kk_backward(nint dk, nint da, nint dkK, nint dkA, nint dwkvA, nint dwkvB, nint dkOut,
        nint k, nint a, nint kK, nint kA, nint kkNorm, int n, int c, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_timemix_bonus_forward(nint y, nint r, nint k, nint v, nint rK, int n, int c, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_timemix_bonus_backward(nint dr, nint dk, nint dv, nint drK, nint dy, nint r, nint k, nint v, nint rK, int n, int c, nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_mul_forward(nint output, nint y, nint g, long n, nint stream);
    [LibraryImport(LibraryName)] internal static partial int arwkv_mul_backward(nint dy, nint dg, nint dout, nint y, nint g, long n, nint stream);

    // ---- wkv7.hip -----------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_wkv7_forward(nint y, nint state, nint checkpoints, nint sa, nint r, nint w, nint k, nint v, nint a, nint b,
        nint mask, int dtype, int batch, int time, int heads, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_wkv7_backward(nint dr, nint dw, nint dk, nint dv, nint da, nint db, nint dstateInit, nint dy,
        nint checkpoints, nint sa, nint stateInit, nint r, nint w, nint k, nint v, nint a, nint b, nint mask,
        int dtype, int batch, int time, int heads, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_wkv7_decode(nint y, nint state, nint r, nint w, nint k, nint v, nint a, nint b, int batch, int heads, nint stream);

    // ---- attention.hip ------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_rope_forward(nint output, nint x, nint cosTable, nint sinTable, nint startPositions,
        int batch, int time, int heads, int headDim, int positions, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_rope_backward(nint dx, nint dout, nint cosTable, nint sinTable, nint startPositions,
        int batch, int time, int heads, int headDim, int positions, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_attention_forward(nint output, nint lse, nint q, nint k, nint v, nint mask,
        int batch, int time, int heads, int kvHeads, int headDim, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_attention_backward(nint dq, nint dk, nint dv, nint delta, nint dout, nint output, nint lse,
        nint q, nint k, nint v, nint mask, int batch, int time, int heads, int kvHeads, int headDim, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_attention_decode(nint output, nint q, nint kCache, nint vCache, nint lengths, int cacheDType,
        int batch, int heads, int kvHeads, int headDim, int capacity, nint stream);

    // ---- matmul.hip ---------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_gemm(nint c, nint a, int aDType, nint b, int bDType, int transA, int transB, int m, int n, int k,
        float alpha, float beta, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_gemm_naive(nint c, nint a, int aDType, nint b, int bDType, int transA, int transB, int m, int n, int k,
        float alpha, float beta, nint stream);

    // ---- losses.hip ---------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_alignment_loss_forward(nint losses, nint student, nint teacher, int n, int c, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_alignment_loss_backward(nint dstudent, nint student, nint teacher, nint losses, float gradScale, int n, int c, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_kl_forward_backward(nint losses, nint dstudent, nint studentLogits, nint teacherLogits, int dtype, nint mask,
        float gradScale, int n, int v, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_cross_entropy_forward_backward(nint losses, nint dlogits, nint logits, int dtype, nint targets,
        float gradScale, int n, int v, nint stream);

    // ---- adamw.hip ----------------------------------------------------------------------------------------------
    [LibraryImport(LibraryName)] internal static partial int arwkv_grad_norm_squared(nint normSquared, nint grad, long n, nint stream);
    [LibraryImport(LibraryName)]
    internal static partial int arwkv_adamw_update(nint master, nint bf16Copy, nint m, nint v, nint grad, long n, float learningRate,
        float beta1, float beta2, float eps, float weightDecay, int step, nint gradNormSquared, float maxGradNorm, nint stream);
}

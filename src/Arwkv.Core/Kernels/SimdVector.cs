using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;

namespace Arwkv.Kernels;

/// <summary>
/// A float32 vector of one hardware width, so that a kernel's math is written once, generic over
/// <typeparamref name="TSelf"/>, and the JIT specializes each instantiation to straight-line code of that width.
/// .NET 10 keeps its own <c>ISimdVector&lt;TSelf, T&gt;</c> internal, hence this small copy of the idea.
/// Everything is static so that no instantiation allocates or dispatches.
/// </summary>
internal unsafe interface ISimdVector<TSelf> where TSelf : unmanaged, ISimdVector<TSelf>
{
    /// <summary>Lanes per vector.</summary>
    static abstract int Count { get; }

    /// <summary>Whether this width runs in hardware here (otherwise the runtime emulates it, far slower than scalar).</summary>
    static abstract bool IsHardwareAccelerated { get; }

    /// <summary>The width's place in <see cref="KernelIsa"/>, compared against <see cref="MatMul.Isa"/> by drivers.</summary>
    static abstract KernelIsa Isa { get; }

    static abstract TSelf Load(float* source);
    static abstract void Store(TSelf value, float* destination);
    static abstract TSelf Broadcast(float value);

    /// <summary>a * b + c, fused where the CPU can (results then differ from the unfused form by rounding only).</summary>
    static abstract TSelf Fma(TSelf a, TSelf b, TSelf c);

    /// <summary>Horizontal sum of the lanes.</summary>
    static abstract float Sum(TSelf value);

    /// <summary>
    /// Widens 2 * Count BF16 values at <paramref name="source"/> into float32 without a permute: read as 32-bit lanes,
    /// (v &lt;&lt; 16) holds the even elements and (v &amp; 0xFFFF0000) the odd ones, so the caller orders the other
    /// operand to match (evens then odds within each block of 2 * Count, <see cref="MatMul.PermuteEvenOdd"/>).
    /// </summary>
    static abstract void LoadBf16EvenOdd(ushort* source, out TSelf even, out TSelf odd);

    static abstract TSelf operator +(TSelf a, TSelf b);
    static abstract TSelf operator *(TSelf a, TSelf b);
    static abstract TSelf operator -(TSelf a);
}

/// <summary>128-bit vectors through the cross-platform <see cref="Vector128"/> API: SSE on x86, AdvSimd on ARM64.</summary>
internal readonly unsafe struct SimdVector128 : ISimdVector<SimdVector128>
{
    readonly Vector128<float> _value;
    SimdVector128(Vector128<float> value) => _value = value;

    public static int Count => Vector128<float>.Count;
    public static bool IsHardwareAccelerated => Vector128.IsHardwareAccelerated;
    public static KernelIsa Isa => KernelIsa.Vector128;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector128 Load(float* source) => new(Vector128.Load(source));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(SimdVector128 value, float* destination) => value._value.Store(destination);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector128 Broadcast(float value) => new(Vector128.Create(value));

    // x86 with AVX2 turned off has no FMA (the JIT treats them as one group), and Vector128.FusedMultiplyAdd is then
    // emulated in software: an unfused multiply-add is the fast 128-bit form there.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector128 Fma(SimdVector128 a, SimdVector128 b, SimdVector128 c)
        => System.Runtime.Intrinsics.X86.Fma.IsSupported || AdvSimd.IsSupported ? new(Vector128.FusedMultiplyAdd(a._value, b._value, c._value)) : new(a._value * b._value + c._value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(SimdVector128 value) => Vector128.Sum(value._value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadBf16EvenOdd(ushort* source, out SimdVector128 even, out SimdVector128 odd)
    {
        Vector128<uint> bits = Vector128.Load((uint*)source);
        even = new(Vector128.ShiftLeft(bits, 16).AsSingle());
        odd = new((bits & Vector128.Create(0xFFFF0000u)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector128 operator +(SimdVector128 a, SimdVector128 b) => new(a._value + b._value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector128 operator *(SimdVector128 a, SimdVector128 b) => new(a._value * b._value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector128 operator -(SimdVector128 a) => new(-a._value);
}

/// <summary>256-bit vectors (AVX2 with FMA).</summary>
internal readonly unsafe struct SimdVector256 : ISimdVector<SimdVector256>
{
    readonly Vector256<float> _value;
    SimdVector256(Vector256<float> value) => _value = value;

    public static int Count => Vector256<float>.Count;
    public static bool IsHardwareAccelerated => Vector256.IsHardwareAccelerated;
    public static KernelIsa Isa => KernelIsa.Vector256;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector256 Load(float* source) => new(Vector256.Load(source));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(SimdVector256 value, float* destination) => value._value.Store(destination);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector256 Broadcast(float value) => new(Vector256.Create(value));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector256 Fma(SimdVector256 a, SimdVector256 b, SimdVector256 c) => new(Vector256.FusedMultiplyAdd(a._value, b._value, c._value));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(SimdVector256 value) => Vector256.Sum(value._value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadBf16EvenOdd(ushort* source, out SimdVector256 even, out SimdVector256 odd)
    {
        Vector256<uint> bits = Vector256.Load((uint*)source);
        even = new(Vector256.ShiftLeft(bits, 16).AsSingle());
        odd = new((bits & Vector256.Create(0xFFFF0000u)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector256 operator +(SimdVector256 a, SimdVector256 b) => new(a._value + b._value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector256 operator *(SimdVector256 a, SimdVector256 b) => new(a._value * b._value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector256 operator -(SimdVector256 a) => new(-a._value);
}

/// <summary>512-bit vectors (AVX-512F).</summary>
internal readonly unsafe struct SimdVector512 : ISimdVector<SimdVector512>
{
    readonly Vector512<float> _value;
    SimdVector512(Vector512<float> value) => _value = value;

    public static int Count => Vector512<float>.Count;
    public static bool IsHardwareAccelerated => Vector512.IsHardwareAccelerated;
    public static KernelIsa Isa => KernelIsa.Vector512;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector512 Load(float* source) => new(Vector512.Load(source));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(SimdVector512 value, float* destination) => value._value.Store(destination);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector512 Broadcast(float value) => new(Vector512.Create(value));
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector512 Fma(SimdVector512 a, SimdVector512 b, SimdVector512 c) => new(Vector512.FusedMultiplyAdd(a._value, b._value, c._value));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(SimdVector512 value) => Vector512.Sum(value._value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadBf16EvenOdd(ushort* source, out SimdVector512 even, out SimdVector512 odd)
    {
        Vector512<uint> bits = Vector512.Load((uint*)source);
        even = new(Vector512.ShiftLeft(bits, 16).AsSingle());
        odd = new((bits & Vector512.Create(0xFFFF0000u)).AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector512 operator +(SimdVector512 a, SimdVector512 b) => new(a._value + b._value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector512 operator *(SimdVector512 a, SimdVector512 b) => new(a._value * b._value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector512 operator -(SimdVector512 a) => new(-a._value);
}

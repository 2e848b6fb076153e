using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

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

    /// <summary>The even elements of 2 * Count BF16 values, as float32 (the first half of <see cref="LoadBf16EvenOdd"/>).</summary>
    static abstract TSelf LoadBf16Even(ushort* source);

    /// <summary>The odd elements of 2 * Count BF16 values, as float32 (the second half of <see cref="LoadBf16EvenOdd"/>).</summary>
    static abstract TSelf LoadBf16Odd(ushort* source);

    /// <summary>Count consecutive BF16 values widened to float32, in order.</summary>
    static abstract TSelf LoadBf16(ushort* source);

    /// <summary>
    /// Narrows to BF16 with round-to-nearest-even, NaN staying a quiet NaN (the rounding of
    /// <see cref="Convert.Float32ToBFloat16(float)"/>), and stores Count values.
    /// </summary>
    static abstract void StoreBf16(TSelf value, ushort* destination);

    /// <summary>Count consecutive int8 values converted to float32 (exactly), in order.</summary>
    static abstract TSelf LoadInt8(sbyte* source);

    /// <summary>
    /// Reads 2 * Count floats and stores the even-indexed ones at <paramref name="evens"/> and the odd ones at
    /// <paramref name="odds"/>, Count each: the activation order that <see cref="LoadBf16EvenOdd"/> pairs with.
    /// </summary>
    static abstract void StoreEvenOdd(float* source, float* evens, float* odds);

    /// <summary>The horizontal sums of four vectors, as lanes 0-3: a transposing reduction, cheaper than four <see cref="Sum"/>s.</summary>
    static abstract Vector128<float> Sum4(TSelf a, TSelf b, TSelf c, TSelf d);

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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector128 LoadBf16Even(ushort* source) => new(Vector128.ShiftLeft(Vector128.Load((uint*)source), 16).AsSingle());
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector128 LoadBf16Odd(ushort* source) => new((Vector128.Load((uint*)source) & Vector128.Create(0xFFFF0000u)).AsSingle());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector128 LoadBf16(ushort* source)
        => new(Vector128.ShiftLeft(Vector128.WidenLower(Vector128.CreateScalar(*(ulong*)source).AsUInt16()), 16).AsSingle());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector128 LoadInt8(sbyte* source)
        => new(Vector128.ConvertToSingle(Vector128.WidenLower(Vector128.WidenLower(Vector128.CreateScalar(*(int*)source).AsSByte()))));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreEvenOdd(float* source, float* evens, float* odds)
    {
        Vector128<float> lo = Vector128.Load(source), hi = Vector128.Load(source + 4);
        if (Sse.IsSupported)
        {
            Sse.Shuffle(lo, hi, 0b10_00_10_00).Store(evens);
            Sse.Shuffle(lo, hi, 0b11_01_11_01).Store(odds);
        }
        else if (AdvSimd.Arm64.IsSupported)
        {
            AdvSimd.Arm64.UnzipEven(lo, hi).Store(evens);
            AdvSimd.Arm64.UnzipOdd(lo, hi).Store(odds);
        }
        else
        {
            for (int i = 0; i < 4; i++) { evens[i] = source[2 * i]; odds[i] = source[2 * i + 1]; }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(SimdVector128 a, SimdVector128 b, SimdVector128 c, SimdVector128 d) => Sum4(a._value, b._value, c._value, d._value);

    /// <summary>Pairwise adds of pairwise adds: [sum a, sum b, sum c, sum d].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> Sum4(Vector128<float> a, Vector128<float> b, Vector128<float> c, Vector128<float> d)
    {
        if (Sse3.IsSupported) return Sse3.HorizontalAdd(Sse3.HorizontalAdd(a, b), Sse3.HorizontalAdd(c, d));
        if (AdvSimd.Arm64.IsSupported) return AdvSimd.Arm64.AddPairwise(AdvSimd.Arm64.AddPairwise(a, b), AdvSimd.Arm64.AddPairwise(c, d));
        return Vector128.Create(Vector128.Sum(a), Vector128.Sum(b), Vector128.Sum(c), Vector128.Sum(d));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreBf16(SimdVector128 value, ushort* destination)
    {
        Vector128<uint> raw = value._value.AsUInt32();
        Vector128<uint> rounded = (raw + Vector128.Create(0x7FFFu) + ((raw >> 16) & Vector128<uint>.One)) >> 16;
        Vector128<uint> nan = (raw >> 16) | Vector128.Create(0x40u);
        Vector128<uint> bits = Vector128.ConditionalSelect(Vector128.Equals(value._value, value._value).AsUInt32(), rounded, nan);
        *(ulong*)destination = Vector128.Narrow(bits, bits).AsUInt64().ToScalar();
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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector256 LoadBf16Even(ushort* source) => new(Vector256.ShiftLeft(Vector256.Load((uint*)source), 16).AsSingle());
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector256 LoadBf16Odd(ushort* source) => new((Vector256.Load((uint*)source) & Vector256.Create(0xFFFF0000u)).AsSingle());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector256 LoadBf16(ushort* source)
        => new(Vector256.ShiftLeft(Avx2.IsSupported ? Avx2.ConvertToVector256Int32(source).AsUInt32()
            : Vector256.WidenLower(Vector128.Load(source).ToVector256Unsafe()), 16).AsSingle());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector256 LoadInt8(sbyte* source)
        => new(Vector256.ConvertToSingle(Avx2.IsSupported ? Avx2.ConvertToVector256Int32(source)
            : Vector256.WidenLower(Vector256.WidenLower(Vector128.CreateScalar(*(long*)source).AsSByte().ToVector256Unsafe()))));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreEvenOdd(float* source, float* evens, float* odds)
    {
        Vector256<float> lo = Vector256.Load(source), hi = Vector256.Load(source + 8);
        if (Avx2.IsSupported)
        {
            // In-lane shuffles give [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6]; the 64-bit permute puts the pairs in order.
            Avx2.Permute4x64(Avx.Shuffle(lo, hi, 0b10_00_10_00).AsDouble(), 0b11_01_10_00).AsSingle().Store(evens);
            Avx2.Permute4x64(Avx.Shuffle(lo, hi, 0b11_01_11_01).AsDouble(), 0b11_01_10_00).AsSingle().Store(odds);
        }
        else
        {
            for (int i = 0; i < 8; i++) { evens[i] = source[2 * i]; odds[i] = source[2 * i + 1]; }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(SimdVector256 a, SimdVector256 b, SimdVector256 c, SimdVector256 d) => Sum4(a._value, b._value, c._value, d._value);

    /// <summary>In-lane pairwise adds leave [a b c d] partial sums in each 128-bit half; the halves then add.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector128<float> Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        if (!Avx.IsSupported) return SimdVector128.Sum4(a.GetLower() + a.GetUpper(), b.GetLower() + b.GetUpper(), c.GetLower() + c.GetUpper(), d.GetLower() + d.GetUpper());
        Vector256<float> s = Avx.HorizontalAdd(Avx.HorizontalAdd(a, b), Avx.HorizontalAdd(c, d));
        return s.GetLower() + s.GetUpper();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreBf16(SimdVector256 value, ushort* destination)
    {
        Vector256<uint> raw = value._value.AsUInt32();
        Vector256<uint> rounded = (raw + Vector256.Create(0x7FFFu) + ((raw >> 16) & Vector256<uint>.One)) >> 16;
        Vector256<uint> nan = (raw >> 16) | Vector256.Create(0x40u);
        Vector256<uint> bits = Vector256.ConditionalSelect(Vector256.Equals(value._value, value._value).AsUInt32(), rounded, nan);
        Vector256.Narrow(bits, bits).GetLower().Store(destination);
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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector512 LoadBf16Even(ushort* source) => new(Vector512.ShiftLeft(Vector512.Load((uint*)source), 16).AsSingle());
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector512 LoadBf16Odd(ushort* source) => new((Vector512.Load((uint*)source) & Vector512.Create(0xFFFF0000u)).AsSingle());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector512 LoadBf16(ushort* source)
        => new(Vector512.ShiftLeft(Avx512F.ConvertToVector512Int32(Vector256.Load(source)).AsUInt32(), 16).AsSingle());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SimdVector512 LoadInt8(sbyte* source) => new(Vector512.ConvertToSingle(Avx512F.ConvertToVector512Int32(Vector128.Load(source))));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreEvenOdd(float* source, float* evens, float* odds)
    {
        Vector512<float> lo = Vector512.Load(source), hi = Vector512.Load(source + 16);
        Vector512<int> even = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        Avx512F.PermuteVar16x32x2(lo, even, hi).Store(evens);
        Avx512F.PermuteVar16x32x2(lo, even + Vector512<int>.One, hi).Store(odds);
    }

    /// <summary>Each vector folded to 256 bits first, then the 256-bit transposing reduction.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> Sum4(SimdVector512 a, SimdVector512 b, SimdVector512 c, SimdVector512 d)
        => SimdVector256.Sum4(a._value.GetLower() + a._value.GetUpper(), b._value.GetLower() + b._value.GetUpper(),
            c._value.GetLower() + c._value.GetUpper(), d._value.GetLower() + d._value.GetUpper());

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreBf16(SimdVector512 value, ushort* destination)
    {
        Vector512<uint> raw = value._value.AsUInt32();
        Vector512<uint> rounded = (raw + Vector512.Create(0x7FFFu) + ((raw >> 16) & Vector512<uint>.One)) >> 16;
        Vector512<uint> nan = (raw >> 16) | Vector512.Create(0x40u);
        Vector512<uint> bits = Vector512.ConditionalSelect(Vector512.Equals(value._value, value._value).AsUInt32(), rounded, nan);
        Vector512.Narrow(bits, bits).GetLower().Store(destination);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector512 operator +(SimdVector512 a, SimdVector512 b) => new(a._value + b._value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector512 operator *(SimdVector512 a, SimdVector512 b) => new(a._value * b._value);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static SimdVector512 operator -(SimdVector512 a) => new(-a._value);
}

using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Arwkv.IO;

namespace Arwkv.Kernels;

// Gemv kernels: four rows per pass so that each load of x feeds four FMAs and four independent memory streams
// keep the prefetchers busy. A tail of 1-3 rows repeats the last row (it is in cache) and drops the extra sums.
public static unsafe partial class MatMul
{
    const int F16Chunk = 512;

    /// <summary>Software prefetch of the next row block in the AVX-512 Gemv (measured ~1.4x on DRAM-resident BF16).</summary>
    internal static bool PrefetchGemv = true;

    /// <summary>y[r] (+)= W[r, :] x for r in [r0, r1); x is even/odd permuted when W is BF16 on a vector path.</summary>
    static void GemvRows(WeightMatrix w, float* x, float* y, int r0, int r1, KernelIsa isa, bool accumulate)
    {
        float* sums = stackalloc float[4];
        int cols = w.Cols;
        nint rowBytes = (nint)w.RowBytes;
        byte* data = (byte*)w.Data;
        for (int r = r0; r < r1; r += 4)
        {
            int n = Math.Min(4, r1 - r);
            byte* p0 = data + r * rowBytes;
            byte* p1 = n > 1 ? p0 + rowBytes : p0;
            byte* p2 = n > 2 ? p0 + 2 * rowBytes : p1;
            byte* p3 = n > 3 ? p0 + 3 * rowBytes : p2;
            Dot4(w.Type, isa, p0, p1, p2, p3, x, cols, sums);
            for (int i = 0; i < n; i++)
                y[r + i] = accumulate ? y[r + i] + sums[i] : sums[i];
        }
    }

    /// <summary>sums[i] = row_i . x for four rows of <paramref name="cols"/> elements.</summary>
    static void Dot4(DType type, KernelIsa isa, byte* p0, byte* p1, byte* p2, byte* p3, float* x, int cols, float* sums)
    {
        sums[0] = sums[1] = sums[2] = sums[3] = 0;
        switch (type)
        {
            case DType.BF16:
                ushort* b0 = (ushort*)p0, b1 = (ushort*)p1, b2 = (ushort*)p2, b3 = (ushort*)p3;
                switch (isa)
                {
                    case KernelIsa.Vector512: Bf16Dot4<SimdVector512>(b0, b1, b2, b3, x, cols, sums); break;
                    case KernelIsa.Vector256: Bf16Dot4<SimdVector256>(b0, b1, b2, b3, x, cols, sums); break;
                    case KernelIsa.Vector128: Bf16Dot4<SimdVector128>(b0, b1, b2, b3, x, cols, sums); break;
                    default: Bf16Dot4Scalar(b0, b1, b2, b3, x, 0, cols, sums); break;
                }
                break;
            case DType.F32:
                F32Dot4((float*)p0, (float*)p1, (float*)p2, (float*)p3, x, cols, sums, isa);
                break;
            case DType.F16:
                F16Dot4((Half*)p0, (Half*)p1, (Half*)p2, (Half*)p3, x, cols, sums, isa);
                break;
            case DType.Q8_0:
            case DType.Q4_0:
                GgmlQuants.Dot4(type, isa, p0, p1, p2, p3, x, cols, sums);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    static void F32Dot4(float* p0, float* p1, float* p2, float* p3, float* x, int cols, float* sums, KernelIsa isa)
    {
        sums[0] = sums[1] = sums[2] = sums[3] = 0;
        switch (isa)
        {
            case KernelIsa.Vector512: F32Dot4<SimdVector512>(p0, p1, p2, p3, x, cols, sums); break;
            case KernelIsa.Vector256: F32Dot4<SimdVector256>(p0, p1, p2, p3, x, cols, sums); break;
            case KernelIsa.Vector128: F32Dot4<SimdVector128>(p0, p1, p2, p3, x, cols, sums); break;
            default: F32Dot4Scalar(p0, p1, p2, p3, x, 0, cols, sums); break;
        }
    }

    /// <summary>
    /// .NET exposes no F16C/AVX-512 half conversion, so the Vector512 path widens with integer operations and the
    /// others widen chunks into L1 first.
    /// </summary>
    static void F16Dot4(Half* p0, Half* p1, Half* p2, Half* p3, float* x, int cols, float* sums, KernelIsa isa)
    {
        if (isa == KernelIsa.Vector512)
        {
            F16Dot4V512((ushort*)p0, (ushort*)p1, (ushort*)p2, (ushort*)p3, x, cols, sums);
            return;
        }
        float* buffer = stackalloc float[4 * F16Chunk];
        float* partial = stackalloc float[4];
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (int c = 0; c < cols; c += F16Chunk)
        {
            int n = Math.Min(F16Chunk, cols - c);
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(p0 + c, n), new Span<float>(buffer, n));
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(p1 + c, n), new Span<float>(buffer + F16Chunk, n));
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(p2 + c, n), new Span<float>(buffer + 2 * F16Chunk, n));
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(p3 + c, n), new Span<float>(buffer + 3 * F16Chunk, n));
            F32Dot4(buffer, buffer + F16Chunk, buffer + 2 * F16Chunk, buffer + 3 * F16Chunk, x + c, n, partial, isa);
            s0 += partial[0]; s1 += partial[1]; s2 += partial[2]; s3 += partial[3];
        }
        sums[0] = s0; sums[1] = s1; sums[2] = s2; sums[3] = s3;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Bf16(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Adds columns [c, cols) of four BF16 rows (x not permuted there) to sums.</summary>
    static void Bf16Dot4Scalar(ushort* p0, ushort* p1, ushort* p2, ushort* p3, float* x, int c, int cols, float* sums)
    {
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (; c < cols; c++)
        {
            float xc = x[c];
            s0 += Bf16(p0[c]) * xc;
            s1 += Bf16(p1[c]) * xc;
            s2 += Bf16(p2[c]) * xc;
            s3 += Bf16(p3[c]) * xc;
        }
        sums[0] += s0; sums[1] += s1; sums[2] += s2; sums[3] += s3;
    }

    static void F32Dot4Scalar(float* p0, float* p1, float* p2, float* p3, float* x, int c, int cols, float* sums)
    {
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (; c < cols; c++)
        {
            float xc = x[c];
            s0 += p0[c] * xc;
            s1 += p1[c] * xc;
            s2 += p2[c] * xc;
            s3 += p3[c] * xc;
        }
        sums[0] += s0; sums[1] += s1; sums[2] += s2; sums[3] += s3;
    }

    /// <summary>
    /// Four BF16 rows against x (even/odd permuted in blocks of 2 * TV.Count), with the rows widened in registers.
    /// Columns past the last full block go to the scalar tail.
    /// </summary>
    static void Bf16Dot4<TV>(ushort* p0, ushort* p1, ushort* p2, ushort* p3, float* x, int cols, float* sums)
        where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, step = 2 * L;
        TV e0 = default, e1 = default, e2 = default, e3 = default;
        TV o0 = default, o1 = default, o2 = default, o3 = default;
        int c = 0;
        nint ahead = 4 * (nint)cols;
        for (; c <= cols - step; c += step)
        {
            // One cache line of each row per step at 512 bits, so the prefetch there costs one instruction per line.
            if (L == 16 && PrefetchGemv) PrefetchNextRows(p0 + ahead + c, p1 + ahead + c, p2 + ahead + c, p3 + ahead + c);
            TV xe = TV.Load(x + c), xo = TV.Load(x + c + L);
            TV.LoadBf16EvenOdd(p0 + c, out TV we, out TV wo);
            e0 = TV.Fma(we, xe, e0); o0 = TV.Fma(wo, xo, o0);
            TV.LoadBf16EvenOdd(p1 + c, out we, out wo);
            e1 = TV.Fma(we, xe, e1); o1 = TV.Fma(wo, xo, o1);
            TV.LoadBf16EvenOdd(p2 + c, out we, out wo);
            e2 = TV.Fma(we, xe, e2); o2 = TV.Fma(wo, xo, o2);
            TV.LoadBf16EvenOdd(p3 + c, out we, out wo);
            e3 = TV.Fma(we, xe, e3); o3 = TV.Fma(wo, xo, o3);
        }
        sums[0] = TV.Sum(e0 + o0);
        sums[1] = TV.Sum(e1 + o1);
        sums[2] = TV.Sum(e2 + o2);
        sums[3] = TV.Sum(e3 + o3);
        Bf16Dot4Scalar(p0, p1, p2, p3, x, c, cols, sums);
    }

    /// <summary>
    /// The next four rows follow these in memory; fetching them now keeps DRAM busy across row blocks, where the
    /// hardware prefetchers (which see four short streams) would otherwise restart.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void PrefetchNextRows(void* a, void* b, void* c, void* d)
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported) return;
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(a);
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(b);
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(c);
        System.Runtime.Intrinsics.X86.Sse.Prefetch0(d);
    }

    /// <summary>
    /// Exact binary16 -> binary32 of 16 lanes: the exponent-and-mantissa bits shifted into float position are the
    /// value times 2^-112 (normals and subnormals alike), so one multiply by 2^112 rescales; infinities and NaNs get
    /// the float's all-ones exponent instead, keeping their payload.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> WidenHalf(Vector256<ushort> half)
    {
        var bits = System.Runtime.Intrinsics.X86.Avx512F.ConvertToVector512UInt32(half);
        var magnitude = (bits & Vector512.Create(0x7FFFu)) << 13;
        var sign = (bits & Vector512.Create(0x8000u)) << 16;
        var scaled = magnitude.AsSingle() * Vector512.Create(5.192296858534828e33f); // 2^112
        var special = (magnitude | Vector512.Create(0x7F800000u)).AsSingle();
        var isSpecial = Vector512.GreaterThanOrEqual(magnitude, Vector512.Create(0x0F800000u)).AsSingle();
        return (Vector512.ConditionalSelect(isSpecial, special, scaled).AsUInt32() | sign).AsSingle();
    }

    static void F16Dot4V512(ushort* p0, ushort* p1, ushort* p2, ushort* p3, float* x, int cols, float* sums)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        nint ahead = 4 * (nint)cols;
        int c = 0;
        for (; c <= cols - 16; c += 16)
        {
            if (PrefetchGemv && (c & 31) == 0) PrefetchNextRows(p0 + ahead + c, p1 + ahead + c, p2 + ahead + c, p3 + ahead + c);
            var xa = Vector512.Load(x + c);
            a0 = Vector512.FusedMultiplyAdd(WidenHalf(Vector256.Load(p0 + c)), xa, a0);
            a1 = Vector512.FusedMultiplyAdd(WidenHalf(Vector256.Load(p1 + c)), xa, a1);
            a2 = Vector512.FusedMultiplyAdd(WidenHalf(Vector256.Load(p2 + c)), xa, a2);
            a3 = Vector512.FusedMultiplyAdd(WidenHalf(Vector256.Load(p3 + c)), xa, a3);
        }
        sums[0] = Vector512.Sum(a0);
        sums[1] = Vector512.Sum(a1);
        sums[2] = Vector512.Sum(a2);
        sums[3] = Vector512.Sum(a3);
        for (; c < cols; c++)
        {
            float xc = x[c];
            sums[0] += (float)((Half*)p0)[c] * xc;
            sums[1] += (float)((Half*)p1)[c] * xc;
            sums[2] += (float)((Half*)p2)[c] * xc;
            sums[3] += (float)((Half*)p3)[c] * xc;
        }
    }

    /// <summary>Four float32 rows against x, two accumulator sets per row; columns past the last vector go to the scalar tail.</summary>
    static void F32Dot4<TV>(float* p0, float* p1, float* p2, float* p3, float* x, int cols, float* sums)
        where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count;
        TV a0 = default, a1 = default, a2 = default, a3 = default;
        TV b0 = default, b1 = default, b2 = default, b3 = default;
        int c = 0;
        nint ahead = 4 * (nint)cols;
        for (; c <= cols - 2 * L; c += 2 * L)
        {
            if (L == 16 && PrefetchGemv)
            {
                PrefetchNextRows(p0 + ahead + c, p1 + ahead + c, p2 + ahead + c, p3 + ahead + c);
                PrefetchNextRows(p0 + ahead + c + L, p1 + ahead + c + L, p2 + ahead + c + L, p3 + ahead + c + L);
            }
            TV xa = TV.Load(x + c), xb = TV.Load(x + c + L);
            a0 = TV.Fma(TV.Load(p0 + c), xa, a0);
            b0 = TV.Fma(TV.Load(p0 + c + L), xb, b0);
            a1 = TV.Fma(TV.Load(p1 + c), xa, a1);
            b1 = TV.Fma(TV.Load(p1 + c + L), xb, b1);
            a2 = TV.Fma(TV.Load(p2 + c), xa, a2);
            b2 = TV.Fma(TV.Load(p2 + c + L), xb, b2);
            a3 = TV.Fma(TV.Load(p3 + c), xa, a3);
            b3 = TV.Fma(TV.Load(p3 + c + L), xb, b3);
        }
        if (c <= cols - L)
        {
            TV xa = TV.Load(x + c);
            a0 = TV.Fma(TV.Load(p0 + c), xa, a0);
            a1 = TV.Fma(TV.Load(p1 + c), xa, a1);
            a2 = TV.Fma(TV.Load(p2 + c), xa, a2);
            a3 = TV.Fma(TV.Load(p3 + c), xa, a3);
            c += L;
        }
        sums[0] = TV.Sum(a0 + b0);
        sums[1] = TV.Sum(a1 + b1);
        sums[2] = TV.Sum(a2 + b2);
        sums[3] = TV.Sum(a3 + b3);
        F32Dot4Scalar(p0, p1, p2, p3, x, c, cols, sums);
    }
}

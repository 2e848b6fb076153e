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
        nint rowBytes = (nint)cols * w.Type.SizeOf();
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
                if (isa == KernelIsa.Vector512) Bf16Dot4V512((ushort*)p0, (ushort*)p1, (ushort*)p2, (ushort*)p3, x, cols, sums);
                else if (isa == KernelIsa.Vector256) Bf16Dot4V256((ushort*)p0, (ushort*)p1, (ushort*)p2, (ushort*)p3, x, cols, sums);
                else Bf16Dot4Scalar((ushort*)p0, (ushort*)p1, (ushort*)p2, (ushort*)p3, x, 0, cols, sums);
                break;
            case DType.F32:
                F32Dot4((float*)p0, (float*)p1, (float*)p2, (float*)p3, x, cols, sums, isa);
                break;
            case DType.F16:
                F16Dot4((Half*)p0, (Half*)p1, (Half*)p2, (Half*)p3, x, cols, sums, isa);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(type));
        }
    }

    static void F32Dot4(float* p0, float* p1, float* p2, float* p3, float* x, int cols, float* sums, KernelIsa isa)
    {
        sums[0] = sums[1] = sums[2] = sums[3] = 0;
        if (isa == KernelIsa.Vector512) F32Dot4V512(p0, p1, p2, p3, x, cols, sums);
        else if (isa == KernelIsa.Vector256) F32Dot4V256(p0, p1, p2, p3, x, cols, sums);
        else F32Dot4Scalar(p0, p1, p2, p3, x, 0, cols, sums);
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

    static void Bf16Dot4V512(ushort* p0, ushort* p1, ushort* p2, ushort* p3, float* x, int cols, float* sums)
    {
        var high = Vector512.Create(0xFFFF0000u);
        Vector512<float> e0 = default, e1 = default, e2 = default, e3 = default;
        Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default;
        int c = 0;
        // The next four rows follow these in memory; fetching them now keeps DRAM busy across row blocks, where
        // the hardware prefetchers (which see four short streams) would otherwise restart.
        nint ahead = 4 * (nint)cols;
        for (; c <= cols - 32; c += 32)
        {
            if (PrefetchGemv)
            {
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p0 + ahead + c);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p1 + ahead + c);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p2 + ahead + c);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p3 + ahead + c);
            }
            var xe = Vector512.Load(x + c);
            var xo = Vector512.Load(x + c + 16);
            var w0 = Vector512.Load(p0 + c).AsUInt32();
            var w1 = Vector512.Load(p1 + c).AsUInt32();
            var w2 = Vector512.Load(p2 + c).AsUInt32();
            var w3 = Vector512.Load(p3 + c).AsUInt32();
            e0 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(w0, 16).AsSingle(), xe, e0);
            o0 = Vector512.FusedMultiplyAdd((w0 & high).AsSingle(), xo, o0);
            e1 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(w1, 16).AsSingle(), xe, e1);
            o1 = Vector512.FusedMultiplyAdd((w1 & high).AsSingle(), xo, o1);
            e2 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(w2, 16).AsSingle(), xe, e2);
            o2 = Vector512.FusedMultiplyAdd((w2 & high).AsSingle(), xo, o2);
            e3 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(w3, 16).AsSingle(), xe, e3);
            o3 = Vector512.FusedMultiplyAdd((w3 & high).AsSingle(), xo, o3);
        }
        sums[0] = Vector512.Sum(e0 + o0);
        sums[1] = Vector512.Sum(e1 + o1);
        sums[2] = Vector512.Sum(e2 + o2);
        sums[3] = Vector512.Sum(e3 + o3);
        Bf16Dot4Scalar(p0, p1, p2, p3, x, c, cols, sums);
    }

    static void Bf16Dot4V256(ushort* p0, ushort* p1, ushort* p2, ushort* p3, float* x, int cols, float* sums)
    {
        var high = Vector256.Create(0xFFFF0000u);
        Vector256<float> e0 = default, e1 = default, e2 = default, e3 = default;
        Vector256<float> o0 = default, o1 = default, o2 = default, o3 = default;
        int c = 0;
        for (; c <= cols - 16; c += 16)
        {
            var xe = Vector256.Load(x + c);
            var xo = Vector256.Load(x + c + 8);
            var w0 = Vector256.Load(p0 + c).AsUInt32();
            var w1 = Vector256.Load(p1 + c).AsUInt32();
            var w2 = Vector256.Load(p2 + c).AsUInt32();
            var w3 = Vector256.Load(p3 + c).AsUInt32();
            e0 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(w0, 16).AsSingle(), xe, e0);
            o0 = Vector256.FusedMultiplyAdd((w0 & high).AsSingle(), xo, o0);
            e1 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(w1, 16).AsSingle(), xe, e1);
            o1 = Vector256.FusedMultiplyAdd((w1 & high).AsSingle(), xo, o1);
            e2 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(w2, 16).AsSingle(), xe, e2);
            o2 = Vector256.FusedMultiplyAdd((w2 & high).AsSingle(), xo, o2);
            e3 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(w3, 16).AsSingle(), xe, e3);
            o3 = Vector256.FusedMultiplyAdd((w3 & high).AsSingle(), xo, o3);
        }
        sums[0] = Vector256.Sum(e0 + o0);
        sums[1] = Vector256.Sum(e1 + o1);
        sums[2] = Vector256.Sum(e2 + o2);
        sums[3] = Vector256.Sum(e3 + o3);
        Bf16Dot4Scalar(p0, p1, p2, p3, x, c, cols, sums);
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
            if (PrefetchGemv && (c & 31) == 0)
            {
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p0 + ahead + c);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p1 + ahead + c);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p2 + ahead + c);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p3 + ahead + c);
            }
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

    static void F32Dot4V512(float* p0, float* p1, float* p2, float* p3, float* x, int cols, float* sums)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector512<float> b0 = default, b1 = default, b2 = default, b3 = default;
        int c = 0;
        nint ahead = 4 * (nint)cols;
        for (; c <= cols - 32; c += 32)
        {
            if (PrefetchGemv)
            {
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p0 + ahead + c);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p0 + ahead + c + 16);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p1 + ahead + c);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p1 + ahead + c + 16);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p2 + ahead + c);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p2 + ahead + c + 16);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p3 + ahead + c);
                System.Runtime.Intrinsics.X86.Sse.Prefetch0(p3 + ahead + c + 16);
            }
            var xa = Vector512.Load(x + c);
            var xb = Vector512.Load(x + c + 16);
            a0 = Vector512.FusedMultiplyAdd(Vector512.Load(p0 + c), xa, a0);
            b0 = Vector512.FusedMultiplyAdd(Vector512.Load(p0 + c + 16), xb, b0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Load(p1 + c), xa, a1);
            b1 = Vector512.FusedMultiplyAdd(Vector512.Load(p1 + c + 16), xb, b1);
            a2 = Vector512.FusedMultiplyAdd(Vector512.Load(p2 + c), xa, a2);
            b2 = Vector512.FusedMultiplyAdd(Vector512.Load(p2 + c + 16), xb, b2);
            a3 = Vector512.FusedMultiplyAdd(Vector512.Load(p3 + c), xa, a3);
            b3 = Vector512.FusedMultiplyAdd(Vector512.Load(p3 + c + 16), xb, b3);
        }
        if (c <= cols - 16)
        {
            var xa = Vector512.Load(x + c);
            a0 = Vector512.FusedMultiplyAdd(Vector512.Load(p0 + c), xa, a0);
            a1 = Vector512.FusedMultiplyAdd(Vector512.Load(p1 + c), xa, a1);
            a2 = Vector512.FusedMultiplyAdd(Vector512.Load(p2 + c), xa, a2);
            a3 = Vector512.FusedMultiplyAdd(Vector512.Load(p3 + c), xa, a3);
            c += 16;
        }
        sums[0] = Vector512.Sum(a0 + b0);
        sums[1] = Vector512.Sum(a1 + b1);
        sums[2] = Vector512.Sum(a2 + b2);
        sums[3] = Vector512.Sum(a3 + b3);
        F32Dot4Scalar(p0, p1, p2, p3, x, c, cols, sums);
    }

    static void F32Dot4V256(float* p0, float* p1, float* p2, float* p3, float* x, int cols, float* sums)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
        int c = 0;
        for (; c <= cols - 16; c += 16)
        {
            var xa = Vector256.Load(x + c);
            var xb = Vector256.Load(x + c + 8);
            a0 = Vector256.FusedMultiplyAdd(Vector256.Load(p0 + c), xa, a0);
            b0 = Vector256.FusedMultiplyAdd(Vector256.Load(p0 + c + 8), xb, b0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.Load(p1 + c), xa, a1);
            b1 = Vector256.FusedMultiplyAdd(Vector256.Load(p1 + c + 8), xb, b1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.Load(p2 + c), xa, a2);
            b2 = Vector256.FusedMultiplyAdd(Vector256.Load(p2 + c + 8), xb, b2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.Load(p3 + c), xa, a3);
            b3 = Vector256.FusedMultiplyAdd(Vector256.Load(p3 + c + 8), xb, b3);
        }
        if (c <= cols - 8)
        {
            var xa = Vector256.Load(x + c);
            a0 = Vector256.FusedMultiplyAdd(Vector256.Load(p0 + c), xa, a0);
            a1 = Vector256.FusedMultiplyAdd(Vector256.Load(p1 + c), xa, a1);
            a2 = Vector256.FusedMultiplyAdd(Vector256.Load(p2 + c), xa, a2);
            a3 = Vector256.FusedMultiplyAdd(Vector256.Load(p3 + c), xa, a3);
            c += 8;
        }
        sums[0] = Vector256.Sum(a0 + b0);
        sums[1] = Vector256.Sum(a1 + b1);
        sums[2] = Vector256.Sum(a2 + b2);
        sums[3] = Vector256.Sum(a3 + b3);
        F32Dot4Scalar(p0, p1, p2, p3, x, c, cols, sums);
    }
}

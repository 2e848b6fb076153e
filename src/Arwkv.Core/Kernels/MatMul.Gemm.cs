using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using Arwkv.IO;

namespace Arwkv.Kernels;

// Gemm (prefill). The columns are cut into chunks whose slice of X (all tokens) fits in L2, and each chunk is a
// separate parallel pass over row panels (separate so that two threads never add into the same Y element), so every
// weight is read from memory once per call. This file holds the Vector256 and scalar paths: a 4-row block is
// widened to float32 once into an L1-resident scratch and reused by every token; the micro-kernel keeps a 4-row by
// 4-token tile of accumulators in registers, so each weight load and each x load feeds four FMAs. The AVX-512 path
// (MatMul.GemmPacked.cs) packs X and uses a 4x6 tile.
public static unsafe partial class MatMul
{
    const int GemmRowBlock = 4;
    const int GemmTokenBlock = 4;
    const int GemmRowsPerItem = 16;
    // Bytes of X (all tokens of one column chunk) that should stay in a core's L2 while the rows stream past.
    const int GemmXChunkBytes = 512 * 1024;

    [ThreadStatic] static float[]? t_widened;

    static void GemmCore(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, int tokens, bool accumulate, KernelThreadPool? pool)
    {
        CheckMatrix(w);
        ArgumentOutOfRangeException.ThrowIfNegative(tokens);
        if (x.Length < (long)tokens * w.Cols || y.Length < (long)tokens * w.Rows)
            throw new ArgumentException("x or y is shorter than tokens x matrix");
        if (tokens == 0 || w.Rows == 0) return;
        if (tokens == 1)
        {
            GemvCore(w, x, y, accumulate, pool);
            return;
        }
        int cols = w.Cols;
        if (cols == 0)
        {
            if (!accumulate) y[..(tokens * w.Rows)].Clear();
            return;
        }
        int chunk = GemmChunk(cols, tokens);
        var isa = Isa;
        fixed (float* xp = x)
        fixed (float* yp = y)
        {
            if (isa == KernelIsa.Vector512)
            {
                GemmPacked(w, xp, yp, tokens, accumulate, pool, chunk);
                return;
            }
            var work = new GemmWork { W = w, X = xp, Y = yp, Tokens = tokens, Isa = isa };
            int items = (w.Rows + GemmRowsPerItem - 1) / GemmRowsPerItem;
            for (int c0 = 0; c0 < cols; c0 += chunk)
            {
                work.C0 = c0;
                work.C1 = Math.Min(cols, c0 + chunk);
                work.Accumulate = accumulate || c0 > 0;
                if (pool is null) for (int i = 0; i < items; i++) work.Execute(i);
                else pool.Run(ref work, items);
            }
        }
    }

    /// <summary>Columns per pass: equal chunks, multiples of 32, whose slice of X (all tokens) fits in L2.</summary>
    static int GemmChunk(int cols, int tokens)
    {
        int maxChunk = Math.Max(256, GemmXChunkBytes / (4 * tokens)) & ~31;
        int chunks = (cols + maxChunk - 1) / maxChunk;
        return ((cols + chunks - 1) / chunks + 31) & ~31;
    }

    struct GemmWork : IParallelWork
    {
        public WeightMatrix W;
        public float* X;
        public float* Y;
        public int Tokens;
        public int C0, C1;
        public bool Accumulate;
        public KernelIsa Isa;

        public readonly void Execute(int index)
        {
            int r1 = Math.Min(W.Rows, (index + 1) * GemmRowsPerItem);
            for (int r = index * GemmRowsPerItem; r < r1; r += GemmRowBlock)
                GemmRowBlockPass(this, r, Math.Min(GemmRowBlock, r1 - r));
        }
    }

    static void GemmRowBlockPass(in GemmWork work, int r0, int rowCount)
    {
        var w = work.W;
        int n = work.C1 - work.C0;
        int cols = w.Cols, rows = w.Rows;
        float* p0, p1, p2, p3;
        if (w.Type == DType.F32)
        {
            p0 = (float*)w.RowPointer(r0) + work.C0;
            p1 = rowCount > 1 ? p0 + cols : p0;
            p2 = rowCount > 2 ? p1 + cols : p1;
            p3 = rowCount > 3 ? p2 + cols : p2;
        }
        else
        {
            var scratch = t_widened;
            if (scratch is null || scratch.Length < GemmRowBlock * n)
                t_widened = scratch = GC.AllocateUninitializedArray<float>(Math.Max(GemmRowBlock * n, 4096), pinned: true);
            // Pinned at allocation, so the address is stable.
            float* buffer = (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref scratch[0]);
            for (int i = 0; i < rowCount; i++)
            {
                nint src = w.RowPointer(r0 + i) + (nint)work.C0 * 2;
                var dst = new Span<float>(buffer + i * n, n);
                if (w.Type == DType.BF16) Convert.BFloat16ToFloat32(new ReadOnlySpan<ushort>((void*)src, n), dst);
                else TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((void*)src, n), dst);
            }
            p0 = buffer;
            p1 = rowCount > 1 ? p0 + n : p0;
            p2 = rowCount > 2 ? p1 + n : p1;
            p3 = rowCount > 3 ? p2 + n : p2;
        }

        float* tile = stackalloc float[GemmRowBlock * GemmTokenBlock];
        int tokens = work.Tokens;
        float* xBase = work.X + work.C0;
        float* yBase = work.Y + r0;
        int t = 0;
        for (; t <= tokens - GemmTokenBlock; t += GemmTokenBlock)
        {
            float* x0 = xBase + (nint)t * cols;
            Micro4x4(p0, p1, p2, p3, x0, x0 + cols, x0 + 2 * cols, x0 + 3 * cols, n, tile, work.Isa);
            for (int j = 0; j < GemmTokenBlock; j++)
            {
                float* yRow = yBase + (nint)(t + j) * rows;
                for (int i = 0; i < rowCount; i++)
                    yRow[i] = work.Accumulate ? yRow[i] + tile[j * GemmRowBlock + i] : tile[j * GemmRowBlock + i];
            }
        }
        for (; t < tokens; t++)
        {
            F32Dot4(p0, p1, p2, p3, xBase + (nint)t * cols, n, tile, work.Isa);
            float* yRow = yBase + (nint)t * rows;
            for (int i = 0; i < rowCount; i++)
                yRow[i] = work.Accumulate ? yRow[i] + tile[i] : tile[i];
        }
    }

    /// <summary>tile[t * 4 + r] = w_r . x_t over <paramref name="n"/> float32 columns.</summary>
    static void Micro4x4(float* w0, float* w1, float* w2, float* w3, float* x0, float* x1, float* x2, float* x3,
        int n, float* tile, KernelIsa isa)
    {
        int c = isa switch
        {
            KernelIsa.Vector512 => Micro4x4V512(w0, w1, w2, w3, x0, x1, x2, x3, n, tile),
            KernelIsa.Vector256 => Micro4x4V256(w0, w1, w2, w3, x0, x1, x2, x3, n, tile),
            _ => ClearTile(tile),
        };
        for (; c < n; c++)
        {
            float a = w0[c], b = w1[c], d = w2[c], e = w3[c];
            float v = x0[c];
            tile[0] += a * v; tile[1] += b * v; tile[2] += d * v; tile[3] += e * v;
            v = x1[c];
            tile[4] += a * v; tile[5] += b * v; tile[6] += d * v; tile[7] += e * v;
            v = x2[c];
            tile[8] += a * v; tile[9] += b * v; tile[10] += d * v; tile[11] += e * v;
            v = x3[c];
            tile[12] += a * v; tile[13] += b * v; tile[14] += d * v; tile[15] += e * v;
        }
    }

    static int ClearTile(float* tile)
    {
        new Span<float>(tile, GemmRowBlock * GemmTokenBlock).Clear();
        return 0;
    }

    /// <summary>Fills the tile from the columns it covers and returns the first column it did not.</summary>
    static int Micro4x4V512(float* w0, float* w1, float* w2, float* w3, float* x0, float* x1, float* x2, float* x3, int n, float* tile)
    {
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
        int c = 0;
        for (; c <= n - 16; c += 16)
        {
            var v0 = Vector512.Load(w0 + c);
            var v1 = Vector512.Load(w1 + c);
            var v2 = Vector512.Load(w2 + c);
            var v3 = Vector512.Load(w3 + c);
            var x = Vector512.Load(x0 + c);
            a00 = Vector512.FusedMultiplyAdd(v0, x, a00);
            a01 = Vector512.FusedMultiplyAdd(v1, x, a01);
            a02 = Vector512.FusedMultiplyAdd(v2, x, a02);
            a03 = Vector512.FusedMultiplyAdd(v3, x, a03);
            x = Vector512.Load(x1 + c);
            a10 = Vector512.FusedMultiplyAdd(v0, x, a10);
            a11 = Vector512.FusedMultiplyAdd(v1, x, a11);
            a12 = Vector512.FusedMultiplyAdd(v2, x, a12);
            a13 = Vector512.FusedMultiplyAdd(v3, x, a13);
            x = Vector512.Load(x2 + c);
            a20 = Vector512.FusedMultiplyAdd(v0, x, a20);
            a21 = Vector512.FusedMultiplyAdd(v1, x, a21);
            a22 = Vector512.FusedMultiplyAdd(v2, x, a22);
            a23 = Vector512.FusedMultiplyAdd(v3, x, a23);
            x = Vector512.Load(x3 + c);
            a30 = Vector512.FusedMultiplyAdd(v0, x, a30);
            a31 = Vector512.FusedMultiplyAdd(v1, x, a31);
            a32 = Vector512.FusedMultiplyAdd(v2, x, a32);
            a33 = Vector512.FusedMultiplyAdd(v3, x, a33);
        }
        // Input position 4r + t lands in lane 4t + r, the tile's layout.
        Sum16(a00, a10, a20, a30, a01, a11, a21, a31, a02, a12, a22, a32, a03, a13, a23, a33).Store(tile);
        return c;
    }

    /// <summary>
    /// Lane 4j + m of the result is the sum of all lanes of input 4m + j: a transposing reduction that costs 15
    /// shuffle pairs instead of 16 separate horizontal sums.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Sum16(
        Vector512<float> i0, Vector512<float> i1, Vector512<float> i2, Vector512<float> i3,
        Vector512<float> i4, Vector512<float> i5, Vector512<float> i6, Vector512<float> i7,
        Vector512<float> i8, Vector512<float> i9, Vector512<float> i10, Vector512<float> i11,
        Vector512<float> i12, Vector512<float> i13, Vector512<float> i14, Vector512<float> i15)
    {
        // 512 -> 256 bits: quarters (0,1) of b hold input p folded in half, quarters (2,3) input q.
        var b0 = Fold256(i0, i1); var b1 = Fold256(i2, i3); var b2 = Fold256(i4, i5); var b3 = Fold256(i6, i7);
        var b4 = Fold256(i8, i9); var b5 = Fold256(i10, i11); var b6 = Fold256(i12, i13); var b7 = Fold256(i14, i15);
        // 256 -> 128 bits: quarter j of c_m holds input 4m + j folded to four lanes.
        var c0 = Fold128(b0, b1); var c1 = Fold128(b2, b3); var c2 = Fold128(b4, b5); var c3 = Fold128(b6, b7);
        // Within each 128-bit quarter: 4 lanes -> 2 -> 1, interleaving the c's.
        var d0 = FoldPairs(c0, c1);
        var d1 = FoldPairs(c2, c3);
        return FoldPairs(d0, d1);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Fold256(Vector512<float> p, Vector512<float> q)
        => System.Runtime.Intrinsics.X86.Avx512F.Shuffle4x128(p, q, 0x44) + System.Runtime.Intrinsics.X86.Avx512F.Shuffle4x128(p, q, 0xEE);

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Fold128(Vector512<float> p, Vector512<float> q)
        => System.Runtime.Intrinsics.X86.Avx512F.Shuffle4x128(p, q, 0x88) + System.Runtime.Intrinsics.X86.Avx512F.Shuffle4x128(p, q, 0xDD);

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    static Vector512<float> FoldPairs(Vector512<float> p, Vector512<float> q)
        => System.Runtime.Intrinsics.X86.Avx512F.Shuffle(p, q, 0b10_00_10_00) + System.Runtime.Intrinsics.X86.Avx512F.Shuffle(p, q, 0b11_01_11_01);

    static int Micro4x4V256(float* w0, float* w1, float* w2, float* w3, float* x0, float* x1, float* x2, float* x3, int n, float* tile)
    {
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector256<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector256<float> a30 = default, a31 = default, a32 = default, a33 = default;
        int c = 0;
        for (; c <= n - 8; c += 8)
        {
            var v0 = Vector256.Load(w0 + c);
            var v1 = Vector256.Load(w1 + c);
            var v2 = Vector256.Load(w2 + c);
            var v3 = Vector256.Load(w3 + c);
            var x = Vector256.Load(x0 + c);
            a00 = Vector256.FusedMultiplyAdd(v0, x, a00);
            a01 = Vector256.FusedMultiplyAdd(v1, x, a01);
            a02 = Vector256.FusedMultiplyAdd(v2, x, a02);
            a03 = Vector256.FusedMultiplyAdd(v3, x, a03);
            x = Vector256.Load(x1 + c);
            a10 = Vector256.FusedMultiplyAdd(v0, x, a10);
            a11 = Vector256.FusedMultiplyAdd(v1, x, a11);
            a12 = Vector256.FusedMultiplyAdd(v2, x, a12);
            a13 = Vector256.FusedMultiplyAdd(v3, x, a13);
            x = Vector256.Load(x2 + c);
            a20 = Vector256.FusedMultiplyAdd(v0, x, a20);
            a21 = Vector256.FusedMultiplyAdd(v1, x, a21);
            a22 = Vector256.FusedMultiplyAdd(v2, x, a22);
            a23 = Vector256.FusedMultiplyAdd(v3, x, a23);
            x = Vector256.Load(x3 + c);
            a30 = Vector256.FusedMultiplyAdd(v0, x, a30);
            a31 = Vector256.FusedMultiplyAdd(v1, x, a31);
            a32 = Vector256.FusedMultiplyAdd(v2, x, a32);
            a33 = Vector256.FusedMultiplyAdd(v3, x, a33);
        }
        tile[0] = Vector256.Sum(a00); tile[1] = Vector256.Sum(a01); tile[2] = Vector256.Sum(a02); tile[3] = Vector256.Sum(a03);
        tile[4] = Vector256.Sum(a10); tile[5] = Vector256.Sum(a11); tile[6] = Vector256.Sum(a12); tile[7] = Vector256.Sum(a13);
        tile[8] = Vector256.Sum(a20); tile[9] = Vector256.Sum(a21); tile[10] = Vector256.Sum(a22); tile[11] = Vector256.Sum(a23);
        tile[12] = Vector256.Sum(a30); tile[13] = Vector256.Sum(a31); tile[14] = Vector256.Sum(a32); tile[15] = Vector256.Sum(a33);
        return c;
    }
}

using Arwkv.IO;

namespace Arwkv.Kernels;

// Gemm (prefill). The columns are cut into chunks whose slice of X (all tokens) fits in L2, and each chunk is a
// separate parallel pass over row panels (separate so that two threads never add into the same Y element), so every
// weight is read from memory once per call. Every vector width runs the packed Gemm (MatMul.GemmPacked.cs); this
// file holds the driver and the scalar path, the reference twin: a 4-row block is widened to float32 once into an
// L1-resident scratch and reused by every token, with a 4-row by 4-token tile of sums.
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
            if (isa != KernelIsa.Scalar)
            {
                GemmPacked(isa, w, xp, yp, tokens, accumulate, pool, chunk);
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
                WidenColumns(w, r0 + i, work.C0, new Span<float>(buffer + i * n, n));
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
            Micro4x4Scalar(p0, p1, p2, p3, x0, x0 + cols, x0 + 2 * cols, x0 + 3 * cols, n, tile);
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
    static void Micro4x4Scalar(float* w0, float* w1, float* w2, float* w3, float* x0, float* x1, float* x2, float* x3,
        int n, float* tile)
    {
        new Span<float>(tile, GemmRowBlock * GemmTokenBlock).Clear();
        for (int c = 0; c < n; c++)
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
}

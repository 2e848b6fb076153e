using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Arwkv.IO;

namespace Arwkv.Kernels;

// The AVX-512 Gemm. X is packed once per call into blocks of 6 tokens, interleaved 16 columns at a time
// ([block][column / 16][token][16]), and each 4-row block of W is widened into the same interleaved form
// ([column / 16][row][16]). The micro-kernel then walks two pointers, keeps 24 accumulators in registers and does
// 24 FMAs per 10 loads; zero padding (tokens to a multiple of 6, columns to a multiple of 16) removes every tail
// loop. Few pointers matter: with one pointer per row and per token the JIT runs out of registers and spills.
public static unsafe partial class MatMul
{
    const int PackTokens = 6;
    const int PackRows = 4;
    const int Lanes = 16;
    // Rows per work item: 256 bytes of every Y row, so the two threads write separate cache lines (with 16-row items
    // they shared every line of Y and the write-back cost a third of the time).
    const int PackedRowsPerItem = 64;

    [ThreadStatic] static float[]? t_packedRows;
    [ThreadStatic] static float[]? t_rowBuffer;

    static void GemmPacked(WeightMatrix w, float* x, float* y, int tokens, bool accumulate, KernelThreadPool? pool, int chunk)
    {
        var work = new PackedGemmWork { W = w, Y = y, Count = 1 };
        GemmPacked(ref work, x, tokens, accumulate, pool, chunk);
    }

    /// <summary>
    /// Runs the <paramref name="work"/>'s matrices (W, W1, W2 up to Count, all with the same columns, with inputs x, x1
    /// and x2, or all with x where x1 is null) or its SwiGLU pair over x, as one parallel pass per column chunk: one
    /// dispatch where separate calls would pay a hand-off to the threads and a partly idle tail each.
    /// </summary>
    static void GemmPacked(ref PackedGemmWork work, float* x, int tokens, bool accumulate, KernelThreadPool? pool, int chunk,
        float* x1 = null, float* x2 = null)
    {
        int cols = work.W.Cols;
        int paddedCols = (cols + Lanes - 1) & ~(Lanes - 1);
        int blocks = (tokens + PackTokens - 1) / PackTokens;
        long packedLength = (long)blocks * paddedCols * PackTokens;
        int inputs = x1 is null ? 1 : x2 is null ? 2 : 3;
        if (inputs * packedLength + Lanes > Array.MaxLength) throw new ArgumentException("too many tokens x columns for one Gemm call");
        float[] rented = ArrayPool<float>.Shared.Rent((int)(inputs * packedLength) + Lanes);
        try
        {
            fixed (float* unaligned = rented)
            {
                // Every micro-kernel load of X is a whole 64-byte vector: aligned, each is one cache line, where a pooled
                // array's 16-byte alignment would split every one of them across two.
                float* packed = AlignTo64(unaligned);
                // BF16 weights whose rows split into whole 32-column steps are read in place by Micro4x6Bf16 (chunk is a
                // multiple of 32, so every column chunk is too); other types are widened into a packed block first.
                bool direct = DirectBf16(work.W) && !ForcePackedBf16;
                if (work.SwiGlu && !direct) throw new InvalidOperationException("the fused SwiGLU runs only on the in-place BF16 panels");
                for (int i = 0; i < inputs; i++)
                {
                    float* source = i == 0 ? x : i == 1 ? x1 : x2;
                    float* destination = packed + i * packedLength;
                    if (direct) PackTokenBlocksEvenOdd(source, tokens, cols, destination);
                    else PackTokenBlocks(source, tokens, cols, paddedCols, destination);
                }
                work.XPacked1 = inputs > 1 ? packed + packedLength : packed;
                work.XPacked2 = inputs > 2 ? packed + 2 * packedLength : work.XPacked1;
                int totalRows = work.W.Rows + (work.Count > 1 ? work.W1.Rows : 0) + (work.Count > 2 ? work.W2.Rows : 0);
                int rowsPerItem = PackedRowsPerItem;
                int threads = pool?.ThreadCount ?? 1;
                // At least 16 items per thread where rows allow: the pool hands items out dynamically, and a thread that
                // starts late or is preempted should not leave the others idle behind one large last item.
                while (rowsPerItem > 16 && totalRows < rowsPerItem * 16L * threads) rowsPerItem /= 2;
                work.XPacked = packed;
                work.Tokens = tokens;
                work.Blocks = blocks;
                work.PaddedCols = paddedCols;
                work.DirectBf16 = direct;
                work.RowsPerItem = rowsPerItem;
                work.ItemStart1 = Items(work.W.Rows, rowsPerItem);
                work.ItemStart2 = work.ItemStart1 + (work.Count > 1 ? Items(work.W1.Rows, rowsPerItem) : 0);
                int items = work.ItemStart2 + (work.Count > 2 ? Items(work.W2.Rows, rowsPerItem) : 0);
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
        finally
        {
            ArrayPool<float>.Shared.Return(rented);
        }
    }

    static int Items(int rows, int rowsPerItem) => (rows + rowsPerItem - 1) / rowsPerItem;

    /// <summary>Whether <see cref="Micro4x6Bf16"/> can read the matrix in place.</summary>
    static bool DirectBf16(WeightMatrix w) => w.Type == DType.BF16 && w.Cols % 32 == 0;

    /// <summary>Tests set this to run BF16 through the widening path as well (to cover both on one machine).</summary>
    [ThreadStatic] internal static bool ForcePackedBf16;

    /// <summary>
    /// X for <see cref="Micro4x6Bf16"/>: blocks of 6 tokens, per 32 columns each token's 16 even columns then its 16 odd
    /// ones ([block][column / 32][token][32]); padding tokens are zero. cols is a multiple of 32.
    /// </summary>
    static void PackTokenBlocksEvenOdd(float* x, int tokens, int cols, float* packed)
    {
        int blocks = (tokens + PackTokens - 1) / PackTokens;
        var evens = Vector512.Create(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        var odds = evens + Vector512<int>.One;
        for (int b = 0; b < blocks; b++)
        {
            float* block = packed + (long)b * cols * PackTokens;
            for (int t = 0; t < PackTokens; t++)
            {
                int token = b * PackTokens + t;
                float* destination = block + t * 32;
                if (token >= tokens)
                {
                    for (int c = 0; c < cols; c += 32)
                    {
                        Vector512<float>.Zero.Store(destination + (long)c * PackTokens);
                        Vector512<float>.Zero.Store(destination + (long)c * PackTokens + 16);
                    }
                    continue;
                }
                float* source = x + (long)token * cols;
                for (int c = 0; c < cols; c += 32)
                {
                    var lo = Vector512.Load(source + c);
                    var hi = Vector512.Load(source + c + 16);
                    Avx512F.PermuteVar16x32x2(lo, evens, hi).Store(destination + (long)c * PackTokens);
                    Avx512F.PermuteVar16x32x2(lo, odds, hi).Store(destination + (long)c * PackTokens + 16);
                }
            }
        }
    }

    static void PackTokenBlocks(float* x, int tokens, int cols, int paddedCols, float* packed)
    {
        int blocks = (tokens + PackTokens - 1) / PackTokens;
        for (int b = 0; b < blocks; b++)
        {
            float* block = packed + (long)b * paddedCols * PackTokens;
            for (int t = 0; t < PackTokens; t++)
            {
                int token = b * PackTokens + t;
                float* source = x + (long)token * cols;
                float* destination = block + t * Lanes;
                int c = 0;
                if (token < tokens)
                {
                    for (; c <= cols - Lanes; c += Lanes)
                        Vector512.Load(source + c).Store(destination + (long)c * PackTokens);
                    if (c < cols)
                    {
                        float* last = destination + (long)c * PackTokens;
                        new Span<float>(last, Lanes).Clear();
                        new ReadOnlySpan<float>(source + c, cols - c).CopyTo(new Span<float>(last, Lanes));
                        c += Lanes;
                    }
                }
                for (; c < paddedCols; c += Lanes)
                    Vector512<float>.Zero.Store(destination + (long)c * PackTokens);
            }
        }
    }

    struct PackedGemmWork : IParallelWork
    {
        // Up to three matrices (Count), each with its own output and its own or a shared packed X; or, with SwiGlu, W the
        // gate and W1 the up projection of one output.
        public WeightMatrix W, W1, W2;
        public float* Y, Y1, Y2;
        public int Count;
        public bool SwiGlu;
        // Packed X of W, W1 and W2 (the same where the matrices share their input).
        public float* XPacked, XPacked1, XPacked2;
        public int Tokens, Blocks, PaddedCols;
        public int C0, C1;
        public bool Accumulate;
        public bool DirectBf16;
        public int RowsPerItem;
        public int ItemStart1, ItemStart2;

        public readonly void Execute(int index)
        {
            int matrix = index >= ItemStart2 && Count > 2 ? 2 : index >= ItemStart1 && Count > 1 ? 1 : 0;
            int local = index - (matrix == 2 ? ItemStart2 : matrix == 1 ? ItemStart1 : 0);
            var w = matrix == 2 ? W2 : matrix == 1 ? W1 : W;
            float* y = matrix == 2 ? Y2 : matrix == 1 ? Y1 : Y;
            float* x = matrix == 2 ? XPacked2 : matrix == 1 ? XPacked1 : XPacked;
            int r0 = local * RowsPerItem, r1 = Math.Min(w.Rows, (local + 1) * RowsPerItem);
            if (DirectBf16) Bf16RowPanel(this, w, x, y, r0, r1);
            else PackedRowPanel(this, w, x, y, r0, r1);
        }
    }

    /// <summary>
    /// Rows [r0, r1) of the current column chunk for every token, 4 rows at a time: the block is widened into an
    /// L1-resident buffer (at most 16 KB), then every token block streams past it from L2, the faster of the two
    /// loop orders (the micro-kernel alone runs at about 95% of the FMA peak this way).
    /// </summary>
    static void PackedRowPanel(in PackedGemmWork work, WeightMatrix w, float* xPacked, float* y, int r0, int r1)
    {
        int n = work.C1 - work.C0;
        int steps = (n + Lanes - 1) / Lanes;
        int rowBlocks = (r1 - r0 + PackRows - 1) / PackRows;
        int blockLength = steps * PackRows * Lanes;
        float* wBlock = PackedRowsBuffer(blockLength, steps * Lanes, out float* rowBuffer);
        int linesPerRow = (int)(((long)n * w.Type.SizeOf() + 63) / 64);
        float* tile = stackalloc float[32];
        for (int k = 0; k < rowBlocks; k++)
        {
            int r = r0 + k * PackRows;
            int rowCount = Math.Min(PackRows, r1 - r);
            PackRowBlock(w, r, rowCount, work.C0, n, steps, wBlock, rowBuffer);
            int nextLines = Math.Max(0, Math.Min(PackRows, r1 - r - PackRows)) * linesPerRow;
            for (int b = 0; b < work.Blocks; b++)
            {
                PrefetchSlice(w, r + PackRows, work.C0, linesPerRow, nextLines, b, work.Blocks);
                Micro4x6Packed(wBlock, xPacked + ((long)b * work.PaddedCols + work.C0) * PackTokens, steps, tile);
                WriteTile(tile, work, y, w.Rows, b, r, rowCount);
            }
        }
    }

    /// <summary>
    /// <see cref="PackedRowPanel"/> for BF16 weights read in place, in the other loop order: each 6-token block of X stays
    /// in L1 while the item's rows (at most 64 x 2 KB, L2-resident after the first block) stream past it, 4 at a time.
    /// BF16 rows are half the bytes of the X block per column, so streaming them moves a third of the L2 traffic that
    /// streaming X past a row block does (in-process A/B: prefill 5% faster, the down projection alone 20%). A short
    /// last row block repeats its last row and drops the extra results.
    /// </summary>
    static void Bf16RowPanel(in PackedGemmWork work, WeightMatrix w, float* xPacked, float* y, int r0, int r1)
    {
        int n = work.C1 - work.C0;
        int pairs = n / 32;
        float* tile = stackalloc float[32];
        float* upTile = stackalloc float[32];
        var up = work.W1;
        for (int b = 0; b < work.Blocks; b++)
        {
            float* xBlock = xPacked + ((long)b * work.PaddedCols + work.C0) * PackTokens;
            for (int r = r0; r < r1; r += PackRows)
            {
                int rowCount = Math.Min(PackRows, r1 - r);
                int last = rowCount - 1;
                Micro4x6Bf16(RowAt(w, r, work.C0), RowAt(w, r + Math.Min(1, last), work.C0), RowAt(w, r + Math.Min(2, last), work.C0),
                    RowAt(w, r + Math.Min(3, last), work.C0), xBlock, pairs, tile);
                if (work.SwiGlu)
                {
                    Micro4x6Bf16(RowAt(up, r, work.C0), RowAt(up, r + Math.Min(1, last), work.C0), RowAt(up, r + Math.Min(2, last), work.C0),
                        RowAt(up, r + Math.Min(3, last), work.C0), xBlock, pairs, upTile);
                    SwiGluTile(tile, upTile);
                }
                WriteTile(tile, work, y, w.Rows, b, r, rowCount);
            }
        }
    }

    /// <summary>
    /// gate = silu(gate) * up over a tile, in the order of the separate pass (g * u, then times sigmoid(g)), so fused and
    /// unfused products agree bit for bit.
    /// </summary>
    static void SwiGluTile(float* gate, float* up)
    {
        var g = new Span<float>(gate, 32);
        var u = new Span<float>(up, 32);
        TensorPrimitives.Multiply(g, u, u);
        TensorPrimitives.Sigmoid(g, g);
        TensorPrimitives.Multiply(g, u, g);
    }

    /// <summary>
    /// Slice <paramref name="slice"/> of <paramref name="slices"/> of the next rows' <paramref name="lines"/> cache lines
    /// (columns from <paramref name="c0"/>), fetched into L2: their first read comes from memory, and spread over the
    /// current rows' token blocks it is there when their turn comes.
    /// </summary>
    static void PrefetchSlice(WeightMatrix w, int firstRow, int c0, int linesPerRow, int lines, int slice, int slices)
    {
        int line = lines * slice / slices, end = lines * (slice + 1) / slices;
        if (line == end) return;
        nint columnOffset = (nint)c0 * w.Type.SizeOf();
        for (; line < end; line++)
        {
            int row = line / linesPerRow;
            Sse.Prefetch1((byte*)w.RowPointer(firstRow + row) + columnOffset + (line - row * linesPerRow) * 64);
        }
    }

    /// <summary>Stores (or adds) token block <paramref name="block"/>'s tile of rows [r, r + rowCount) into y ([tokens, rows]).</summary>
    static void WriteTile(float* tile, in PackedGemmWork work, float* y, int rows, int block, int r, int rowCount)
    {
        int tokens = Math.Min(PackTokens, work.Tokens - block * PackTokens);
        y += (long)block * PackTokens * rows + r;
        if (rowCount == PackRows) WriteTile4(tile, y, rows, tokens, work.Accumulate);
        else WriteTilePartial(tile, y, rows, tokens, rowCount, work.Accumulate);
    }

    static ushort* RowAt(WeightMatrix w, int row, int column) => (ushort*)(w.Data + ((nint)row * w.Cols + column) * sizeof(ushort));

    /// <summary>Stores (or adds) a 4-row by <paramref name="tokens"/>-token tile: each token's 4 rows are one 128-bit vector.</summary>
    static void WriteTile4(float* tile, float* y, int rows, int tokens, bool accumulate)
    {
        if (accumulate)
            for (int j = 0; j < tokens; j++, y += rows)
                (Vector128.Load(y) + Vector128.Load(tile + j * PackRows)).Store(y);
        else
            for (int j = 0; j < tokens; j++, y += rows)
                Vector128.Load(tile + j * PackRows).Store(y);
    }

    static void WriteTilePartial(float* tile, float* y, int rows, int tokens, int rowCount, bool accumulate)
    {
        for (int j = 0; j < tokens; j++, y += rows)
            for (int i = 0; i < rowCount; i++)
                y[i] = accumulate ? y[i] + tile[j * PackRows + i] : tile[j * PackRows + i];
    }

    /// <summary>
    /// This thread's scratch for widened rows (grown as needed, pinned, so its address is stable), 64-byte aligned so
    /// that no micro-kernel load splits across cache lines.
    /// </summary>
    static float* PackedRowsBuffer(int length, int rowLength, out float* rowBuffer)
    {
        var packedArray = t_packedRows;
        if (packedArray is null || packedArray.Length < length + Lanes)
            t_packedRows = packedArray = GC.AllocateUninitializedArray<float>(Math.Max(length, 4096) + Lanes, pinned: true);
        var rowArray = t_rowBuffer;
        if (rowArray is null || rowArray.Length < rowLength + Lanes)
            t_rowBuffer = rowArray = GC.AllocateUninitializedArray<float>(Math.Max(rowLength, 1024) + Lanes, pinned: true);
        rowBuffer = AlignTo64((float*)Unsafe.AsPointer(ref rowArray[0]));
        return AlignTo64((float*)Unsafe.AsPointer(ref packedArray[0]));
    }

    static float* AlignTo64(float* p) => (float*)(((nint)p + 63) & ~(nint)63);

    /// <summary>Widens W[r0 .. r0+rowCount, c0 .. c0+n) into [step][row][16], zero-padded to 4 rows and steps*16 columns.</summary>
    static void PackRowBlock(WeightMatrix w, int r0, int rowCount, int c0, int n, int steps, float* packed, float* row)
    {
        for (int r = 0; r < PackRows; r++)
        {
            if (r < rowCount && w.Type == DType.BF16)
            {
                // BF16 is widened straight into the packed layout: one pass over the weights, which this is the first
                // (DRAM-bound) touch of, instead of widening into a row buffer and copying that.
                ushort* source = (ushort*)(w.RowPointer(r0 + r) + (nint)c0 * sizeof(ushort));
                int full = n / Lanes;
                for (int s = 0; s < full; s++)
                {
                    Vector512<float> widened = Vector512.ShiftLeft(Avx512F.ConvertToVector512Int32(Vector256.Load(source + s * Lanes)).AsUInt32(), 16).AsSingle();
                    widened.Store(packed + (s * PackRows + r) * Lanes);
                }
                for (int s = full; s < steps; s++)
                {
                    float* destination = packed + (s * PackRows + r) * Lanes;
                    for (int i = 0; i < Lanes; i++)
                    {
                        int c = s * Lanes + i;
                        destination[i] = c < n ? BitConverter.Int32BitsToSingle(source[c] << 16) : 0f;
                    }
                }
                continue;
            }
            if (r < rowCount)
            {
                nint source = w.RowPointer(r0 + r) + (nint)c0 * w.Type.SizeOf();
                var destination = new Span<float>(row, n);
                switch (w.Type)
                {
                    case DType.F16: TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((void*)source, n), destination); break;
                    default: new ReadOnlySpan<float>((void*)source, n).CopyTo(destination); break;
                }
                new Span<float>(row + n, steps * Lanes - n).Clear();
            }
            else
            {
                new Span<float>(row, steps * Lanes).Clear();
            }
            for (int s = 0; s < steps; s++)
                Vector512.Load(row + s * Lanes).Store(packed + (s * PackRows + r) * Lanes);
        }
    }

    /// <summary>
    /// tile[t * 4 + r] = w_r . x_t straight from four BF16 rows, over <paramref name="pairs"/> steps of 32 columns. As
    /// 32-bit lanes, (v &lt;&lt; 16) holds a BF16 vector's even elements as float32 and (v &amp; 0xFFFF0000) its odd
    /// ones, so x is packed evens-then-odds per 32 columns and the weights need no packing pass at all.
    /// </summary>
    internal static void Micro4x6Bf16(ushort* w0, ushort* w1, ushort* w2, ushort* w3, float* x, int pairs, float* tile)
    {
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
        Vector512<float> a40 = default, a41 = default, a42 = default, a43 = default;
        Vector512<float> a50 = default, a51 = default, a52 = default, a53 = default;
        var high = Vector512.Create(0xFFFF0000u);
        for (int s = 0; s < pairs; s++)
        {
            var v0 = Vector512.ShiftLeft(Vector512.Load((uint*)w0), 16).AsSingle();
            var v1 = Vector512.ShiftLeft(Vector512.Load((uint*)w1), 16).AsSingle();
            var v2 = Vector512.ShiftLeft(Vector512.Load((uint*)w2), 16).AsSingle();
            var v3 = Vector512.ShiftLeft(Vector512.Load((uint*)w3), 16).AsSingle();
            var t = Vector512.Load(x);
            a00 = Vector512.FusedMultiplyAdd(v0, t, a00); a01 = Vector512.FusedMultiplyAdd(v1, t, a01);
            a02 = Vector512.FusedMultiplyAdd(v2, t, a02); a03 = Vector512.FusedMultiplyAdd(v3, t, a03);
            t = Vector512.Load(x + 32);
            a10 = Vector512.FusedMultiplyAdd(v0, t, a10); a11 = Vector512.FusedMultiplyAdd(v1, t, a11);
            a12 = Vector512.FusedMultiplyAdd(v2, t, a12); a13 = Vector512.FusedMultiplyAdd(v3, t, a13);
            t = Vector512.Load(x + 64);
            a20 = Vector512.FusedMultiplyAdd(v0, t, a20); a21 = Vector512.FusedMultiplyAdd(v1, t, a21);
            a22 = Vector512.FusedMultiplyAdd(v2, t, a22); a23 = Vector512.FusedMultiplyAdd(v3, t, a23);
            t = Vector512.Load(x + 96);
            a30 = Vector512.FusedMultiplyAdd(v0, t, a30); a31 = Vector512.FusedMultiplyAdd(v1, t, a31);
            a32 = Vector512.FusedMultiplyAdd(v2, t, a32); a33 = Vector512.FusedMultiplyAdd(v3, t, a33);
            t = Vector512.Load(x + 128);
            a40 = Vector512.FusedMultiplyAdd(v0, t, a40); a41 = Vector512.FusedMultiplyAdd(v1, t, a41);
            a42 = Vector512.FusedMultiplyAdd(v2, t, a42); a43 = Vector512.FusedMultiplyAdd(v3, t, a43);
            t = Vector512.Load(x + 160);
            a50 = Vector512.FusedMultiplyAdd(v0, t, a50); a51 = Vector512.FusedMultiplyAdd(v1, t, a51);
            a52 = Vector512.FusedMultiplyAdd(v2, t, a52); a53 = Vector512.FusedMultiplyAdd(v3, t, a53);

            v0 = (Vector512.Load((uint*)w0) & high).AsSingle();
            v1 = (Vector512.Load((uint*)w1) & high).AsSingle();
            v2 = (Vector512.Load((uint*)w2) & high).AsSingle();
            v3 = (Vector512.Load((uint*)w3) & high).AsSingle();
            t = Vector512.Load(x + 16);
            a00 = Vector512.FusedMultiplyAdd(v0, t, a00); a01 = Vector512.FusedMultiplyAdd(v1, t, a01);
            a02 = Vector512.FusedMultiplyAdd(v2, t, a02); a03 = Vector512.FusedMultiplyAdd(v3, t, a03);
            t = Vector512.Load(x + 48);
            a10 = Vector512.FusedMultiplyAdd(v0, t, a10); a11 = Vector512.FusedMultiplyAdd(v1, t, a11);
            a12 = Vector512.FusedMultiplyAdd(v2, t, a12); a13 = Vector512.FusedMultiplyAdd(v3, t, a13);
            t = Vector512.Load(x + 80);
            a20 = Vector512.FusedMultiplyAdd(v0, t, a20); a21 = Vector512.FusedMultiplyAdd(v1, t, a21);
            a22 = Vector512.FusedMultiplyAdd(v2, t, a22); a23 = Vector512.FusedMultiplyAdd(v3, t, a23);
            t = Vector512.Load(x + 112);
            a30 = Vector512.FusedMultiplyAdd(v0, t, a30); a31 = Vector512.FusedMultiplyAdd(v1, t, a31);
            a32 = Vector512.FusedMultiplyAdd(v2, t, a32); a33 = Vector512.FusedMultiplyAdd(v3, t, a33);
            t = Vector512.Load(x + 144);
            a40 = Vector512.FusedMultiplyAdd(v0, t, a40); a41 = Vector512.FusedMultiplyAdd(v1, t, a41);
            a42 = Vector512.FusedMultiplyAdd(v2, t, a42); a43 = Vector512.FusedMultiplyAdd(v3, t, a43);
            t = Vector512.Load(x + 176);
            a50 = Vector512.FusedMultiplyAdd(v0, t, a50); a51 = Vector512.FusedMultiplyAdd(v1, t, a51);
            a52 = Vector512.FusedMultiplyAdd(v2, t, a52); a53 = Vector512.FusedMultiplyAdd(v3, t, a53);
            w0 += 32; w1 += 32; w2 += 32; w3 += 32;
            x += PackTokens * 32;
        }
        Sum16(a00, a10, a20, a30, a01, a11, a21, a31, a02, a12, a22, a32, a03, a13, a23, a33).Store(tile);
        var zero = Vector512<float>.Zero;
        Sum16(a40, a50, zero, zero, a41, a51, zero, zero, a42, a52, zero, zero, a43, a53, zero, zero).Store(tile + 16);
    }

    /// <summary>tile[t * 4 + r] = w_r . x_t over <paramref name="steps"/> packed 16-column steps.</summary>
    internal static void Micro4x6Packed(float* w, float* x, int steps, float* tile)
    {
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
        Vector512<float> a40 = default, a41 = default, a42 = default, a43 = default;
        Vector512<float> a50 = default, a51 = default, a52 = default, a53 = default;
        for (int s = 0; s < steps; s++)
        {
            var v0 = Vector512.Load(w);
            var v1 = Vector512.Load(w + 16);
            var v2 = Vector512.Load(w + 32);
            var v3 = Vector512.Load(w + 48);
            var t = Vector512.Load(x);
            a00 = Vector512.FusedMultiplyAdd(v0, t, a00);
            a01 = Vector512.FusedMultiplyAdd(v1, t, a01);
            a02 = Vector512.FusedMultiplyAdd(v2, t, a02);
            a03 = Vector512.FusedMultiplyAdd(v3, t, a03);
            t = Vector512.Load(x + 16);
            a10 = Vector512.FusedMultiplyAdd(v0, t, a10);
            a11 = Vector512.FusedMultiplyAdd(v1, t, a11);
            a12 = Vector512.FusedMultiplyAdd(v2, t, a12);
            a13 = Vector512.FusedMultiplyAdd(v3, t, a13);
            t = Vector512.Load(x + 32);
            a20 = Vector512.FusedMultiplyAdd(v0, t, a20);
            a21 = Vector512.FusedMultiplyAdd(v1, t, a21);
            a22 = Vector512.FusedMultiplyAdd(v2, t, a22);
            a23 = Vector512.FusedMultiplyAdd(v3, t, a23);
            t = Vector512.Load(x + 48);
            a30 = Vector512.FusedMultiplyAdd(v0, t, a30);
            a31 = Vector512.FusedMultiplyAdd(v1, t, a31);
            a32 = Vector512.FusedMultiplyAdd(v2, t, a32);
            a33 = Vector512.FusedMultiplyAdd(v3, t, a33);
            t = Vector512.Load(x + 64);
            a40 = Vector512.FusedMultiplyAdd(v0, t, a40);
            a41 = Vector512.FusedMultiplyAdd(v1, t, a41);
            a42 = Vector512.FusedMultiplyAdd(v2, t, a42);
            a43 = Vector512.FusedMultiplyAdd(v3, t, a43);
            t = Vector512.Load(x + 80);
            a50 = Vector512.FusedMultiplyAdd(v0, t, a50);
            a51 = Vector512.FusedMultiplyAdd(v1, t, a51);
            a52 = Vector512.FusedMultiplyAdd(v2, t, a52);
            a53 = Vector512.FusedMultiplyAdd(v3, t, a53);
            w += PackRows * Lanes;
            x += PackTokens * Lanes;
        }
        // Input position 4r + t lands in lane 4t + r, the tile's layout; tokens 4 and 5 fill lanes 0-7 of the second.
        Sum16(a00, a10, a20, a30, a01, a11, a21, a31, a02, a12, a22, a32, a03, a13, a23, a33).Store(tile);
        var zero = Vector512<float>.Zero;
        Sum16(a40, a50, zero, zero, a41, a51, zero, zero, a42, a52, zero, zero, a43, a53, zero, zero).Store(tile + 16);
    }
}

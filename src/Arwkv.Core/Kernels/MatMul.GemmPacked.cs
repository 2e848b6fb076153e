using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;
using Arwkv.IO;

namespace Arwkv.Kernels;

// The vector Gemm, one body for every width (TV: 512, 256 or 128 bits, L = TV.Count lanes). X is packed once per call
// into blocks of T tokens, interleaved L columns at a time ([block][column / L][token][L]), and each 4-row block of W
// is widened into the same interleaved form ([column / L][row][L]). The micro-kernel then walks two pointers, keeps
// 4 x T accumulators in registers and does 4T FMAs per 4 + T loads; zero padding (tokens to a multiple of T, columns
// to a multiple of L) removes every tail loop. Few pointers matter: with one pointer per row and per token the JIT
// runs out of registers and spills. T is 6 where there are 32 vector registers (AVX-512, ARM64) and 3 where there are
// 16 (x86 without AVX-512 and AVX2 or SSE): 4 x 6 accumulators would spill there.
public static unsafe partial class MatMul
{
    const int PackRows = 4;
    // The widest vector's lanes: the padding that keeps every width's loads inside its buffers.
    const int MaxLanes = 16;
    // Rows per work item: 256 bytes of every Y row, so the two threads write separate cache lines (with 16-row items
    // they shared every line of Y and the write-back cost a third of the time).
    const int PackedRowsPerItem = 64;

    [ThreadStatic] static float[]? t_packedRows;
    [ThreadStatic] static float[]? t_rowBuffer;

    /// <summary>
    /// Whether width <typeparamref name="TV"/> has 32 vector registers (AVX-512, ARM64) rather than 16 (x86 at 256 or
    /// 128 bits), a JIT-time constant that sizes register tiles.
    /// </summary>
    internal static bool WideRegisterFile<TV>() where TV : unmanaged, ISimdVector<TV>
        => TV.Count == 16 || AdvSimd.Arm64.IsSupported;

    /// <summary>Tokens per micro-kernel tile at width <typeparamref name="TV"/> (a JIT-time constant).</summary>
    static int TileTokens<TV>() where TV : unmanaged, ISimdVector<TV> => WideRegisterFile<TV>() ? 6 : 3;

    /// <summary>What a packed Gemm computes: up to three matrices with their outputs, or a SwiGLU pair.</summary>
    struct PackedGemmSpec
    {
        // Up to three matrices (Count), each with its own output and its own or a shared packed X; or, with SwiGlu, W the
        // gate and W1 the up projection of one output.
        public WeightMatrix W, W1, W2;
        public float* Y, Y1, Y2;
        public int Count;
        public bool SwiGlu;
    }

    static void GemmPacked(KernelIsa isa, WeightMatrix w, float* x, float* y, int tokens, bool accumulate, KernelThreadPool? pool, int chunk)
    {
        var spec = new PackedGemmSpec { W = w, Y = y, Count = 1 };
        GemmPacked(isa, spec, x, tokens, accumulate, pool, chunk);
    }

    static void GemmPacked(KernelIsa isa, in PackedGemmSpec spec, float* x, int tokens, bool accumulate, KernelThreadPool? pool, int chunk,
        float* x1 = null, float* x2 = null)
    {
        switch (isa)
        {
            case KernelIsa.Vector512: GemmPacked<SimdVector512>(spec, x, tokens, accumulate, pool, chunk, x1, x2); break;
            case KernelIsa.Vector256: GemmPacked<SimdVector256>(spec, x, tokens, accumulate, pool, chunk, x1, x2); break;
            case KernelIsa.Vector128: GemmPacked<SimdVector128>(spec, x, tokens, accumulate, pool, chunk, x1, x2); break;
            default: throw new ArgumentOutOfRangeException(nameof(isa), isa, "the packed Gemm needs a vector path");
        }
    }

    /// <summary>
    /// Runs the <paramref name="spec"/>'s matrices (W, W1, W2 up to Count, all with the same columns, with inputs x, x1
    /// and x2, or all with x where x1 is null) or its SwiGLU pair over x, as one parallel pass per column chunk: one
    /// dispatch where separate calls would pay a hand-off to the threads and a partly idle tail each.
    /// </summary>
    static void GemmPacked<TV>(in PackedGemmSpec spec, float* x, int tokens, bool accumulate, KernelThreadPool? pool, int chunk,
        float* x1, float* x2) where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, T = TileTokens<TV>();
        var work = new PackedGemmWork<TV> { Spec = spec };
        int cols = spec.W.Cols;
        int paddedCols = (cols + L - 1) & ~(L - 1);
        int blocks = (tokens + T - 1) / T;
        long packedLength = (long)blocks * paddedCols * T;
        int inputs = x1 is null ? 1 : x2 is null ? 2 : 3;
        if (inputs * packedLength + MaxLanes > Array.MaxLength) throw new ArgumentException("too many tokens x columns for one Gemm call");
        float[] rented = ArrayPool<float>.Shared.Rent((int)(inputs * packedLength) + MaxLanes);
        try
        {
            fixed (float* unaligned = rented)
            {
                // Every micro-kernel load of X is a whole vector: aligned, none splits across two cache lines, where a
                // pooled array's 16-byte alignment would split many of them.
                float* packed = AlignTo64(unaligned);
                // BF16 weights whose rows split into whole 32-column steps are read in place by MicroBf16 (chunk is a
                // multiple of 32, so every column chunk is too); other types are widened into a packed block first.
                bool direct = DirectBf16(spec.W) && !ForcePackedBf16;
                if (spec.SwiGlu && !direct) throw new InvalidOperationException("the fused SwiGLU runs only on the in-place BF16 panels");
                for (int i = 0; i < inputs; i++)
                {
                    float* source = i == 0 ? x : i == 1 ? x1 : x2;
                    float* destination = packed + i * packedLength;
                    if (direct) PackTokenBlocksEvenOdd<TV>(source, tokens, cols, destination);
                    else PackTokenBlocks<TV>(source, tokens, cols, paddedCols, destination);
                }
                work.XPacked1 = inputs > 1 ? packed + packedLength : packed;
                work.XPacked2 = inputs > 2 ? packed + 2 * packedLength : work.XPacked1;
                int totalRows = spec.W.Rows + (spec.Count > 1 ? spec.W1.Rows : 0) + (spec.Count > 2 ? spec.W2.Rows : 0);
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
                work.ItemStart1 = Items(spec.W.Rows, rowsPerItem);
                work.ItemStart2 = work.ItemStart1 + (spec.Count > 1 ? Items(spec.W1.Rows, rowsPerItem) : 0);
                int items = work.ItemStart2 + (spec.Count > 2 ? Items(spec.W2.Rows, rowsPerItem) : 0);
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

    /// <summary>Whether <see cref="MicroBf16"/> can read the matrix in place (32 columns: a whole step at every width).</summary>
    static bool DirectBf16(WeightMatrix w) => w.Type == DType.BF16 && w.Cols % 32 == 0;

    /// <summary>Tests set this to run BF16 through the widening path as well (to cover both on one machine).</summary>
    [ThreadStatic] internal static bool ForcePackedBf16;

    /// <summary>
    /// X for <see cref="MicroBf16"/>: blocks of T tokens, per 2L columns each token's L even columns then its L odd
    /// ones ([block][column / 2L][token][2L]); padding tokens are zero. cols is a multiple of 2L.
    /// </summary>
    static void PackTokenBlocksEvenOdd<TV>(float* x, int tokens, int cols, float* packed) where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, T = TileTokens<TV>(), step = 2 * L;
        int blocks = (tokens + T - 1) / T;
        for (int b = 0; b < blocks; b++)
        {
            float* block = packed + (long)b * cols * T;
            for (int t = 0; t < T; t++)
            {
                int token = b * T + t;
                float* destination = block + t * step;
                if (token >= tokens)
                {
                    for (int c = 0; c < cols; c += step)
                        new Span<float>(destination + (long)c * T, step).Clear();
                    continue;
                }
                float* source = x + (long)token * cols;
                for (int c = 0; c < cols; c += step)
                    TV.StoreEvenOdd(source + c, destination + (long)c * T, destination + (long)c * T + L);
            }
        }
    }

    static void PackTokenBlocks<TV>(float* x, int tokens, int cols, int paddedCols, float* packed) where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, T = TileTokens<TV>();
        int blocks = (tokens + T - 1) / T;
        for (int b = 0; b < blocks; b++)
        {
            float* block = packed + (long)b * paddedCols * T;
            for (int t = 0; t < T; t++)
            {
                int token = b * T + t;
                float* source = x + (long)token * cols;
                float* destination = block + t * L;
                int c = 0;
                if (token < tokens)
                {
                    for (; c <= cols - L; c += L)
                        TV.Store(TV.Load(source + c), destination + (long)c * T);
                    if (c < cols)
                    {
                        float* last = destination + (long)c * T;
                        new Span<float>(last, L).Clear();
                        new ReadOnlySpan<float>(source + c, cols - c).CopyTo(new Span<float>(last, L));
                        c += L;
                    }
                }
                for (; c < paddedCols; c += L)
                    new Span<float>(destination + (long)c * T, L).Clear();
            }
        }
    }

    struct PackedGemmWork<TV> : IParallelWork where TV : unmanaged, ISimdVector<TV>
    {
        public PackedGemmSpec Spec;
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
            int count = Spec.Count;
            int matrix = index >= ItemStart2 && count > 2 ? 2 : index >= ItemStart1 && count > 1 ? 1 : 0;
            int local = index - (matrix == 2 ? ItemStart2 : matrix == 1 ? ItemStart1 : 0);
            var w = matrix == 2 ? Spec.W2 : matrix == 1 ? Spec.W1 : Spec.W;
            float* y = matrix == 2 ? Spec.Y2 : matrix == 1 ? Spec.Y1 : Spec.Y;
            float* x = matrix == 2 ? XPacked2 : matrix == 1 ? XPacked1 : XPacked;
            int r0 = local * RowsPerItem, r1 = Math.Min(w.Rows, (local + 1) * RowsPerItem);
            if (DirectBf16) Bf16RowPanel(this, w, x, y, r0, r1);
            else PackedRowPanel(this, w, x, y, r0, r1);
        }
    }

    /// <summary>
    /// Rows [r0, r1) of the current column chunk for every token, 4 rows at a time: the block is widened into an
    /// L1-resident buffer (at most 16 KB), then every token block streams past it from L2, the faster of the two
    /// loop orders (the AVX-512 micro-kernel alone runs at about 95% of the FMA peak this way).
    /// </summary>
    static void PackedRowPanel<TV>(in PackedGemmWork<TV> work, WeightMatrix w, float* xPacked, float* y, int r0, int r1)
        where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, T = TileTokens<TV>();
        int n = work.C1 - work.C0;
        int steps = (n + L - 1) / L;
        int rowBlocks = (r1 - r0 + PackRows - 1) / PackRows;
        int blockLength = steps * PackRows * L;
        float* wBlock = PackedRowsBuffer(blockLength, steps * L, out float* rowBuffer);
        int linesPerRow = (int)((ChunkBytes(w, n) + 63) / 64);
        float* tile = stackalloc float[32];
        for (int k = 0; k < rowBlocks; k++)
        {
            int r = r0 + k * PackRows;
            int rowCount = Math.Min(PackRows, r1 - r);
            PackRowBlock<TV>(w, r, rowCount, work.C0, n, steps, wBlock, rowBuffer);
            int nextLines = Math.Max(0, Math.Min(PackRows, r1 - r - PackRows)) * linesPerRow;
            for (int b = 0; b < work.Blocks; b++)
            {
                PrefetchSlice(w, r + PackRows, work.C0, linesPerRow, nextLines, b, work.Blocks);
                MicroPacked<TV>(wBlock, xPacked + ((long)b * work.PaddedCols + work.C0) * T, steps, tile);
                WriteTile(tile, T, work.Tokens, work.Accumulate, y, w.Rows, b, r, rowCount);
            }
        }
    }

    /// <summary>
    /// <see cref="PackedRowPanel"/> for BF16 weights read in place, in the other loop order: each T-token block of X stays
    /// in L1 while the item's rows (at most 64 x 2 KB, L2-resident after the first block) stream past it, 4 at a time.
    /// BF16 rows are half the bytes of the X block per column, so streaming them moves a third of the L2 traffic that
    /// streaming X past a row block does (in-process A/B at 512 bits: prefill 5% faster, the down projection alone 20%).
    /// A short last row block repeats its last row and drops the extra results.
    /// </summary>
    static void Bf16RowPanel<TV>(in PackedGemmWork<TV> work, WeightMatrix w, float* xPacked, float* y, int r0, int r1)
        where TV : unmanaged, ISimdVector<TV>
    {
        int T = TileTokens<TV>();
        int n = work.C1 - work.C0;
        int pairs = n / (2 * TV.Count);
        float* tile = stackalloc float[32];
        float* upTile = stackalloc float[32];
        var up = work.Spec.W1;
        bool swiGlu = work.Spec.SwiGlu;
        for (int b = 0; b < work.Blocks; b++)
        {
            float* xBlock = xPacked + ((long)b * work.PaddedCols + work.C0) * T;
            for (int r = r0; r < r1; r += PackRows)
            {
                int rowCount = Math.Min(PackRows, r1 - r);
                int last = rowCount - 1;
                MicroBf16<TV>(RowAt(w, r, work.C0), RowAt(w, r + Math.Min(1, last), work.C0), RowAt(w, r + Math.Min(2, last), work.C0),
                    RowAt(w, r + Math.Min(3, last), work.C0), xBlock, pairs, tile);
                if (swiGlu)
                {
                    MicroBf16<TV>(RowAt(up, r, work.C0), RowAt(up, r + Math.Min(1, last), work.C0), RowAt(up, r + Math.Min(2, last), work.C0),
                        RowAt(up, r + Math.Min(3, last), work.C0), xBlock, pairs, upTile);
                    SwiGluTile(tile, upTile, PackRows * T);
                }
                WriteTile(tile, T, work.Tokens, work.Accumulate, y, w.Rows, b, r, rowCount);
            }
        }
    }

    /// <summary>
    /// gate = silu(gate) * up over a tile, in the order of the separate pass (g * u, then times sigmoid(g)), so fused and
    /// unfused products agree bit for bit.
    /// </summary>
    static void SwiGluTile(float* gate, float* up, int length)
    {
        var g = new Span<float>(gate, length);
        var u = new Span<float>(up, length);
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
        if (line == end || !Sse.IsSupported) return;
        nint columnOffset = (nint)ChunkBytes(w, c0);
        for (; line < end; line++)
        {
            int row = line / linesPerRow;
            Sse.Prefetch1((byte*)w.RowPointer(firstRow + row) + columnOffset + (line - row * linesPerRow) * 64);
        }
    }


    /// <summary>Stores (or adds) token block <paramref name="block"/>'s tile of rows [r, r + rowCount) into y ([tokens, rows]).</summary>
    static void WriteTile(float* tile, int tileTokens, int allTokens, bool accumulate, float* y, int rows, int block, int r, int rowCount)
    {
        int tokens = Math.Min(tileTokens, allTokens - block * tileTokens);
        y += (long)block * tileTokens * rows + r;
        if (rowCount == PackRows) WriteTile4(tile, y, rows, tokens, accumulate);
        else WriteTilePartial(tile, y, rows, tokens, rowCount, accumulate);
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
        if (packedArray is null || packedArray.Length < length + MaxLanes)
            t_packedRows = packedArray = GC.AllocateUninitializedArray<float>(Math.Max(length, 4096) + MaxLanes, pinned: true);
        var rowArray = t_rowBuffer;
        if (rowArray is null || rowArray.Length < rowLength + MaxLanes)
            t_rowBuffer = rowArray = GC.AllocateUninitializedArray<float>(Math.Max(rowLength, 1024) + MaxLanes, pinned: true);
        rowBuffer = AlignTo64((float*)Unsafe.AsPointer(ref rowArray[0]));
        return AlignTo64((float*)Unsafe.AsPointer(ref packedArray[0]));
    }

    static float* AlignTo64(float* p) => (float*)(((nint)p + 63) & ~(nint)63);

    /// <summary>Widens W[r0 .. r0+rowCount, c0 .. c0+n) into [step][row][L], zero-padded to 4 rows and steps*L columns.</summary>
    static void PackRowBlock<TV>(WeightMatrix w, int r0, int rowCount, int c0, int n, int steps, float* packed, float* row)
        where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count;
        for (int r = 0; r < PackRows; r++)
        {
            if (r < rowCount && w.Type == DType.BF16)
            {
                // BF16 is widened straight into the packed layout: one pass over the weights, which this is the first
                // (DRAM-bound) touch of, instead of widening into a row buffer and copying that.
                ushort* source = (ushort*)(w.RowPointer(r0 + r) + (nint)c0 * sizeof(ushort));
                int full = n / L;
                for (int s = 0; s < full; s++)
                    TV.Store(TV.LoadBf16(source + s * L), packed + (s * PackRows + r) * L);
                for (int s = full; s < steps; s++)
                {
                    float* destination = packed + (s * PackRows + r) * L;
                    for (int i = 0; i < L; i++)
                    {
                        int c = s * L + i;
                        destination[i] = c < n ? BitConverter.Int32BitsToSingle(source[c] << 16) : 0f;
                    }
                }
                continue;
            }
            if (r < rowCount)
            {
                WidenColumns(w, r0 + r, c0, new Span<float>(row, n));
                new Span<float>(row + n, steps * L - n).Clear();
            }
            else
            {
                new Span<float>(row, steps * L).Clear();
            }
            for (int s = 0; s < steps; s++)
                TV.Store(TV.Load(row + s * L), packed + (s * PackRows + r) * L);
        }
    }

    /// <summary>
    /// tile[t * 4 + r] = w_r . x_t straight from four BF16 rows, over <paramref name="pairs"/> steps of 2L columns, for T
    /// tokens. As 32-bit lanes, (v &lt;&lt; 16) holds a BF16 vector's even elements as float32 and (v &amp; 0xFFFF0000)
    /// its odd ones, so x is packed evens-then-odds per 2L columns and the weights need no packing pass at all.
    /// </summary>
    internal static void MicroBf16<TV>(ushort* w0, ushort* w1, ushort* w2, ushort* w3, float* x, int pairs, float* tile)
        where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count, step = 2 * L;
        bool six = TileTokens<TV>() == 6;
        TV a00 = default, a01 = default, a02 = default, a03 = default;
        TV a10 = default, a11 = default, a12 = default, a13 = default;
        TV a20 = default, a21 = default, a22 = default, a23 = default;
        TV a30 = default, a31 = default, a32 = default, a33 = default;
        TV a40 = default, a41 = default, a42 = default, a43 = default;
        TV a50 = default, a51 = default, a52 = default, a53 = default;
        for (int s = 0; s < pairs; s++)
        {
            // Row-major as in MicroPacked: T x vectors live, each widened weight vector used T times; the even elements,
            // then the odd ones against each token's second L values.
            TV x0, x1, x2, x3 = default, x4 = default, x5 = default, v;
            x0 = TV.Load(x); x1 = TV.Load(x + step); x2 = TV.Load(x + 2 * step);
            if (six) { x3 = TV.Load(x + 3 * step); x4 = TV.Load(x + 4 * step); x5 = TV.Load(x + 5 * step); }
            v = TV.LoadBf16Even(w0);
            a00 = TV.Fma(v, x0, a00); a10 = TV.Fma(v, x1, a10); a20 = TV.Fma(v, x2, a20);
            if (six) { a30 = TV.Fma(v, x3, a30); a40 = TV.Fma(v, x4, a40); a50 = TV.Fma(v, x5, a50); }
            v = TV.LoadBf16Even(w1);
            a01 = TV.Fma(v, x0, a01); a11 = TV.Fma(v, x1, a11); a21 = TV.Fma(v, x2, a21);
            if (six) { a31 = TV.Fma(v, x3, a31); a41 = TV.Fma(v, x4, a41); a51 = TV.Fma(v, x5, a51); }
            v = TV.LoadBf16Even(w2);
            a02 = TV.Fma(v, x0, a02); a12 = TV.Fma(v, x1, a12); a22 = TV.Fma(v, x2, a22);
            if (six) { a32 = TV.Fma(v, x3, a32); a42 = TV.Fma(v, x4, a42); a52 = TV.Fma(v, x5, a52); }
            v = TV.LoadBf16Even(w3);
            a03 = TV.Fma(v, x0, a03); a13 = TV.Fma(v, x1, a13); a23 = TV.Fma(v, x2, a23);
            if (six) { a33 = TV.Fma(v, x3, a33); a43 = TV.Fma(v, x4, a43); a53 = TV.Fma(v, x5, a53); }
            x0 = TV.Load(x + L); x1 = TV.Load(x + L + step); x2 = TV.Load(x + L + 2 * step);
            if (six) { x3 = TV.Load(x + L + 3 * step); x4 = TV.Load(x + L + 4 * step); x5 = TV.Load(x + L + 5 * step); }
            v = TV.LoadBf16Odd(w0);
            a00 = TV.Fma(v, x0, a00); a10 = TV.Fma(v, x1, a10); a20 = TV.Fma(v, x2, a20);
            if (six) { a30 = TV.Fma(v, x3, a30); a40 = TV.Fma(v, x4, a40); a50 = TV.Fma(v, x5, a50); }
            v = TV.LoadBf16Odd(w1);
            a01 = TV.Fma(v, x0, a01); a11 = TV.Fma(v, x1, a11); a21 = TV.Fma(v, x2, a21);
            if (six) { a31 = TV.Fma(v, x3, a31); a41 = TV.Fma(v, x4, a41); a51 = TV.Fma(v, x5, a51); }
            v = TV.LoadBf16Odd(w2);
            a02 = TV.Fma(v, x0, a02); a12 = TV.Fma(v, x1, a12); a22 = TV.Fma(v, x2, a22);
            if (six) { a32 = TV.Fma(v, x3, a32); a42 = TV.Fma(v, x4, a42); a52 = TV.Fma(v, x5, a52); }
            v = TV.LoadBf16Odd(w3);
            a03 = TV.Fma(v, x0, a03); a13 = TV.Fma(v, x1, a13); a23 = TV.Fma(v, x2, a23);
            if (six) { a33 = TV.Fma(v, x3, a33); a43 = TV.Fma(v, x4, a43); a53 = TV.Fma(v, x5, a53); }
            w0 += step; w1 += step; w2 += step; w3 += step;
            x += (six ? 6 : 3) * step;
        }
        StoreTile(tile, six, a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23,
            a30, a31, a32, a33, a40, a41, a42, a43, a50, a51, a52, a53);
    }

    /// <summary>tile[t * 4 + r] = w_r . x_t over <paramref name="steps"/> packed L-column steps, for T tokens.</summary>
    internal static void MicroPacked<TV>(float* w, float* x, int steps, float* tile) where TV : unmanaged, ISimdVector<TV>
    {
        int L = TV.Count;
        bool six = TileTokens<TV>() == 6;
        TV a00 = default, a01 = default, a02 = default, a03 = default;
        TV a10 = default, a11 = default, a12 = default, a13 = default;
        TV a20 = default, a21 = default, a22 = default, a23 = default;
        TV a30 = default, a31 = default, a32 = default, a33 = default;
        TV a40 = default, a41 = default, a42 = default, a43 = default;
        TV a50 = default, a51 = default, a52 = default, a53 = default;
        for (int s = 0; s < steps; s++)
        {
            // Row-major: the tile's T x vectors stay in registers and each weight vector is loaded, used T times and
            // dropped, so 4T accumulators + T + 1 registers are live (31 of 32 at T = 6, 16 of 16 at T = 3).
            TV x0 = TV.Load(x), x1 = TV.Load(x + L), x2 = TV.Load(x + 2 * L);
            TV x3 = six ? TV.Load(x + 3 * L) : default, x4 = six ? TV.Load(x + 4 * L) : default, x5 = six ? TV.Load(x + 5 * L) : default;
            TV v = TV.Load(w);
            a00 = TV.Fma(v, x0, a00); a10 = TV.Fma(v, x1, a10); a20 = TV.Fma(v, x2, a20);
            if (six) { a30 = TV.Fma(v, x3, a30); a40 = TV.Fma(v, x4, a40); a50 = TV.Fma(v, x5, a50); }
            v = TV.Load(w + L);
            a01 = TV.Fma(v, x0, a01); a11 = TV.Fma(v, x1, a11); a21 = TV.Fma(v, x2, a21);
            if (six) { a31 = TV.Fma(v, x3, a31); a41 = TV.Fma(v, x4, a41); a51 = TV.Fma(v, x5, a51); }
            v = TV.Load(w + 2 * L);
            a02 = TV.Fma(v, x0, a02); a12 = TV.Fma(v, x1, a12); a22 = TV.Fma(v, x2, a22);
            if (six) { a32 = TV.Fma(v, x3, a32); a42 = TV.Fma(v, x4, a42); a52 = TV.Fma(v, x5, a52); }
            v = TV.Load(w + 3 * L);
            a03 = TV.Fma(v, x0, a03); a13 = TV.Fma(v, x1, a13); a23 = TV.Fma(v, x2, a23);
            if (six) { a33 = TV.Fma(v, x3, a33); a43 = TV.Fma(v, x4, a43); a53 = TV.Fma(v, x5, a53); }
            w += PackRows * L;
            x += (six ? 6 : 3) * L;
        }
        StoreTile(tile, six, a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23,
            a30, a31, a32, a33, a40, a41, a42, a43, a50, a51, a52, a53);
    }

    /// <summary>Token j's four row sums go to tile[4j .. 4j + 3], one 128-bit store each.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StoreTile<TV>(float* tile, bool six,
        TV a00, TV a01, TV a02, TV a03, TV a10, TV a11, TV a12, TV a13, TV a20, TV a21, TV a22, TV a23,
        TV a30, TV a31, TV a32, TV a33, TV a40, TV a41, TV a42, TV a43, TV a50, TV a51, TV a52, TV a53)
        where TV : unmanaged, ISimdVector<TV>
    {
        TV.Sum4(a00, a01, a02, a03).Store(tile);
        TV.Sum4(a10, a11, a12, a13).Store(tile + 4);
        TV.Sum4(a20, a21, a22, a23).Store(tile + 8);
        if (!six) return;
        TV.Sum4(a30, a31, a32, a33).Store(tile + 12);
        TV.Sum4(a40, a41, a42, a43).Store(tile + 16);
        TV.Sum4(a50, a51, a52, a53).Store(tile + 20);
    }
}

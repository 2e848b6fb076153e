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

    [ThreadStatic] static float[]? t_packedRows;
    [ThreadStatic] static float[]? t_rowBuffer;

    static void GemmPacked(WeightMatrix w, float* x, float* y, int tokens, bool accumulate, KernelThreadPool? pool, int chunk)
    {
        int cols = w.Cols;
        int paddedCols = (cols + Lanes - 1) & ~(Lanes - 1);
        int blocks = (tokens + PackTokens - 1) / PackTokens;
        long packedLength = (long)blocks * paddedCols * PackTokens;
        if (packedLength > Array.MaxLength) throw new ArgumentException("too many tokens x columns for one Gemm call");
        float[] rented = ArrayPool<float>.Shared.Rent((int)packedLength);
        try
        {
            fixed (float* packed = rented)
            {
                PackTokenBlocks(x, tokens, cols, paddedCols, packed);
                var work = new PackedGemmWork
                {
                    W = w, XPacked = packed, Y = y, Tokens = tokens, Blocks = blocks, PaddedCols = paddedCols,
                };
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
        finally
        {
            ArrayPool<float>.Shared.Return(rented);
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
        public WeightMatrix W;
        public float* XPacked;
        public float* Y;
        public int Tokens, Blocks, PaddedCols;
        public int C0, C1;
        public bool Accumulate;

        public readonly void Execute(int index) => PackedRowPanel(this, index * GemmRowsPerItem, Math.Min(W.Rows, (index + 1) * GemmRowsPerItem));
    }

    /// <summary>
    /// Rows [r0, r1) of the current column chunk for every token. The row blocks of the panel are widened first and
    /// the token blocks are the outer loop, so a token block stays in L1 while all row blocks pass over it.
    /// </summary>
    static void PackedRowPanel(in PackedGemmWork work, int r0, int r1)
    {
        var w = work.W;
        int n = work.C1 - work.C0;
        int steps = (n + Lanes - 1) / Lanes;
        int rowBlocks = (r1 - r0 + PackRows - 1) / PackRows;
        int blockLength = steps * PackRows * Lanes;
        float* packedRows = PackedRowsBuffer(rowBlocks * blockLength, steps * Lanes, out float* rowBuffer);
        for (int k = 0; k < rowBlocks; k++)
        {
            int r = r0 + k * PackRows;
            PackRowBlock(w, r, Math.Min(PackRows, r1 - r), work.C0, n, steps, packedRows + k * blockLength, rowBuffer);
        }

        float* tile = stackalloc float[32];
        int rows = w.Rows;
        for (int b = 0; b < work.Blocks; b++)
        {
            float* xBlock = work.XPacked + ((long)b * work.PaddedCols + work.C0) * PackTokens;
            int tokenCount = Math.Min(PackTokens, work.Tokens - b * PackTokens);
            for (int k = 0; k < rowBlocks; k++)
            {
                Micro4x6Packed(packedRows + k * blockLength, xBlock, steps, tile);
                int r = r0 + k * PackRows;
                int rowCount = Math.Min(PackRows, r1 - r);
                for (int j = 0; j < tokenCount; j++)
                {
                    float* yRow = work.Y + (long)(b * PackTokens + j) * rows + r;
                    for (int i = 0; i < rowCount; i++)
                        yRow[i] = work.Accumulate ? yRow[i] + tile[j * PackRows + i] : tile[j * PackRows + i];
                }
            }
        }
    }

    /// <summary>This thread's scratch for widened rows (grown as needed, pinned, so its address is stable).</summary>
    static float* PackedRowsBuffer(int length, int rowLength, out float* rowBuffer)
    {
        var packedArray = t_packedRows;
        if (packedArray is null || packedArray.Length < length)
            t_packedRows = packedArray = GC.AllocateUninitializedArray<float>(Math.Max(length, 4096), pinned: true);
        var rowArray = t_rowBuffer;
        if (rowArray is null || rowArray.Length < rowLength)
            t_rowBuffer = rowArray = GC.AllocateUninitializedArray<float>(Math.Max(rowLength, 1024), pinned: true);
        rowBuffer = (float*)Unsafe.AsPointer(ref rowArray[0]);
        return (float*)Unsafe.AsPointer(ref packedArray[0]);
    }

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

    /// <summary>tile[t * 4 + r] = w_r . x_t over <paramref name="steps"/> packed 16-column steps.</summary>
    static void Micro4x6Packed(float* w, float* x, int steps, float* tile)
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

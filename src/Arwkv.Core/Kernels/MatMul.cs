using System.Buffers;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Arwkv.IO;

namespace Arwkv.Kernels;

/// <summary>Instruction-set paths of the CPU kernels, from slowest to fastest.</summary>
internal enum KernelIsa
{
    /// <summary>Plain scalar loops (any CPU).</summary>
    Scalar,
    /// <summary>128-bit vectors through the cross-platform Vector128 API (SSE on x86, AdvSimd on ARM64).</summary>
    Vector128,
    /// <summary>256-bit vectors with FMA (AVX2).</summary>
    Vector256,
    /// <summary>512-bit vectors (AVX-512F/BW).</summary>
    Vector512,
}

/// <summary>
/// Matrix products against checkpoint weights, which stay in their storage type (F32/F16/BF16, ggml Q8_0/Q4_0) and
/// are widened in registers. Gemv is the decode path (one token), Gemm the prefill path (T tokens at once).
/// </summary>
public static unsafe partial class MatMul
{
    /// <summary>The fastest path this CPU supports.</summary>
    internal static readonly KernelIsa DetectedIsa =
        Avx512F.IsSupported && Avx512BW.IsSupported ? KernelIsa.Vector512
        : Avx2.IsSupported && Fma.IsSupported ? KernelIsa.Vector256
        : Vector128.IsHardwareAccelerated ? KernelIsa.Vector128
        : KernelIsa.Scalar;

    /// <summary>
    /// Forces a slower path on the calling thread (tests use it to cover every path on one machine). Paths the CPU
    /// lacks are never taken: the effective path is the slower of this and <see cref="DetectedIsa"/>.
    /// </summary>
    [ThreadStatic] internal static KernelIsa? ForceIsa;

    /// <summary>
    /// A switch that a kernel variant under evaluation reads (0 = the production path), so that the bench probe's "ab"
    /// mode can alternate two variants inside one process: this VM's speed drifts too much between processes.
    /// </summary>
    internal static int Experiment;

    /// <summary>The path kernels called from this thread take.</summary>
    internal static KernelIsa Isa => ForceIsa is { } forced && forced < DetectedIsa ? forced : DetectedIsa;

    /// <summary>y[r] = sum_c W[r, c] * x[c]. x: [W.Cols], y: [W.Rows].</summary>
    public static void Gemv(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, KernelThreadPool? pool = null)
        => GemvCore(w, x, y, accumulate: false, pool);

    /// <summary>y[r] += sum_c W[r, c] * x[c] (a residual add fused into the product). x: [W.Cols], y: [W.Rows].</summary>
    public static void GemvAdd(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, KernelThreadPool? pool = null)
        => GemvCore(w, x, y, accumulate: true, pool);

    /// <summary>Y[t, r] = sum_c W[r, c] * X[t, c]. X: [tokens, W.Cols], Y: [tokens, W.Rows].</summary>
    public static void Gemm(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, int tokens, KernelThreadPool? pool = null)
        => GemmCore(w, x, y, tokens, accumulate: false, pool);

    /// <summary>Y[t, r] += sum_c W[r, c] * X[t, c]. X: [tokens, W.Cols], Y: [tokens, W.Rows].</summary>
    public static void GemmAdd(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, int tokens, KernelThreadPool? pool = null)
        => GemmCore(w, x, y, tokens, accumulate: true, pool);

    /// <summary>Bytes of the first <paramref name="columns"/> columns of a row (a multiple of the block size for quantized types).</summary>
    static long ChunkBytes(WeightMatrix w, int columns) => w.Type.RowBytes(columns);

    /// <summary>Columns [c0, c0 + destination.Length) of row <paramref name="row"/>, widened to float32.</summary>
    static void WidenColumns(WeightMatrix w, int row, int c0, Span<float> destination)
        => Convert.ToFloat32(w.RowPointer(row) + (nint)ChunkBytes(w, c0), w.Type, destination);

    /// <summary>The plain reference every fast path is tested against.</summary>
    internal static void GemvNaive(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y)
    {
        var row = new float[w.Cols];
        for (int r = 0; r < w.Rows; r++)
        {
            Convert.ToFloat32(w.RowPointer(r), w.Type, row);
            float sum = 0;
            for (int c = 0; c < w.Cols; c++) sum += row[c] * x[c];
            y[r] = sum;
        }
    }

    static void CheckMatrix(WeightMatrix w)
    {
        if (w.Rows < 0 || w.Cols < 0) throw new ArgumentException("matrix has a negative size", nameof(w));
        if (w.Data == 0 && w.Rows > 0 && w.Cols > 0) throw new ArgumentException("matrix has no data", nameof(w));
        if (w.Type is not (DType.F32 or DType.F16 or DType.BF16 or DType.Q8_0 or DType.Q4_0)) throw new ArgumentException($"unsupported weight type {w.Type}", nameof(w));
        if (w.Type.IsQuantized() && w.Cols % 32 != 0) throw new ArgumentException($"a {w.Type} matrix needs a multiple of 32 columns, got {w.Cols}", nameof(w));
    }

    static void GemvCore(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, bool accumulate, KernelThreadPool? pool)
    {
        CheckMatrix(w);
        if (x.Length < w.Cols || y.Length < w.Rows) throw new ArgumentException("x or y is shorter than the matrix");
        if (w.Rows == 0) return;
        var isa = Isa;
        int cols = w.Cols;
        // BF16 is widened without a permute: as 32-bit lanes, (v << 16) holds the even elements and (v & 0xFFFF0000)
        // the odd ones, so x is reordered once per call to match (evens then odds within each vector block).
        int block = w.Type == DType.BF16 ? PermuteBlock(isa) : 0;
        float[]? rented = null;
        Span<float> xPermuted = block == 0 ? default
            : cols <= 4096 ? stackalloc float[cols] : (rented = ArrayPool<float>.Shared.Rent(cols));
        try
        {
            if (block != 0) PermuteEvenOdd(x[..cols], xPermuted, block);
            fixed (float* xp = block != 0 ? xPermuted : x)
            fixed (float* yp = y)
            {
                var work = new GemvWork
                {
                    W = w, X = xp, Y = yp, Isa = isa, Accumulate = accumulate,
                    RowsPerItem = GemvRowsPerItem(w, pool),
                };
                int items = (w.Rows + work.RowsPerItem - 1) / work.RowsPerItem;
                if (pool is null) work.Execute(0, items);
                else pool.Run(ref work, items);
            }
        }
        finally
        {
            if (rented is not null) ArrayPool<float>.Shared.Return(rented);
        }
    }

    static int PermuteBlock(KernelIsa isa) => isa switch
    {
        KernelIsa.Vector512 => 32,
        KernelIsa.Vector256 => 16,
        KernelIsa.Vector128 => 8,
        _ => 0,
    };

    /// <summary>Within each full block of <paramref name="block"/> elements: even-indexed elements, then odd ones.</summary>
    internal static void PermuteEvenOdd(ReadOnlySpan<float> source, Span<float> destination, int block)
    {
        int n = source.Length;
        int full = n - n % block;
        int half = block / 2;
        for (int b = 0; b < full; b += block)
            for (int i = 0; i < half; i++)
            {
                destination[b + i] = source[b + 2 * i];
                destination[b + half + i] = source[b + 2 * i + 1];
            }
        source[full..].CopyTo(destination[full..n]);
    }

    /// <summary>Row blocks small enough to balance threads, large enough that claiming one costs nothing.</summary>
    static int GemvRowsPerItem(WeightMatrix w, KernelThreadPool? pool)
    {
        int threads = pool?.ThreadCount ?? 1;
        if (threads == 1) return w.Rows;
        // About 128 KB of weights per item (claiming one costs well under 1% of reading it), and at least 8 items
        // per thread for balance on a shared machine.
        long rowBytes = Math.Max(1L, w.RowBytes);
        long byBytes = Math.Max(4L, 131072 / rowBytes);
        long byBalance = Math.Max(4L, w.Rows / (8L * threads));
        int rows = (int)Math.Min(byBytes, byBalance);
        return (rows + 3) & ~3;
    }

    struct GemvWork : IParallelWork
    {
        public WeightMatrix W;
        public float* X;
        public float* Y;
        public KernelIsa Isa;
        public bool Accumulate;
        public int RowsPerItem;

        public readonly void Execute(int index) => Execute(index, index + 1);

        public readonly void Execute(int firstItem, int endItem)
        {
            int r0 = firstItem * RowsPerItem;
            int r1 = (int)Math.Min((long)endItem * RowsPerItem, W.Rows);
            GemvRows(W, X, Y, r0, r1, Isa, Accumulate);
        }
    }
}

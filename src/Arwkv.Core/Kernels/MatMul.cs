namespace Arwkv.Kernels;

/// <summary>
/// Matrix products against checkpoint weights, which stay in their storage type (F32/F16/BF16) and are widened
/// in registers. Gemv is the decode path (one token), Gemm the prefill path (T tokens at once).
/// </summary>
public static unsafe class MatMul
{
    /// <summary>y[r] = sum_c W[r, c] * x[c]. x: [W.Cols], y: [W.Rows].</summary>
    public static void Gemv(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, KernelThreadPool? pool = null)
    {
        if (x.Length < w.Cols || y.Length < w.Rows) throw new ArgumentException("x or y is shorter than the matrix");
        GemvNaive(w, x, y);
    }

    /// <summary>Y[t, r] = sum_c W[r, c] * X[t, c]. X: [tokens, W.Cols], Y: [tokens, W.Rows].</summary>
    public static void Gemm(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, int tokens, KernelThreadPool? pool = null)
    {
        if (x.Length < tokens * w.Cols || y.Length < tokens * w.Rows) throw new ArgumentException("x or y is shorter than tokens x matrix");
        for (int t = 0; t < tokens; t++)
            GemvNaive(w, x.Slice(t * w.Cols, w.Cols), y.Slice(t * w.Rows, w.Rows));
    }

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
}

using Arwkv.Kernels;

namespace Arwkv.Layers;

/// <summary>Y = X W^T over <c>rows</c> activation rows: Gemv for one row (decode), Gemm for several (prefill).</summary>
internal static class Projection
{
    public static void Apply(WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, int rows, KernelThreadPool? pool)
    {
        if (rows == 1) MatMul.Gemv(w, x[..w.Cols], y[..w.Rows], pool);
        else MatMul.Gemm(w, x[..(rows * w.Cols)], y[..(rows * w.Rows)], rows, pool);
    }
}

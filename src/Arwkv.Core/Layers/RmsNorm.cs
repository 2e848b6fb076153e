using System.Numerics.Tensors;

namespace Arwkv.Layers;

/// <summary>Qwen2's RMSNorm, computed in float32: y = x / sqrt(mean(x^2) + eps) * weight.</summary>
internal static class RmsNorm
{
    /// <summary>Normalizes one row.</summary>
    public static void Apply(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> y)
    {
        // SumOfSquares accumulates in float32 with several vector lanes, which keeps the rounding error far below
        // the 1e-4 the model is held to even for wide rows.
        float meanSquare = TensorPrimitives.SumOfSquares(x) / x.Length;
        float scale = 1f / MathF.Sqrt(meanSquare + eps);
        TensorPrimitives.Multiply(x, scale, y);
        TensorPrimitives.Multiply(y, weight, y);
    }

    /// <summary>Normalizes <paramref name="rows"/> consecutive rows of width <c>weight.Length</c>.</summary>
    public static void Apply(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> y, int rows)
    {
        int width = weight.Length;
        for (int t = 0; t < rows; t++)
            Apply(x.Slice(t * width, width), weight, eps, y.Slice(t * width, width));
    }
}

using System.Numerics;
using System.Numerics.Tensors;

namespace Arwkv.Training.Layers;

/// <summary>
/// Qwen2 RMSNorm: y = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps). Forward saves rstd per row, which is all
/// backward needs besides x.
/// </summary>
internal static class RmsNorm
{
    // y [N, C], rstd [N], x [N, C], weight [C]
    public static void Forward<TF>(Span<TF> y, Span<TF> rstd, ReadOnlySpan<TF> x, ReadOnlySpan<TF> weight, double eps, int n, int c)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        TF epsT = TF.CreateTruncating(eps), count = TF.CreateTruncating(c);
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<TF> xr = x.Slice(i * c, c);
            TF s = TF.One / TF.Sqrt(TensorPrimitives.Dot(xr, xr) / count + epsT);
            rstd[i] = s;
            Span<TF> yr = y.Slice(i * c, c);
            TensorPrimitives.Multiply(xr, s, yr);
            TensorPrimitives.Multiply(yr, weight, yr);
        }
    }

    // dx [N, C] += ..., dweight [C] += ... (empty when frozen), dy [N, C], x [N, C], weight [C], rstd [N]
    // With g = dy * w: dx = rstd * g - x * rstd^3 * (g . x) / C;  dw = sum_n dy * x * rstd.
    public static void Backward<TF>(Span<TF> dx, Span<TF> dweight, ReadOnlySpan<TF> dy, ReadOnlySpan<TF> x,
        ReadOnlySpan<TF> weight, ReadOnlySpan<TF> rstd, Span<TF> scratch, int n, int c)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        TF count = TF.CreateTruncating(c);
        Span<TF> g = scratch.Slice(0, c);
        for (int i = 0; i < n; i++)
        {
            ReadOnlySpan<TF> xr = x.Slice(i * c, c), dyr = dy.Slice(i * c, c);
            TF s = rstd[i];
            TensorPrimitives.Multiply(dyr, weight, g);
            TF dot = TensorPrimitives.Dot(g, xr);
            if (!dweight.IsEmpty)
            {
                // dweight += dy * x * s, reusing nothing: g is still needed below.
                for (int j = 0; j < c; j++) dweight[j] += dyr[j] * xr[j] * s;
            }
            Span<TF> dxr = dx.Slice(i * c, c);
            TensorPrimitives.MultiplyAdd(g, s, dxr, dxr);
            TensorPrimitives.MultiplyAdd(xr, -s * s * s * dot / count, dxr, dxr);
        }
    }
}

using System.Numerics;

namespace Arwkv.Training.Layers;

/// <summary>The SwiGLU nonlinearity of Qwen2's MLP: h = silu(gate) * up, between gate/up and down projections.</summary>
internal static class SwiGlu
{
    // h [N*F] = silu(gate) * up; gate, up [N*F]
    public static void Forward<TF>(Span<TF> h, ReadOnlySpan<TF> gate, ReadOnlySpan<TF> up)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        for (int i = 0; i < h.Length; i++)
        {
            TF x = gate[i];
            h[i] = x / (TF.One + TF.Exp(-x)) * up[i];
        }
    }

    // dgate += dh * up * silu'(gate), dup += dh * silu(gate); silu'(x) = s (1 + x (1 - s))
    public static void Backward<TF>(Span<TF> dgate, Span<TF> dup, ReadOnlySpan<TF> dh, ReadOnlySpan<TF> gate, ReadOnlySpan<TF> up)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        for (int i = 0; i < dh.Length; i++)
        {
            TF x = gate[i], s = TF.One / (TF.One + TF.Exp(-x));
            dgate[i] += dh[i] * up[i] * s * (TF.One + x * (TF.One - s));
            dup[i] += dh[i] * x * s;
        }
    }
}

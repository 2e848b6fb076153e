using System.Numerics;

namespace Arwkv.Training.Layers;

/// <summary>Token embedding lookup: out[n, :] = W[tokens[n], :].</summary>
internal static class Embedding
{
    // out [N, C], tokens [N], weight [V, C]
    public static void Forward<TF>(Span<TF> output, ReadOnlySpan<int> tokens, ReadOnlySpan<TF> weight, int n, int c)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        int vocab = weight.Length / c;
        for (int i = 0; i < n; i++)
        {
            int token = tokens[i];
            if ((uint)token >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {token} at position {i} is outside the vocabulary [0, {vocab})");
            weight.Slice(token * c, c).CopyTo(output.Slice(i * c, c));
        }
    }

    // dweight [V, C] += scatter of dout [N, C] by tokens [N]
    public static void Backward<TF>(Span<TF> dweight, ReadOnlySpan<TF> dout, ReadOnlySpan<int> tokens, int n, int c)
        where TF : unmanaged, IBinaryFloatingPointIeee754<TF>
    {
        for (int i = 0; i < n; i++)
        {
            Span<TF> row = dweight.Slice(tokens[i] * c, c);
            System.Numerics.Tensors.TensorPrimitives.Add(row, dout.Slice(i * c, c), row);
        }
    }
}

namespace Arwkv.Tests.Teacher;

/// <summary>
/// An independent float64 Qwen2 forward pass written with plain loops from the Hugging Face modeling code's
/// definition (RMSNorm, rotate_half RoPE, GQA causal softmax attention, SwiGLU). It shares nothing with
/// Qwen2Model except the tensors it reads.
/// </summary>
internal sealed class Qwen2Reference
{
    private readonly Qwen2TestShape _s;
    private readonly Dictionary<string, double[]> _w;

    public Qwen2Reference(Qwen2TestShape shape, Dictionary<string, double[]> weights)
    {
        _s = shape;
        _w = weights;
    }

    /// <summary>Logits [T, V] for the whole sequence; optionally per-layer attention inputs and outputs [L, T, C].</summary>
    public double[] Forward(int[] tokens, double[]? tapInputs = null, double[]? tapOutputs = null)
    {
        int T = tokens.Length, C = _s.Hidden, H = _s.Heads, KVH = _s.KvHeads, D = _s.HeadDim, KV = _s.KvSize, F = _s.Intermediate, V = _s.Vocab;
        double[] emb = _w["model.embed_tokens.weight"];
        var x = new double[T * C];
        for (int t = 0; t < T; t++)
            for (int i = 0; i < C; i++) x[t * C + i] = emb[tokens[t] * C + i];

        for (int l = 0; l < _s.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            double[] xn = Norm(x, _w[p + "input_layernorm.weight"], T, C);
            if (tapInputs != null) Array.Copy(xn, 0, tapInputs, l * T * C, T * C);
            double[] q = Linear(xn, _w[p + "self_attn.q_proj.weight"], _w[p + "self_attn.q_proj.bias"], T, C, C);
            double[] k = Linear(xn, _w[p + "self_attn.k_proj.weight"], _w[p + "self_attn.k_proj.bias"], T, C, KV);
            double[] v = Linear(xn, _w[p + "self_attn.v_proj.weight"], _w[p + "self_attn.v_proj.bias"], T, C, KV);
            Rope(q, T, H, D);
            Rope(k, T, KVH, D);
            var att = new double[T * C];
            for (int h = 0; h < H; h++)
            {
                int g = h / (H / KVH);
                for (int t = 0; t < T; t++)
                {
                    var score = new double[t + 1];
                    double max = double.NegativeInfinity;
                    for (int s = 0; s <= t; s++)
                    {
                        double dot = 0;
                        for (int d = 0; d < D; d++) dot += q[t * C + h * D + d] * k[s * KV + g * D + d];
                        score[s] = dot / Math.Sqrt(D);
                        max = Math.Max(max, score[s]);
                    }
                    double sum = 0;
                    for (int s = 0; s <= t; s++) { score[s] = Math.Exp(score[s] - max); sum += score[s]; }
                    for (int d = 0; d < D; d++)
                    {
                        double acc = 0;
                        for (int s = 0; s <= t; s++) acc += score[s] / sum * v[s * KV + g * D + d];
                        att[t * C + h * D + d] = acc;
                    }
                }
            }
            double[] o = Linear(att, _w[p + "self_attn.o_proj.weight"], null, T, C, C);
            if (tapOutputs != null) Array.Copy(o, 0, tapOutputs, l * T * C, T * C);
            for (int i = 0; i < T * C; i++) x[i] += o[i];

            double[] xm = Norm(x, _w[p + "post_attention_layernorm.weight"], T, C);
            double[] gate = Linear(xm, _w[p + "mlp.gate_proj.weight"], null, T, C, F);
            double[] up = Linear(xm, _w[p + "mlp.up_proj.weight"], null, T, C, F);
            for (int i = 0; i < T * F; i++) gate[i] = gate[i] / (1 + Math.Exp(-gate[i])) * up[i];
            double[] down = Linear(gate, _w[p + "mlp.down_proj.weight"], null, T, F, C);
            for (int i = 0; i < T * C; i++) x[i] += down[i];
        }
        double[] final = Norm(x, _w["model.norm.weight"], T, C);
        double[] head = _s.Tied ? emb : _w["lm_head.weight"];
        return Linear(final, head, null, T, C, V);
    }

    private double[] Norm(double[] x, double[] weight, int T, int C)
    {
        var y = new double[T * C];
        for (int t = 0; t < T; t++)
        {
            double ss = 0;
            for (int i = 0; i < C; i++) ss += x[t * C + i] * x[t * C + i];
            double r = 1 / Math.Sqrt(ss / C + _s.Eps);
            for (int i = 0; i < C; i++) y[t * C + i] = weight[i] * x[t * C + i] * r;
        }
        return y;
    }

    private static double[] Linear(double[] x, double[] w, double[]? b, int T, int inSize, int outSize)
    {
        var y = new double[T * outSize];
        for (int t = 0; t < T; t++)
            for (int o = 0; o < outSize; o++)
            {
                double acc = b?[o] ?? 0;
                for (int i = 0; i < inSize; i++) acc += w[o * inSize + i] * x[t * inSize + i];
                y[t * outSize + o] = acc;
            }
        return y;
    }

    /// <summary>x * cos + rotate_half(x) * sin with rotate_half(x) = cat(-x2, x1); position t, frequency theta^(-2i/D).</summary>
    private void Rope(double[] x, int T, int heads, int D)
    {
        int half = D / 2;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < heads; h++)
            {
                int b = (t * heads + h) * D;
                var rotated = new double[D];
                for (int i = 0; i < D; i++)
                {
                    double freq = Math.Pow(_s.RopeTheta, -2.0 * (i % half) / D);
                    double angle = t * freq;
                    double rot = i < half ? -x[b + i + half] : x[b + i - half];
                    rotated[i] = x[b + i] * Math.Cos(angle) + rot * Math.Sin(angle);
                }
                Array.Copy(rotated, 0, x, b, D);
            }
    }

    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<double> expected)
    {
        double num = 0, den = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = actual[i] - expected[i];
            num += d * d;
            den += expected[i] * expected[i];
        }
        return Math.Sqrt(num / den);
    }

    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        double num = 0, den = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = (double)actual[i] - expected[i];
            num += d * d;
            den += (double)expected[i] * expected[i];
        }
        return Math.Sqrt(num / den);
    }
}

namespace Arwkv.Tests.Hip;

/// <summary>
/// Float64 oracle for attention.hip, written as plainly as possible: rotate_half RoPE from cos/sin tables, and causal
/// grouped-query softmax attention on rotated q [B,T,H,D], k and v [B,T,KV,D] with a [B,T] token mask (masked keys
/// are never attended, masked queries output 0, lse -inf, and get no gradient). Checked against finite differences
/// and against Arwkv.Core's training layer in <see cref="AttentionReferenceTests"/>.
/// </summary>
static class AttentionReference
{
    static bool Valid(int[]? mask, int b, int T, int t) => mask == null || mask[b * T + t] != 0;

    /// <summary>Softmax row of query (b, h, t) over keys 0..t (0 where masked), and its log-sum-exp of the scaled scores.</summary>
    static double[] Row(double[] q, double[] k, int[]? mask, int b, int h, int t, int T, int H, int KV, int D, out double lse)
    {
        int g = h / (H / KV);
        double scale = 1 / Math.Sqrt(D);
        var p = new double[t + 1];
        double max = double.NegativeInfinity;
        for (int s = 0; s <= t; s++)
        {
            if (!Valid(mask, b, T, s)) { p[s] = double.NegativeInfinity; continue; }
            double dot = 0;
            for (int d = 0; d < D; d++) dot += q[((b * T + t) * H + h) * D + d] * k[((b * T + s) * KV + g) * D + d];
            p[s] = dot * scale;
            max = Math.Max(max, p[s]);
        }
        double sum = 0;
        for (int s = 0; s <= t; s++) sum += p[s] = double.IsNegativeInfinity(p[s]) ? 0 : Math.Exp(p[s] - max);
        for (int s = 0; s <= t; s++) p[s] /= sum;
        lse = max + Math.Log(sum);
        return p;
    }

    /// <summary>out [B,T,H,D] and lse [B,H,T].</summary>
    public static (double[] Out, double[] Lse) Forward(double[] q, double[] k, double[] v, int[]? mask, int B, int T, int H, int KV, int D)
    {
        var output = new double[B * T * H * D];
        var lse = new double[B * H * T];
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int t = 0; t < T; t++)
                {
                    if (!Valid(mask, b, T, t)) { lse[(b * H + h) * T + t] = double.NegativeInfinity; continue; }
                    double[] p = Row(q, k, mask, b, h, t, T, H, KV, D, out lse[(b * H + h) * T + t]);
                    int g = h / (H / KV);
                    for (int s = 0; s <= t; s++)
                        for (int d = 0; d < D; d++)
                            output[((b * T + t) * H + h) * D + d] += p[s] * v[((b * T + s) * KV + g) * D + d];
                }
        return (output, lse);
    }

    /// <summary>Gradients with respect to the rotated q, k and v, from dout [B,T,H,D].</summary>
    public static (double[] Dq, double[] Dk, double[] Dv) Backward(double[] dout, double[] q, double[] k, double[] v, int[]? mask,
        int B, int T, int H, int KV, int D)
    {
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dv = new double[v.Length];
        double scale = 1 / Math.Sqrt(D);
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int t = 0; t < T; t++)
                {
                    if (!Valid(mask, b, T, t)) continue;
                    double[] p = Row(q, k, mask, b, h, t, T, H, KV, D, out _);
                    int g = h / (H / KV);
                    int qi = ((b * T + t) * H + h) * D;
                    var dp = new double[t + 1];
                    double rowDot = 0;
                    for (int s = 0; s <= t; s++)
                    {
                        int ki = ((b * T + s) * KV + g) * D;
                        for (int d = 0; d < D; d++)
                        {
                            dp[s] += dout[qi + d] * v[ki + d];
                            dv[ki + d] += p[s] * dout[qi + d];
                        }
                        rowDot += p[s] * dp[s];
                    }
                    for (int s = 0; s <= t; s++)
                    {
                        double ds = p[s] * (dp[s] - rowDot) * scale;
                        int ki = ((b * T + s) * KV + g) * D;
                        for (int d = 0; d < D; d++)
                        {
                            dq[qi + d] += ds * k[ki + d];
                            dk[ki + d] += ds * q[qi + d];
                        }
                    }
                }
        return (dq, dk, dv);
    }

    /// <summary>rotate_half RoPE of x [B,T,heads,D]; token t of sequence b at position t + start[b] (out of the table: 0).</summary>
    public static double[] Rope(double[] x, float[] cos, float[] sin, int[]? start, int B, int T, int heads, int D, bool transpose = false)
    {
        int half = D / 2, positions = cos.Length / half;
        var y = new double[x.Length];
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
            {
                int pos = t + (start?[b] ?? 0);
                if (pos < 0 || pos >= positions) continue;
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < half; i++)
                    {
                        int at = ((b * T + t) * heads + h) * D + i;
                        double c = cos[pos * half + i], s = transpose ? -sin[pos * half + i] : sin[pos * half + i];
                        y[at] = x[at] * c - x[at + half] * s;
                        y[at + half] = x[at + half] * c + x[at] * s;
                    }
            }
        return y;
    }
}

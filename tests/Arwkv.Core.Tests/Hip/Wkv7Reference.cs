namespace Arwkv.Tests.Hip;

/// <summary>
/// Float64 oracle for the RWKV-7 recurrence in BlinkDL's general form (the contract of arwkv_wkv7_*), written as
/// plainly as possible: the forward keeps every state, the backward walks the stored states in reverse. Layouts
/// match the kernels: inputs [B,T,H,64], state [B,H,64(value i),64(key j)], mask [B,T] (0 = padded step).
/// </summary>
internal static class Wkv7Reference
{
    internal const int N = 64;

    internal sealed record Inputs(int B, int T, int H, double[] R, double[] W, double[] K, double[] V, double[] A, double[] Bv,
        double[]? StateInit, int[]? Mask);

    internal sealed record Gradients(double[] R, double[] W, double[] K, double[] V, double[] A, double[] B, double[] StateInit);

    /// <summary>Random ARWKV-like inputs: decay in (0.545, 1), a = -kk and b = kk * iclr with kk unit-norm per head.</summary>
    internal static Inputs Random(int b, int t, int h, int seed, bool withState = false, int[]? mask = null)
    {
        var rng = new Random(seed);
        int count = b * t * h * N;
        double[] r = new double[count], w = new double[count], k = new double[count], v = new double[count];
        double[] a = new double[count], bb = new double[count];
        for (int i = 0; i < count; i++)
        {
            r[i] = rng.NextDouble() * 2 - 1;
            k[i] = (rng.NextDouble() * 2 - 1) * 0.5;
            v[i] = rng.NextDouble() * 2 - 1;
            w[i] = Math.Exp(-0.6065306597126334 / (1 + Math.Exp(-(rng.NextDouble() * 8 - 4))));
        }
        for (int head = 0; head < count / N; head++)
        {
            var kk = new double[N];
            double norm = 0;
            for (int j = 0; j < N; j++) { kk[j] = rng.NextDouble() * 2 - 1; norm += kk[j] * kk[j]; }
            norm = Math.Sqrt(norm);
            for (int j = 0; j < N; j++)
            {
                double iclr = rng.NextDouble();
                a[head * N + j] = -kk[j] / norm;
                bb[head * N + j] = kk[j] / norm * iclr;
            }
        }
        double[]? state = null;
        if (withState)
        {
            state = new double[b * h * N * N];
            for (int i = 0; i < state.Length; i++) state[i] = (rng.NextDouble() * 2 - 1) * 0.1;
        }
        return new Inputs(b, t, h, r, w, k, v, a, bb, state, mask);
    }

    static int Index(Inputs x, int b, int t, int h, int c) => ((b * x.T + t) * x.H + h) * N + c;

    static bool Active(Inputs x, int b, int t) => x.Mask == null || x.Mask[b * x.T + t] != 0;

    /// <summary>y [B,T,H,64]; states[b,h][t+1] is the state after step t (states[..][0] the initial one).</summary>
    internal static (double[] Y, double[][][] States, double[] Sa) Forward(Inputs x)
    {
        var y = new double[x.B * x.T * x.H * N];
        var sa = new double[y.Length];
        var states = new double[x.B * x.H][][];
        for (int b = 0; b < x.B; b++)
        for (int h = 0; h < x.H; h++)
        {
            var seq = states[b * x.H + h] = new double[x.T + 1][];
            var s = new double[N * N];
            if (x.StateInit != null) Array.Copy(x.StateInit, (b * x.H + h) * N * N, s, 0, N * N);
            seq[0] = (double[])s.Clone();
            for (int t = 0; t < x.T; t++)
            {
                if (Active(x, b, t))
                {
                    for (int i = 0; i < N; i++)
                    {
                        double sai = 0;
                        for (int j = 0; j < N; j++) sai += s[i * N + j] * x.A[Index(x, b, t, h, j)];
                        sa[Index(x, b, t, h, i)] = sai;
                        double vi = x.V[Index(x, b, t, h, i)], yi = 0;
                        for (int j = 0; j < N; j++)
                        {
                            int e = Index(x, b, t, h, j);
                            s[i * N + j] = s[i * N + j] * x.W[e] + vi * x.K[e] + sai * x.Bv[e];
                            yi += s[i * N + j] * x.R[e];
                        }
                        y[Index(x, b, t, h, i)] = yi;
                    }
                }
                seq[t + 1] = (double[])s.Clone();
            }
        }
        return (y, states, sa);
    }

    /// <summary>Reverse-mode gradients of sum(y * dy) through the stored forward states.</summary>
    internal static Gradients Backward(Inputs x, double[] dy)
    {
        var (_, states, sa) = Forward(x);
        int count = x.B * x.T * x.H * N;
        var g = new Gradients(new double[count], new double[count], new double[count], new double[count], new double[count],
            new double[count], new double[x.B * x.H * N * N]);
        for (int b = 0; b < x.B; b++)
        for (int h = 0; h < x.H; h++)
        {
            var seq = states[b * x.H + h];
            var ds = new double[N * N];
            for (int t = x.T - 1; t >= 0; t--)
            {
                if (!Active(x, b, t)) continue;
                double[] s = seq[t + 1], prev = seq[t];
                for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++)
                {
                    double dyi = dy[Index(x, b, t, h, i)];
                    g.R[Index(x, b, t, h, j)] += s[i * N + j] * dyi;
                    ds[i * N + j] += dyi * x.R[Index(x, b, t, h, j)];
                }
                var dsa = new double[N];
                for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++)
                {
                    int ei = Index(x, b, t, h, i), ej = Index(x, b, t, h, j);
                    double d = ds[i * N + j];
                    g.W[ej] += d * prev[i * N + j];
                    g.K[ej] += d * x.V[ei];
                    g.V[ei] += d * x.K[ej];
                    g.B[ej] += d * sa[ei];
                    dsa[i] += d * x.Bv[ej];
                }
                for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++)
                {
                    int ej = Index(x, b, t, h, j);
                    g.A[ej] += dsa[i] * prev[i * N + j];
                    ds[i * N + j] = ds[i * N + j] * x.W[ej] + dsa[i] * x.A[ej];
                }
            }
            Array.Copy(ds, 0, g.StateInit, (b * x.H + h) * N * N, N * N);
        }
        return g;
    }

    internal static float[] ToFloat(double[] values) => Array.ConvertAll(values, v => (float)v);

    /// <summary>The inputs rounded through bf16, as a bf16 kernel sees them.</summary>
    internal static Inputs RoundedToBFloat16(Inputs x)
    {
        static double[] Round(double[] values) =>
            Array.ConvertAll(values, v => (double)BitConverter.Int32BitsToSingle(Arwkv.Kernels.Convert.Float32ToBFloat16((float)v) << 16));
        return x with { R = Round(x.R), W = Round(x.W), K = Round(x.K), V = Round(x.V), A = Round(x.A), Bv = Round(x.Bv) };
    }

    internal static ushort[] ToBFloat16(double[] values) =>
        Array.ConvertAll(values, v => Arwkv.Kernels.Convert.Float32ToBFloat16((float)v));
}

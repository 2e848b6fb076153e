using Arwkv.Training.Layers;

namespace Arwkv.Tests.Training;

public class Wkv7Tests
{
    private const int B = 2, T = 37, H = 2, N = 4, C = H * N;

    private sealed class Case
    {
        public double[] R = [], W = [], K = [], V = [], AA = [], BB = [], S0 = [], Weights = [];
        public byte[] Mask = [];
    }

    private static Case Make(bool withMask)
    {
        var rng = new Random(7);
        int n = B * T * C;
        var c = new Case
        {
            R = GradCheck.Random(rng, n, -1, 1), W = GradCheck.Random(rng, n, 0.55, 1), K = GradCheck.Random(rng, n, -1, 1),
            V = GradCheck.Random(rng, n, -1, 1), AA = GradCheck.Random(rng, n, -0.5, 0.5), BB = GradCheck.Random(rng, n, -0.5, 0.5),
            S0 = GradCheck.Random(rng, B * H * N * N, -1, 1), Weights = GradCheck.Random(rng, n, -1, 1),
            Mask = Enumerable.Repeat((byte)1, B * T).ToArray(),
        };
        if (withMask)
        {
            foreach (int t in new[] { 0, 5, 16, 17, 30 }) c.Mask[t] = 0;          // row 0: padding scattered, across a checkpoint
            for (int t = 31; t < T; t++) c.Mask[T + t] = 0;                        // row 1: right padding
        }
        return c;
    }

    private static double Loss(Case c, bool withMask, double[]? y = null)
    {
        y ??= new double[B * T * C];
        var cp = new double[Wkv7.CheckpointLength(B, T, H, N)];
        Wkv7.Forward<double>(y, cp, Span<double>.Empty, c.R, c.W, c.K, c.V, c.AA, c.BB, withMask ? c.Mask : [], c.S0, B, T, H, N);
        return GradCheck.Dot(y, c.Weights);
    }

    [TestCase(false)]
    [TestCase(true)]
    public void BackwardMatchesFiniteDifferences(bool withMask)
    {
        Case c = Make(withMask);
        int n = B * T * C;
        var y = new double[n];
        var cp = new double[Wkv7.CheckpointLength(B, T, H, N)];
        Wkv7.Forward<double>(y, cp, Span<double>.Empty, c.R, c.W, c.K, c.V, c.AA, c.BB, withMask ? c.Mask : [], c.S0, B, T, H, N);
        double[] dr = new double[n], dw = new double[n], dk = new double[n], dv = new double[n], da = new double[n], db = new double[n];
        var ds0 = new double[c.S0.Length];
        var scratch = new double[Wkv7.BackwardScratchLength(B, H, N)];
        Wkv7.Backward<double>(dr, dw, dk, dv, da, db, ds0, c.Weights, cp, c.R, c.W, c.K, c.V, c.AA, c.BB, withMask ? c.Mask : [], scratch, B, T, H, N);

        double worst = GradCheck.Check(() => Loss(c, withMask),
            [("r", c.R, dr), ("w", c.W, dw), ("k", c.K, dk), ("v", c.V, dv), ("aa", c.AA, da), ("bb", c.BB, db), ("s0", c.S0, ds0)],
            maxPerTensor: 80);
        TestContext.Out.WriteLine($"Wkv7 worst relative error {worst:E2}");

        if (withMask)
        {
            for (int row = 0; row < B * T; row++)
                if (c.Mask[row] == 0)
                    for (int j = 0; j < C; j++)
                    {
                        Assert.That(y[row * C + j], Is.Zero);
                        Assert.That(dr[row * C + j], Is.Zero);
                        Assert.That(dw[row * C + j], Is.Zero);
                        Assert.That(dk[row * C + j], Is.Zero);
                    }
        }
    }

    [Test]
    public void ForwardMatchesPlainRecurrenceAndFinalState()
    {
        Case c = Make(withMask: false);
        var y = new double[B * T * C];
        var final = new double[B * H * N * N];
        Wkv7.Forward<double>(y, new double[Wkv7.CheckpointLength(B, T, H, N)], final, c.R, c.W, c.K, c.V, c.AA, c.BB, [], c.S0, B, T, H, N);
        // The matrix form S_t = S_{t-1} (diag(w) + aa bb^T) + v k^T, y = S_t r, written independently.
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
            {
                var s = new double[N, N];
                for (int i = 0; i < N; i++) for (int j = 0; j < N; j++) s[i, j] = c.S0[((b * H + h) * N + i) * N + j];
                for (int t = 0; t < T; t++)
                {
                    int at = (b * T + t) * C + h * N;
                    var m = new double[N, N];
                    for (int p = 0; p < N; p++)
                        for (int j = 0; j < N; j++) m[p, j] = (p == j ? c.W[at + j] : 0) + c.AA[at + p] * c.BB[at + j];
                    var next = new double[N, N];
                    for (int i = 0; i < N; i++)
                        for (int j = 0; j < N; j++)
                        {
                            double sum = c.V[at + i] * c.K[at + j];
                            for (int p = 0; p < N; p++) sum += s[i, p] * m[p, j];
                            next[i, j] = sum;
                        }
                    s = next;
                    for (int i = 0; i < N; i++)
                    {
                        double yi = 0;
                        for (int j = 0; j < N; j++) yi += s[i, j] * c.R[at + j];
                        Assert.That(y[at + i], Is.EqualTo(yi).Within(1e-12));
                    }
                }
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++) Assert.That(final[((b * H + h) * N + i) * N + j], Is.EqualTo(s[i, j]).Within(1e-12));
            }
    }
}

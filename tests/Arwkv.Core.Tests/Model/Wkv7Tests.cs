using Arwkv.Kernels;
using Arwkv.Layers;

namespace Arwkv.Tests.Model;

/// <summary>The WKV7 step (every vector width and scalar, transposed state) against the formula in float64.</summary>
internal class Wkv7Tests
{
    // 64: every released head; 24 and 40: a 128- or 256-bit block plus a scalar tail of columns; 7: scalar only.
    [Test]
    public void Steps_MatchTheFormulaInDouble([Values(64, 24, 40, 7)] int n,
        [Values(KernelIsa.Scalar, KernelIsa.Vector128, KernelIsa.Vector256, KernelIsa.Vector512)] KernelIsa isa)
    {
        Assume.That(isa <= MatMul.DetectedIsa, $"this CPU has no {isa} path");
        MatMul.ForceIsa = isa;
        try { CheckSteps(n, MatMul.Isa); }
        finally { MatMul.ForceIsa = null; }
    }

    private static void CheckSteps(int n, KernelIsa isa)
    {
        var rng = new Random(n);
        float U(double lo, double hi) => (float)(lo + (hi - lo) * rng.NextDouble());
        var state = new float[n * n];
        var S = new double[n, n];
        var y = new float[n];
        double maxErr = 0, maxY = 0;
        for (int step = 0; step < 20; step++)
        {
            float[] r = Vec(n, () => U(-1, 1)), w = Vec(n, () => U(0.55, 1)), k = Vec(n, () => U(-1, 1)), v = Vec(n, () => U(-1, 1));
            float[] a = Vec(n, () => U(0, 1)), rk = Vec(n, () => U(-0.5, 0.5)), kk = Vec(n, () => U(-1, 1));
            double norm = Math.Sqrt(kk.Sum(x => (double)x * x));
            for (int j = 0; j < n; j++) kk[j] = (float)(kk[j] / norm);

            Wkv7.Step(state, r, w, k, v, kk, a, rk, y, isa);

            double bonus = 0;
            for (int j = 0; j < n; j++) bonus += (double)r[j] * k[j] * rk[j];
            for (int i = 0; i < n; i++)
            {
                double sa = 0;
                for (int j = 0; j < n; j++) sa += S[i, j] * -kk[j];
                double yi = 0;
                for (int j = 0; j < n; j++)
                {
                    S[i, j] = S[i, j] * w[j] + (double)v[i] * k[j] + sa * kk[j] * a[j];
                    yi += S[i, j] * r[j];
                }
                yi += bonus * v[i];
                maxErr = Math.Max(maxErr, Math.Abs(y[i] - yi));
                maxY = Math.Max(maxY, Math.Abs(yi));
                for (int j = 0; j < n; j++) maxErr = Math.Max(maxErr, Math.Abs(state[j * n + i] - S[i, j]));
            }
        }
        Assert.That(maxY, Is.GreaterThan(0.5), "the test drives the state to non-trivial values");
        Assert.That(maxErr, Is.LessThan(1e-4 * maxY));
    }

    private static float[] Vec(int n, Func<float> f)
    {
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = f();
        return x;
    }

    /// <summary>The prefill's head order is a permutation, and items claimed together get heads far apart.</summary>
    [Test]
    public void HeadOrderIsAPermutationThatSpreadsNeighbouringItems()
    {
        foreach (int heads in new[] { 1, 5, 14, 56 })
            foreach (int threads in new[] { 1, 2, 3, 8, 16 })
            {
                int[] order = RwkvTimeMix.HeadOrder(heads, threads);
                Assert.That(order.OrderBy(h => h), Is.EqualTo(Enumerable.Range(0, heads)), $"{heads} heads, {threads} threads");
            }
        Assert.That(RwkvTimeMix.HeadOrder(14, 2), Is.EqualTo(new[] { 0, 7, 1, 8, 2, 9, 3, 10, 4, 11, 5, 12, 6, 13 }));
        int[] wide = RwkvTimeMix.HeadOrder(56, 8);
        for (int i = 0; i + 8 <= wide.Length; i += 8)
        {
            var together = wide.Skip(i).Take(8).OrderBy(h => h).ToArray();
            for (int j = 1; j < together.Length; j++) Assert.That(together[j] - together[j - 1], Is.GreaterThanOrEqualTo(7), $"items {i}..{i + 7}");
        }
    }
}

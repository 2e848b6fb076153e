using Arwkv.Layers;

namespace Arwkv.Tests.Model;

/// <summary>The WKV7 step (vector and scalar paths, transposed state) against the formula in float64.</summary>
public class Wkv7Tests
{
    [TestCase(64, true)]
    [TestCase(64, false)]
    [TestCase(24, true)]
    public void Steps_MatchTheFormulaInDouble(int n, bool vectorized)
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

            Wkv7.Step(state, r, w, k, v, kk, a, rk, y, vectorized);

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
}

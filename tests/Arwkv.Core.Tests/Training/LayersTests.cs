using Arwkv.Training.Layers;

namespace Arwkv.Tests.Training;

public class LayersTests
{
    [Test]
    public void LinearBackwardMatchesFiniteDifferences()
    {
        const int n = 5, inF = 6, outF = 4;
        var rng = new Random(1);
        double[] x = GradCheck.Random(rng, n * inF, -1, 1), w = GradCheck.Random(rng, outF * inF, -1, 1), g = GradCheck.Random(rng, n * outF, -1, 1);
        var y = new double[n * outF];
        double Loss() { Linear.Forward<double>(y, x, w, n, inF, outF); return GradCheck.Dot(y, g); }
        double[] dx = new double[x.Length], dw = new double[w.Length];
        Linear.Backward<double>(dx, dw, g, x, w, n, inF, outF);
        GradCheck.Check(Loss, [("x", x, dx), ("w", w, dw)]);
        // Forward against the textbook definition y[i, o] = sum_j x[i, j] W[o, j].
        Loss();
        for (int i = 0; i < n; i++)
            for (int o = 0; o < outF; o++)
                Assert.That(y[i * outF + o], Is.EqualTo(Enumerable.Range(0, inF).Sum(j => x[i * inF + j] * w[o * inF + j])).Within(1e-12));
    }

    [TestCase(1, 1, 1)]
    [TestCase(7, 19, 5)]
    [TestCase(13, 37, 33)]
    [TestCase(64, 70, 9)]
    public void FastLinearMatchesNaiveTwin(int n, int inF, int outF)
    {
        var rng = new Random(n * 1000 + inF);
        float[] x = GradCheck.Random(rng, n * inF, -1, 1).Select(v => (float)v).ToArray();
        float[] w = GradCheck.Random(rng, outF * inF, -1, 1).Select(v => (float)v).ToArray();
        float[] dy = GradCheck.Random(rng, n * outF, -1, 1).Select(v => (float)v).ToArray();
        float[] start = GradCheck.Random(rng, Math.Max(n * inF, outF * inF), -1, 1).Select(v => (float)v).ToArray();
        void Same(float[] fast, float[] naive, string what) =>
            Assert.That(fast, Is.EqualTo(naive).Within(1e-4f), what);

        float[] y1 = new float[n * outF], y2 = new float[n * outF];
        Linear.Forward<float>(y1, x, w, n, inF, outF);
        Linear.ForwardNaive<float>(y2, x, w, n, inF, outF);
        Same(y1, y2, "forward");
        float[] dx1 = start[..(n * inF)], dx2 = start[..(n * inF)], dw1 = start[..(outF * inF)], dw2 = start[..(outF * inF)];
        Linear.Backward<float>(dx1, dw1, dy, x, w, n, inF, outF);
        Linear.BackwardNaive<float>(dx2, dw2, dy, x, w, n, inF, outF);
        Same(dx1, dx2, "dx"); Same(dw1, dw2, "dw");

        // The same shapes read as W [in, out].
        Linear.ForwardInOut<float>(y1, x, w, n, inF, outF);
        Linear.ForwardInOutNaive<float>(y2, x, w, n, inF, outF);
        Same(y1, y2, "forward in-out");
        dx1 = start[..(n * inF)]; dx2 = start[..(n * inF)]; dw1 = start[..(outF * inF)]; dw2 = start[..(outF * inF)];
        Linear.BackwardInOut<float>(dx1, dw1, dy, x, w, n, inF, outF);
        Linear.BackwardInOutNaive<float>(dx2, dw2, dy, x, w, n, inF, outF);
        Same(dx1, dx2, "dx in-out"); Same(dw1, dw2, "dw in-out");
    }

    [Test]
    public void LinearInOutBackwardMatchesFiniteDifferences()
    {
        const int n = 5, inF = 6, outF = 3;
        var rng = new Random(2);
        double[] x = GradCheck.Random(rng, n * inF, -1, 1), w = GradCheck.Random(rng, inF * outF, -1, 1), g = GradCheck.Random(rng, n * outF, -1, 1);
        var y = new double[n * outF];
        double Loss() { Linear.ForwardInOut<double>(y, x, w, n, inF, outF); return GradCheck.Dot(y, g); }
        double[] dx = new double[x.Length], dw = new double[w.Length];
        Linear.BackwardInOut<double>(dx, dw, g, x, w, n, inF, outF);
        GradCheck.Check(Loss, [("x", x, dx), ("w", w, dw)]);
        Loss();
        for (int i = 0; i < n; i++)
            for (int o = 0; o < outF; o++)
                Assert.That(y[i * outF + o], Is.EqualTo(Enumerable.Range(0, inF).Sum(j => x[i * inF + j] * w[j * outF + o])).Within(1e-12));
    }

    [Test]
    public void RmsNormBackwardMatchesFiniteDifferences()
    {
        const int n = 4, c = 7;
        var rng = new Random(3);
        double[] x = GradCheck.Random(rng, n * c, -2, 2), w = GradCheck.Random(rng, c, 0.5, 1.5), g = GradCheck.Random(rng, n * c, -1, 1);
        double[] y = new double[n * c], rstd = new double[n];
        double Loss() { RmsNorm.Forward<double>(y, rstd, x, w, 1e-6, n, c); return GradCheck.Dot(y, g); }
        Loss();
        double[] dx = new double[x.Length], dw = new double[c];
        RmsNorm.Backward<double>(dx, dw, g, x, w, rstd, new double[c], n, c);
        GradCheck.Check(Loss, [("x", x, dx), ("w", w, dw)]);
        double ms = Enumerable.Range(0, c).Average(j => x[j] * x[j]);
        Assert.That(y[2], Is.EqualTo(x[2] / Math.Sqrt(ms + 1e-6) * w[2]).Within(1e-12));
    }

    [Test]
    public void SwiGluBackwardMatchesFiniteDifferences()
    {
        var rng = new Random(4);
        double[] gate = GradCheck.Random(rng, 12, -4, 4), up = GradCheck.Random(rng, 12, -2, 2), g = GradCheck.Random(rng, 12, -1, 1);
        var h = new double[12];
        double Loss() { SwiGlu.Forward<double>(h, gate, up); return GradCheck.Dot(h, g); }
        double[] dg = new double[12], du = new double[12];
        SwiGlu.Backward<double>(dg, du, g, gate, up);
        GradCheck.Check(Loss, [("gate", gate, dg), ("up", up, du)]);
        Loss();
        Assert.That(h[0], Is.EqualTo(gate[0] / (1 + Math.Exp(-gate[0])) * up[0]).Within(1e-14));
    }

    [Test]
    public void EmbeddingBackwardMatchesFiniteDifferences()
    {
        const int vocab = 5, c = 3;
        var rng = new Random(5);
        double[] w = GradCheck.Random(rng, vocab * c, -1, 1);
        int[] tokens = [4, 1, 4, 0];
        double[] g = GradCheck.Random(rng, tokens.Length * c, -1, 1), y = new double[tokens.Length * c];
        double Loss() { Embedding.Forward<double>(y, tokens, w, tokens.Length, c); return GradCheck.Dot(y, g); }
        var dw = new double[w.Length];
        Embedding.Backward<double>(dw, g, tokens, tokens.Length, c);
        GradCheck.Check(Loss, [("w", w, dw)]);
        Assert.Throws<ArgumentOutOfRangeException>(() => Embedding.Forward<double>(y, [5], w, 1, c));
    }
}

using System.Diagnostics;
using Arwkv.Layers;
using Arwkv.Training.Layers;

namespace Arwkv.Tests.Training;

public class AttentionTests
{
    private sealed record Sizes(int B, int T, int H, int KV, int D)
    {
        public int Q => B * T * H * D;
        public int K => B * T * KV * D;
        public int P => B * H * T * T;
        public int Half => T * D / 2;
    }

    private static double[] Random(int n, Random rng, double scale = 1)
    {
        var x = new double[n];
        for (int i = 0; i < n; i++) x[i] = scale * (2 * rng.NextDouble() - 1);
        return x;
    }

    // loss = sum(output * weights): its gradient w.r.t. output is weights.
    private static double Loss(Sizes s, double[] q, double[] k, double[] v, double[] cos, double[] sin, double[] weights)
    {
        var output = new double[s.Q];
        Attention.Forward<double>(output, new double[s.Q], new double[s.K], new double[s.P], q, k, v, cos, sin, s.B, s.T, s.H, s.KV, s.D);
        double loss = 0;
        for (int i = 0; i < output.Length; i++) loss += output[i] * weights[i];
        return loss;
    }

    [TestCase(2, 6, 4, 2, 8)]
    [TestCase(1, 5, 2, 2, 4)]
    [TestCase(1, 4, 3, 1, 6)]
    public void BackwardMatchesCentralDifferencesInFloat64(int b, int t, int h, int kv, int d)
    {
        var s = new Sizes(b, t, h, kv, d);
        var rng = new Random(42 + t);
        // Scale 2 makes the softmax peaked, so the probabilities' gradient is far from the uniform case.
        double[] q = Random(s.Q, rng, 2), k = Random(s.K, rng, 2), v = Random(s.K, rng), weights = Random(s.Q, rng);
        var cos = new double[s.Half];
        var sin = new double[s.Half];
        // A large theta step makes the rotation angles differ widely between positions.
        Attention.RotaryTables<double>(cos, sin, t, d, 100.0);

        var output = new double[s.Q];
        var qRot = new double[s.Q];
        var kRot = new double[s.K];
        var probs = new double[s.P];
        Attention.Forward<double>(output, qRot, kRot, probs, q, k, v, cos, sin, b, t, h, kv, d);
        var dq = new double[s.Q];
        var dk = new double[s.K];
        var dv = new double[s.K];
        Attention.Backward<double>(dq, dk, dv, weights, qRot, kRot, v, probs, cos, sin, b, t, h, kv, d);

        foreach (var (name, x, grad) in new[] { ("q", q, dq), ("k", k, dk), ("v", v, dv) })
        {
            var numeric = new double[x.Length];
            const double eps = 1e-5;
            for (int i = 0; i < x.Length; i++)
            {
                double saved = x[i];
                x[i] = saved + eps;
                double plus = Loss(s, q, k, v, cos, sin, weights);
                x[i] = saved - eps;
                double minus = Loss(s, q, k, v, cos, sin, weights);
                x[i] = saved;
                numeric[i] = (plus - minus) / (2 * eps);
            }
            double num = 0, den = 0;
            for (int i = 0; i < x.Length; i++)
            {
                num += (numeric[i] - grad[i]) * (numeric[i] - grad[i]);
                den += numeric[i] * numeric[i];
            }
            double relative = Math.Sqrt(num / den);
            TestContext.Out.WriteLine($"d{name}: relative L2 error {relative:E2}, |grad| {Math.Sqrt(den):F3}");
            Assert.That(den, Is.GreaterThan(1e-6), $"d{name} is trivially zero");
            Assert.That(relative, Is.LessThan(1e-6), $"d{name}");
        }
    }

    [Test]
    public void BackwardAccumulates()
    {
        var s = new Sizes(1, 5, 2, 1, 4);
        var rng = new Random(3);
        double[] q = Random(s.Q, rng), k = Random(s.K, rng), v = Random(s.K, rng), dOut = Random(s.Q, rng);
        var cos = new double[s.Half];
        var sin = new double[s.Half];
        Attention.RotaryTables<double>(cos, sin, s.T, s.D, 10000.0);
        var qRot = new double[s.Q];
        var kRot = new double[s.K];
        var probs = new double[s.P];
        Attention.Forward<double>(new double[s.Q], qRot, kRot, probs, q, k, v, cos, sin, s.B, s.T, s.H, s.KV, s.D);
        var once = (new double[s.Q], new double[s.K], new double[s.K]);
        Attention.Backward<double>(once.Item1, once.Item2, once.Item3, dOut, qRot, kRot, v, probs, cos, sin, s.B, s.T, s.H, s.KV, s.D);
        var twice = (new double[s.Q], new double[s.K], new double[s.K]);
        for (int r = 0; r < 2; r++)
            Attention.Backward<double>(twice.Item1, twice.Item2, twice.Item3, dOut, qRot, kRot, v, probs, cos, sin, s.B, s.T, s.H, s.KV, s.D);
        Assert.That(twice.Item1, Is.EqualTo(once.Item1.Select(x => 2 * x)).Within(1e-12));
        Assert.That(twice.Item2, Is.EqualTo(once.Item2.Select(x => 2 * x)).Within(1e-12));
        Assert.That(twice.Item3, Is.EqualTo(once.Item3.Select(x => 2 * x)).Within(1e-12));
    }

    [Test]
    public void ProbabilitiesAreCausalAndNormalized()
    {
        var s = new Sizes(2, 7, 2, 2, 4);
        var rng = new Random(5);
        var q = Random(s.Q, rng).Select(x => (float)x).ToArray();
        var k = Random(s.K, rng).Select(x => (float)x).ToArray();
        var v = Random(s.K, rng).Select(x => (float)x).ToArray();
        var cos = new float[s.Half];
        var sin = new float[s.Half];
        Attention.RotaryTables<float>(cos, sin, s.T, s.D, 10000.0);
        var probs = new float[s.P];
        Attention.Forward<float>(new float[s.Q], new float[s.Q], new float[s.K], probs, q, k, v, cos, sin, s.B, s.T, s.H, s.KV, s.D);
        for (int row = 0; row < s.B * s.H * s.T; row++)
        {
            int t = row % s.T;
            Span<float> p = probs.AsSpan(row * s.T, s.T);
            Assert.That(p[..(t + 1)].ToArray().Sum(), Is.EqualTo(1f).Within(1e-5));
            Assert.That(p[(t + 1)..].ToArray(), Is.All.EqualTo(0f));
        }
    }

    [Test]
    public void ForwardMatchesInferenceAttentionPrefillAndDecode()
    {
        const int T = 11, H = 4, KV = 2, D = 16;
        var rng = new Random(17);
        float[] q = Random(T * H * D, rng, 2).Select(x => (float)x).ToArray();
        float[] k = Random(T * KV * D, rng, 2).Select(x => (float)x).ToArray();
        float[] v = Random(T * KV * D, rng).Select(x => (float)x).ToArray();

        var cos = new float[T * D / 2];
        var sin = new float[T * D / 2];
        Attention.RotaryTables<float>(cos, sin, T, D, 10000.0);
        var training = new float[T * H * D];
        Attention.Forward<float>(training, new float[T * H * D], new float[T * KV * D], new float[H * T * T], q, k, v, cos, sin, 1, T, H, KV, D);

        float[] inv = Qwen2Attention.InverseFrequencies(D, 10000.0);
        var icos = new float[T * D / 2];
        var isin = new float[T * D / 2];
        Qwen2Attention.RotaryTables(inv, 0, T, icos, isin);
        Assert.That(icos, Is.EqualTo(cos), "both paths build identical RoPE tables");
        float[] qr = (float[])q.Clone(), kr = (float[])k.Clone();
        Qwen2Attention.ApplyRotary(qr, T, H, D, icos, isin);
        Qwen2Attention.ApplyRotary(kr, T, KV, D, icos, isin);
        var prefill = new float[T * H * D];
        Qwen2Attention.Forward(prefill, qr, kr, v, new float[H * T], T, 0, H, KV, D, null);
        Assert.That(MaxDifference(prefill, training), Is.LessThan(1e-5));

        // Decode: query t alone at start = t sees cache rows 0..t.
        var decode = new float[T * H * D];
        var one = new float[H * D];
        for (int t = 0; t < T; t++)
        {
            Qwen2Attention.Forward(one, qr[(t * H * D)..((t + 1) * H * D)], kr, v, new float[H * T], 1, t, H, KV, D, null);
            one.CopyTo(decode, t * H * D);
        }
        Assert.That(MaxDifference(decode, training), Is.LessThan(1e-5));
    }

    [Test]
    public void BadSizesThrow()
    {
        var s = new Sizes(1, 4, 3, 2, 4);
        Assert.Throws<ArgumentException>(() => Attention.Forward<float>(new float[s.Q], new float[s.Q], new float[s.K], new float[s.P],
            new float[s.Q], new float[s.K], new float[s.K], new float[s.Half], new float[s.Half], 1, 4, 3, 2, 4));
        s = new Sizes(1, 4, 2, 2, 4);
        Assert.Throws<ArgumentException>(() => Attention.Forward<float>(new float[s.Q], new float[s.Q], new float[s.K], new float[s.P - 1],
            new float[s.Q], new float[s.K], new float[s.K], new float[s.Half], new float[s.Half], 1, 4, 2, 2, 4));
        Assert.Throws<ArgumentException>(() => Attention.RotaryTables<float>(new float[8], new float[8], 4, 3, 10000.0));
    }

    [Test]
    public void FloatPathIsFastEnoughForTheDemoTeacher()
    {
        // The demo teacher's shape: batch 4 x 128 tokens, C = 128 as 4 heads of 32.
        var s = new Sizes(4, 128, 4, 4, 32);
        var rng = new Random(1);
        float[] q = Random(s.Q, rng).Select(x => (float)x).ToArray(), k = Random(s.K, rng).Select(x => (float)x).ToArray();
        float[] v = Random(s.K, rng).Select(x => (float)x).ToArray(), dOut = Random(s.Q, rng).Select(x => (float)x).ToArray();
        var cos = new float[s.Half];
        var sin = new float[s.Half];
        Attention.RotaryTables<float>(cos, sin, s.T, s.D, 10000.0);
        float[] output = new float[s.Q], qRot = new float[s.Q], kRot = new float[s.K], probs = new float[s.P];
        float[] dq = new float[s.Q], dk = new float[s.K], dv = new float[s.K];
        Attention.Forward<float>(output, qRot, kRot, probs, q, k, v, cos, sin, s.B, s.T, s.H, s.KV, s.D);
        var watch = Stopwatch.StartNew();
        const int repeats = 5;
        for (int r = 0; r < repeats; r++)
        {
            Attention.Forward<float>(output, qRot, kRot, probs, q, k, v, cos, sin, s.B, s.T, s.H, s.KV, s.D);
            Attention.Backward<float>(dq, dk, dv, dOut, qRot, kRot, v, probs, cos, sin, s.B, s.T, s.H, s.KV, s.D);
        }
        double ms = watch.Elapsed.TotalMilliseconds / repeats;
        TestContext.Out.WriteLine($"forward + backward, B=4 T=128 H=4 D=32: {ms:F2} ms");
        Assert.That(ms, Is.LessThan(2000), "a smoke check against pathological slowness (the test machine may be shared)");
    }

    private static double MaxDifference(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();
}

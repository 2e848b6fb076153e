using Arwkv.Generation;

namespace Arwkv.Tests.Generation;

public class SamplerTests
{
    private static float[] RandomLogits(int n, int seed, float scale = 3f)
    {
        var r = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(r.NextDouble() * 2 - 1) * scale;
        return x;
    }

    /// <summary>Independent float64 reference: sort everything, top-k, softmax(l / T), nucleus, renormalize.</summary>
    private static Dictionary<int, double> Reference(float[] logits, SamplingOptions o)
    {
        int[] order = Enumerable.Range(0, logits.Length).OrderByDescending(i => logits[i]).ThenBy(i => i).ToArray();
        if (o.TopK > 0) order = order.Take(o.TopK).ToArray();
        double max = logits[order[0]];
        double[] w = order.Select(i => Math.Exp((logits[i] - max) / o.Temperature)).ToArray();
        double total = w.Sum();
        int keep = order.Length;
        if (o.TopP < 1)
        {
            double cum = 0;
            for (int i = 0; i < order.Length; i++)
            {
                cum += w[i] / total;
                if (cum >= o.TopP - 1e-12) { keep = i + 1; break; }
            }
        }
        double kept = w.Take(keep).Sum();
        return Enumerable.Range(0, keep).ToDictionary(i => order[i], i => w[i] / kept);
    }

    private static Dictionary<int, double> Distribution(float[] logits, SamplingOptions o, int[]? previous = null)
    {
        var sampler = new Sampler(logits.Length, o);
        var ids = new int[logits.Length];
        var p = new float[logits.Length];
        int n = sampler.GetDistribution(logits, previous ?? [], ids, p);
        return Enumerable.Range(0, n).ToDictionary(i => ids[i], i => (double)p[i]);
    }

    private static void AssertSameDistribution(Dictionary<int, double> expected, Dictionary<int, double> actual, double tolerance = 1e-5)
    {
        Assert.That(actual.Keys.Order(), Is.EqualTo(expected.Keys.Order()));
        foreach ((int id, double p) in expected) Assert.That(actual[id], Is.EqualTo(p).Within(tolerance), $"token {id}");
    }

    [Test]
    public void GreedyIsArgmax()
    {
        for (int seed = 0; seed < 20; seed++)
        {
            float[] logits = RandomLogits(1000, seed);
            int best = 0;
            for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
            Assert.That(new Sampler(logits.Length, SamplingOptions.Greedy).Sample(logits), Is.EqualTo(best));
        }
    }

    [Test]
    public void TopKOneEqualsGreedy()
    {
        for (int seed = 0; seed < 20; seed++)
        {
            float[] logits = RandomLogits(500, seed);
            var greedy = new Sampler(logits.Length, SamplingOptions.Greedy);
            var topOne = new Sampler(logits.Length, new SamplingOptions { Temperature = 1.7f, TopK = 1, Seed = seed });
            for (int draw = 0; draw < 5; draw++) Assert.That(topOne.Sample(logits), Is.EqualTo(greedy.Sample(logits)));
        }
    }

    [Test]
    public void SameSeedSameTokensDifferentSeedDifferentTokens()
    {
        float[] logits = RandomLogits(300, 1, scale: 1f);
        var options = new SamplingOptions { Temperature = 1f, TopP = 0.95f, Seed = 42 };
        int[] Draw(SamplingOptions o)
        {
            var s = new Sampler(logits.Length, o);
            return Enumerable.Range(0, 200).Select(_ => s.Sample(logits)).ToArray();
        }
        Assert.That(Draw(options), Is.EqualTo(Draw(options)));
        Assert.That(Draw(options with { Seed = 43 }), Is.Not.EqualTo(Draw(options)));
    }

    [Test]
    public void TemperatureScalesLogitsBeforeSoftmax()
    {
        float[] logits = [1f, 2f, 0.5f, -1f, 3f];
        foreach (float t in new[] { 0.25f, 0.5f, 1f, 2f, 5f })
        {
            var expected = new Dictionary<int, double>();
            double z = logits.Sum(l => Math.Exp(l / (double)t));
            for (int i = 0; i < logits.Length; i++) expected[i] = Math.Exp(logits[i] / (double)t) / z;
            AssertSameDistribution(expected, Distribution(logits, new SamplingOptions { Temperature = t }));
        }
    }

    [Test]
    public void SampleFrequenciesMatchTheDistribution()
    {
        float[] logits = [0f, 1f, 2f, -0.5f];
        var options = new SamplingOptions { Temperature = 2f, Seed = 7 };
        double z = logits.Sum(l => Math.Exp(l / 2.0));
        var sampler = new Sampler(logits.Length, options);
        var counts = new int[logits.Length];
        const int draws = 40000;
        for (int i = 0; i < draws; i++) counts[sampler.Sample(logits)]++;
        for (int i = 0; i < logits.Length; i++)
        {
            double p = Math.Exp(logits[i] / 2.0) / z;
            double sigma = Math.Sqrt(p * (1 - p) / draws);
            Assert.That(counts[i] / (double)draws, Is.EqualTo(p).Within(5 * sigma), $"token {i}");
        }
    }

    [Test]
    public void TopPKeepsOnlyTheNucleus()
    {
        // Probabilities 0.5, 0.3, 0.15, 0.05 (temperature 1).
        float[] logits = [MathF.Log(0.3f), MathF.Log(0.05f), MathF.Log(0.5f), MathF.Log(0.15f)];
        Dictionary<int, double> d = Distribution(logits, new SamplingOptions { TopP = 0.7f });
        AssertSameDistribution(new() { [2] = 0.5 / 0.8, [0] = 0.3 / 0.8 }, d);
        d = Distribution(logits, new SamplingOptions { TopP = 0.4f });
        AssertSameDistribution(new() { [2] = 1.0 }, d);
        d = Distribution(logits, new SamplingOptions { TopP = 0.9f });
        AssertSameDistribution(new() { [2] = 0.5 / 0.95, [0] = 0.3 / 0.95, [3] = 0.15 / 0.95 }, d);

        var sampler = new Sampler(logits.Length, new SamplingOptions { TopP = 0.7f, Seed = 3 });
        var seen = new HashSet<int>();
        for (int i = 0; i < 2000; i++) seen.Add(sampler.Sample(logits));
        Assert.That(seen.Order(), Is.EqualTo(new[] { 0, 2 }));
    }

    [TestCase(0, 0.9f, 1.0f)]      // nucleus over the whole vocabulary, small nucleus
    [TestCase(0, 0.999f, 0.05f)]   // nearly flat: the nucleus needs several growth steps of the sorted prefix
    [TestCase(40, 1f, 1.0f)]       // top-k only
    [TestCase(40, 0.6f, 0.8f)]     // top-k, then top-p within it
    [TestCase(5000, 0.5f, 1.3f)]   // top-k larger than the vocabulary
    public void MatchesFloat64Reference(int topK, float topP, float temperature)
    {
        float[] logits = RandomLogits(3000, 11, scale: 4f);
        var options = new SamplingOptions { TopK = topK, TopP = topP, Temperature = temperature };
        AssertSameDistribution(Reference(logits, options), Distribution(logits, options), 2e-5);
    }

    [Test]
    public void RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOnce()
    {
        float[] logits = [2f, -2f, 1f, 0.5f, 0f];
        // Token 1 appears twice: penalized once. Token 4 has logit 0: unchanged either way.
        float[] penalized = [2f / 2, -2f * 2, 1f, 0.5f, 0f];
        int[] previous = [0, 1, 1, 4];
        var options = new SamplingOptions { RepetitionPenalty = 2f, RepetitionWindow = 0 };
        double z = penalized.Sum(l => Math.Exp(l));
        var expected = Enumerable.Range(0, logits.Length).ToDictionary(i => i, i => Math.Exp(penalized[i]) / z);
        AssertSameDistribution(expected, Distribution(logits, options, previous));
        Assert.That(logits, Is.EqualTo(new[] { 2f, -2f, 1f, 0.5f, 0f }), "the caller's logits are not modified");

        // Only the last RepetitionWindow tokens count: [1, 4] here, so token 0 keeps its logit.
        float[] windowed = [2f, -4f, 1f, 0.5f, 0f];
        z = windowed.Sum(l => Math.Exp(l));
        expected = Enumerable.Range(0, logits.Length).ToDictionary(i => i, i => Math.Exp(windowed[i]) / z);
        AssertSameDistribution(expected, Distribution(logits, options with { RepetitionWindow = 2 }, previous));

        // Greedy sees the penalty too: with penalty 4, token 0 drops from 2 to 0.5, below token 2's 1.
        var greedy = new Sampler(logits.Length, SamplingOptions.Greedy with { RepetitionPenalty = 4f });
        Assert.That(greedy.Sample(logits, [0]), Is.EqualTo(2));
        Assert.That(greedy.Sample(logits, []), Is.EqualTo(0));
    }

    [Test]
    public void SamplingAllocatesNothingPerToken()
    {
        float[] logits = RandomLogits(20000, 5);
        int[] previous = Enumerable.Range(0, 100).ToArray();
        foreach (SamplingOptions o in new[]
        {
            SamplingOptions.Recommended with { Seed = 1 },
            new SamplingOptions { TopP = 0.9f, Seed = 1, RepetitionPenalty = 1.1f },
            new SamplingOptions { Seed = 1 },
            SamplingOptions.Greedy with { RepetitionPenalty = 1.2f },
        })
        {
            var sampler = new Sampler(logits.Length, o);
            sampler.Sample(logits, previous);
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 20; i++) sampler.Sample(logits, previous);
            Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero, o.ToString());
        }
    }

    [Test]
    public void SelectionAndSortHandleTiesAndSortedInputs()
    {
        float[] flat = new float[1000];
        var sampler = new Sampler(flat.Length, new SamplingOptions { TopK = 10 });
        var ids = new int[flat.Length];
        var p = new float[flat.Length];
        int n = sampler.GetDistribution(flat, [], ids, p);
        Assert.That(ids[..n], Is.EqualTo(Enumerable.Range(0, 10)), "equal logits: lowest ids first");
        float[] ascending = Enumerable.Range(0, 1000).Select(i => (float)i).ToArray();
        n = new Sampler(ascending.Length, new SamplingOptions { TopK = 7 }).GetDistribution(ascending, [], ids, p);
        Assert.That(ids[..n], Is.EqualTo(Enumerable.Range(993, 7).Reverse()));
    }

    [Test]
    public void InvalidOptionsAreRejected()
    {
        Assert.Throws<ArgumentException>(() => new Sampler(10, new SamplingOptions { Temperature = -1 }));
        Assert.Throws<ArgumentException>(() => new Sampler(10, new SamplingOptions { TopP = 0 }));
        Assert.Throws<ArgumentException>(() => new Sampler(10, new SamplingOptions { TopK = -2 }));
        Assert.Throws<ArgumentException>(() => new Sampler(10, new SamplingOptions { RepetitionPenalty = 0 }));
        Assert.Throws<ArgumentException>(() => new Sampler(0));
        Assert.Throws<ArgumentException>(() => new Sampler(10).Sample(new float[9]));
    }
}

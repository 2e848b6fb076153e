using System.Runtime.InteropServices;
using Arwkv.Training.Layers;

namespace Arwkv.Tests.Training;

public class TimeMixTests
{
    private const int B = 2, T = 18;

    internal static double[] ArrayOf(Memory<double> m)
    {
        Assert.That(MemoryMarshal.TryGetArray<double>(m, out var seg) && seg.Offset == 0 && seg.Count == seg.Array!.Length, "whole-array memory");
        return seg.Array!;
    }

    internal static TimeMixWeights<double> RandomWeights(TimeMixShape shape, Random rng)
    {
        var p = TimeMixWeights<double>.Allocate(shape);
        foreach (var (name, data) in p.Named())
        {
            double[] a = ArrayOf(data);
            (double lo, double hi) = name switch
            {
                "x_r" or "x_w" or "x_k" or "x_v" or "x_a" or "x_g" or "k_a" or "k_k" => (0.0, 1.0),
                _ when name.EndsWith(".weight") => (-0.6, 0.6),
                _ => (-1.0, 1.0),
            };
            for (int i = 0; i < a.Length; i++) a[i] = lo + (hi - lo) * rng.NextDouble();
        }
        return p;
    }

    [TestCase(true, true, false, TestName = "FirstLayerWithGate")]
    [TestCase(false, true, false, TestName = "FirstLayerNoGate")]
    [TestCase(true, false, false, TestName = "LaterLayerWithGate")]
    [TestCase(true, false, true, TestName = "LaterLayerWithGateAndPadding")]
    [TestCase(false, true, true, TestName = "FirstLayerNoGateAndPadding")]
    public void BackwardMatchesFiniteDifferences(bool gate, bool firstLayer, bool padded)
    {
        var shape = new TimeMixShape(Channels: 8, HeadSize: 4, DecayRank: 3, IclrRank: 3, ValueRank: 2, GateRank: 5, HasGate: gate);
        int n = B * T, c = shape.Channels;
        var rng = new Random(11);
        TimeMixWeights<double> p = RandomWeights(shape, rng);
        double[] x = GradCheck.Random(rng, n * c, -1.5, 1.5), vFirst = GradCheck.Random(rng, n * c, -1, 1);
        double[] outWeights = GradCheck.Random(rng, n * c, -1, 1), vWeights = GradCheck.Random(rng, n * c, -1, 1);
        byte[] mask = Enumerable.Repeat((byte)1, n).ToArray();
        if (padded)
        {
            mask[0] = 0; mask[3] = 0; mask[4] = 0; mask[16] = 0;      // left, middle and across the 16-step checkpoint
            for (int t = 12; t < T; t++) mask[T + t] = 0;           // right padding
        }
        byte[] m = padded ? mask : [];
        // Later layers read v_first only at real positions (padded ones get no gradient), so neither does this loss.
        for (int row = 0; row < n; row++)
            if (mask[row] == 0) Array.Clear(vWeights, row * c, c);
        var act = new TimeMixActivations<double>(shape, B, T);

        // Loss = sum(out * G1) + (layer 0) sum(v * G2): layer 0's v is v_first for later layers.
        double Loss()
        {
            TimeMix.Forward<double>(act, p, x, vFirst, m, B, T, firstLayer);
            double loss = GradCheck.Dot(act.Out.AsSpan(0, n * c), outWeights);
            if (firstLayer) loss += GradCheck.Dot(act.V.AsSpan(0, n * c), vWeights);
            return loss;
        }

        Loss();
        var grads = TimeMixWeights<double>.Allocate(shape);
        double[] dx = new double[n * c], dvFirst = new double[n * c];
        TimeMix.Backward<double>(grads, dx, firstLayer ? Span<double>.Empty : dvFirst, new TimeMixScratch<double>(shape, B, T),
            outWeights, firstLayer ? vWeights : ReadOnlySpan<double>.Empty, act, p, x, vFirst, m, B, T, firstLayer);

        var tensors = p.Named().Zip(grads.Named(), (a, g) => (a.Name, ArrayOf(a.Data), ArrayOf(g.Data))).ToList();
        tensors.Add(("x", x, dx));
        if (!firstLayer) tensors.Add(("v_first", vFirst, dvFirst));
        double worst = GradCheck.Check(Loss, tensors, maxPerTensor: 24);
        TestContext.Out.WriteLine($"TimeMix worst relative error {worst:E2}");

        if (padded)
            for (int row = 0; row < n; row++)
                if (mask[row] == 0)
                    for (int j = 0; j < c; j++)
                    {
                        Assert.That(dx[row * c + j], Is.Zero, $"dx at padded row {row}");
                        Assert.That(act.Out[row * c + j], Is.Zero, $"out at padded row {row}");
                    }
    }

    [Test]
    public void PaddingDoesNotChangeRealTokens()
    {
        // A sequence with padding inserted must give the same outputs at its real tokens as the unpadded sequence.
        var shape = new TimeMixShape(8, 4, 3, 3, 2, 5, true);
        var rng = new Random(3);
        TimeMixWeights<double> p = RandomWeights(shape, rng);
        int c = shape.Channels, real = 10;
        double[] xs = GradCheck.Random(rng, real * c, -1, 1), vf = GradCheck.Random(rng, real * c, -1, 1);
        var plain = new TimeMixActivations<double>(shape, 1, real);
        TimeMix.Forward<double>(plain, p, xs, vf, [], 1, real, firstLayer: false);

        int[] placeAt = [1, 2, 5, 6, 7, 8, 10, 11, 12, 15];   // 16 positions, 6 of them padding with junk inputs
        int total = 16;
        double[] xp = GradCheck.Random(rng, total * c, -3, 3), vp = GradCheck.Random(rng, total * c, -3, 3);
        var mask = new byte[total];
        for (int i = 0; i < real; i++)
        {
            mask[placeAt[i]] = 1;
            Array.Copy(xs, i * c, xp, placeAt[i] * c, c);
            Array.Copy(vf, i * c, vp, placeAt[i] * c, c);
        }
        var padded = new TimeMixActivations<double>(shape, 1, total);
        TimeMix.Forward<double>(padded, p, xp, vp, mask, 1, total, firstLayer: false);
        for (int i = 0; i < real; i++)
            for (int j = 0; j < c; j++)
                Assert.That(padded.Out[placeAt[i] * c + j], Is.EqualTo(plain.Out[i * c + j]).Within(1e-12));
    }
}
